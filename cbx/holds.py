"""Which kernels hold a loaded model, across processes, and freeing them from outside.

Why its own module: the GPU is shared by every kernel (each browser tab has one), and
only one of them may put a model on it. Each kernel that loads writes a small record
under `<state dir>/holds/`; a second kernel reads them before claiming the GPU, and
`python -m cbx deload` and `cleanup.py` read them to find kernels that still hold a
model. A record whose process died, or that is not a complete record of ours, is
stale and never blocks anyone.

Standard library at import (psutil and filelock are imported where used), so
cleanup.py can read the records with a bare interpreter.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from . import paths
from .errors import GpuInUse, ModelBusy

EXCLUSIVE_DEVICES_ENV = "CBX_EXCLUSIVE_DEVICES"
HOLD_FIELDS = {"pid": int, "create_time": (int, float), "session": str, "variant": str,
               "device": str, "since": str}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def pid_alive(pid: int, create_time: float | None) -> bool:
    """True when the process that wrote a hold still runs (not a recycled pid).

    Without psutil (cleanup.py on a bare interpreter) the start time cannot be
    compared, so a running process with that pid counts as alive: the safe answer
    when the question is "may I delete its state?"."""
    try:
        import psutil
    except ImportError:
        return _pid_exists(pid)
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1.0:
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _pid_exists(pid: int) -> bool:
    """Whether a process with this pid runs, with the standard library only."""
    if os.name == "nt":
        # never os.kill on Windows: any signal but Ctrl+C/Break terminates the process
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)   # QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and \
                code.value == 259                            # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_process_name: str | None = None      # set by a process that is not a kernel


def name_process(name: str) -> None:
    """Name this process in its hold record, for a process that is not a notebook's
    kernel (the speech server: "cbx server, port 8880")."""
    global _process_name
    _process_name = name


def session_label() -> str:
    """How other tabs, the health panel and `python -m cbx deload` name this process."""
    if _process_name:
        return f"{_process_name} (pid {os.getpid()})"
    notebook = os.environ.get("JPY_SESSION_NAME") or os.environ.get("VOILA_NOTEBOOK_NAME")
    label = f"kernel pid {os.getpid()}"
    return f"{label} ({Path(notebook).name})" if notebook else label


def exclusive_devices() -> set[str]:
    """Device kinds only one kernel may hold a model on (tests add 'cpu' to simulate)."""
    raw = os.environ.get(EXCLUSIVE_DEVICES_ENV, "cuda,mps")
    return {part.strip() for part in raw.split(",") if part.strip()}


def process_create_time() -> float:
    import psutil

    return psutil.Process().create_time()


class ModelHolds:
    """Records, one file per process, of which kernels hold a loaded model.

    They let a second kernel refuse to put a second model on a GPU (the `gpu_in_use`
    error names the holder), and let `python -m cbx deload` find kernels to unload. A
    record whose process died is stale and is removed when read, so a killed kernel
    never blocks anyone.
    """

    def __init__(self, root: Path | None = None):
        self.root = (root or paths.state_dir()) / "holds"

    def _file(self, pid: int) -> Path:
        return self.root / f"{pid}.json"

    def request_file(self, pid: int) -> Path:
        return self.root / f"{pid}.deload-request"

    def result_file(self, pid: int) -> Path:
        return self.root / f"{pid}.deload-result.json"

    def live(self, prune: bool = True) -> list[dict]:
        """All records of living processes. A record that is not one of ours (unreadable,
        not JSON, missing or mistyped fields, no process start time) or whose process
        died is stale and is deleted on the way (unless `prune` is False: a dry run
        changes nothing): it never blocks a load or `deload`."""
        records = []
        if not self.root.is_dir():
            return records
        for path in sorted(self.root.glob("*.json")):
            if path.name.endswith(".deload-result.json"):
                continue
            record = _hold_record(path)
            if record is not None and pid_alive(record["pid"], record["create_time"]):
                records.append(record)
                continue
            if not prune:
                continue
            path.unlink(missing_ok=True)
            if path.stem.isdigit():
                self.request_file(int(path.stem)).unlink(missing_ok=True)
        return records

    def claim(self, record: dict, exclusive_devices: set[str]) -> None:
        """Write this process's record; refuse if another live process holds the device.

        The check and the write happen under one OS file lock (`filelock`), so two
        kernels that press Load at the same moment cannot both win, and a lock whose
        holder died is released by the OS: no lock file content is ever trusted.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        device_kind = record["device"].split(":")[0]
        with self._lock():
            if device_kind in exclusive_devices:
                for other in self.live():
                    if other["pid"] != record["pid"] and \
                            other["device"].split(":")[0] == device_kind:
                        raise GpuInUse(
                            f"Another session already holds a model on {device_kind.upper()}: "
                            f"{other['session']} loaded {other['variant']} at {other['since']}.",
                            "Unload it in that tab (Unload button or cbx.unload()), close or "
                            "restart that kernel, or run `python -m cbx deload`; or choose "
                            "device 'cpu' here.",
                        )
            write_json_atomic(self._file(record["pid"]), record)

    def release(self, pid: int) -> None:
        self._file(pid).unlink(missing_ok=True)

    @contextlib.contextmanager
    def _lock(self, timeout: float = 30.0):
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.root / ".lock"), timeout=timeout)
        try:
            lock.acquire()
        except Timeout:
            raise ModelBusy(
                f"Another kernel kept the model-hold lock ({lock.lock_file}) for {timeout:g} s.",
                "Another tab is loading or unloading a model right now; wait a moment and "
                "try again.") from None
        try:
            yield
        finally:
            lock.release()


def _hold_record(path: Path) -> dict | None:
    """The hold record in `path`, or None when it is not a complete one of ours."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    for name, kind in HOLD_FIELDS.items():
        value = record.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return None
    if record["pid"] <= 0 or path.stem != str(record["pid"]):
        return None
    return record


def write_json_atomic(path: Path, data) -> None:
    """Write JSON so a reader sees the old file or the whole new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def deload(timeout: float = 15.0, force: bool = False, holds: ModelHolds | None = None) -> list[dict]:
    """Free models held by other processes (kernels), from outside them.

    Each holder is asked to unload through a request file its watcher thread answers;
    a holder that does not answer within `timeout` (hung, or busy in native code) is
    terminated when `force` is set, which frees its memory with the process.
    Files on disk (weights, voices, outputs) are never touched.
    """
    holds = holds or ModelHolds()
    outcomes = []
    for record in holds.live():
        pid = record["pid"]
        if pid == os.getpid():
            continue
        holds.result_file(pid).unlink(missing_ok=True)
        holds.request_file(pid).write_text(now_iso(), encoding="utf-8")
        deadline = time.monotonic() + timeout
        result = None
        while time.monotonic() < deadline:
            if holds.result_file(pid).exists():
                try:
                    result = json.loads(holds.result_file(pid).read_text(encoding="utf-8"))
                except (OSError, ValueError, RecursionError):
                    result = {"error": "the kernel's answer could not be read"}
                holds.result_file(pid).unlink(missing_ok=True)
                break
            if not pid_alive(pid, record.get("create_time")):
                break
            time.sleep(0.2)
        outcome = {"session": record["session"], "pid": pid, "variant": record["variant"],
                   "device": record["device"]}
        if result is not None:
            outcome.update(action="unloaded", report=result)
        elif not pid_alive(pid, record.get("create_time")):
            outcome.update(action="process ended")
        elif force:
            import psutil

            holds.request_file(pid).unlink(missing_ok=True)
            proc = psutil.Process(pid)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except psutil.TimeoutExpired:
                proc.kill()
            holds.release(pid)
            outcome.update(action="terminated")
        else:
            holds.request_file(pid).unlink(missing_ok=True)
            outcome.update(action="no answer",
                           hint="The kernel is busy or hung; run again with --force to stop it.")
        outcomes.append(outcome)
    return outcomes

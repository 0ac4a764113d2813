"""Only one kernel may hold a model on an exclusive device (the 6 GB GPU); a killed
holder must never block. The GPU is simulated by marking 'cpu' exclusive."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from cbx.errors import GpuInUse
from cbx.holds import ModelHolds

HOLDER = textwrap.dedent("""
    import os, sys, time
    from cbx.holds import ModelHolds, process_create_time as _process_create_time
    holds = ModelHolds()
    holds.claim({"pid": os.getpid(), "create_time": _process_create_time(),
                 "session": "kernel pid %d (holder.ipynb)" % os.getpid(),
                 "variant": "original", "device": "cpu", "since": "now"}, {"cpu"})
    print("claimed", flush=True)
    time.sleep(120)
""")


def _record(pid=None, device="cpu"):
    from cbx.holds import process_create_time as _process_create_time

    return {"pid": pid or os.getpid(), "create_time": _process_create_time(),
            "session": "this test", "variant": "original", "device": device, "since": "now"}


@pytest.fixture
def holder(tmp_path):
    env = dict(os.environ, CBX_STATE_DIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE,
                            text=True, cwd=os.getcwd())
    assert proc.stdout.readline().strip() == "claimed"
    yield proc
    proc.kill()
    proc.wait()


def test_second_process_is_refused_and_told_who_holds(holder, tmp_path):
    holds = ModelHolds(tmp_path)
    with pytest.raises(GpuInUse) as info:
        holds.claim(_record(), {"cpu"})
    err = info.value
    assert err.code == "gpu_in_use"
    assert f"kernel pid {holder.pid} (holder.ipynb)" in err.message
    assert "python -m cbx deload" in err.solution
    assert [r["pid"] for r in holds.live()] == [holder.pid]


def test_non_exclusive_device_is_not_blocked(holder, tmp_path):
    holds = ModelHolds(tmp_path)
    holds.claim(_record(), {"cuda"})  # 'cpu' is not exclusive here: both may hold
    assert sorted(r["pid"] for r in holds.live()) == sorted([holder.pid, os.getpid()])


def test_killed_holders_stale_hold_is_cleared(holder, tmp_path):
    holds = ModelHolds(tmp_path)
    holder.kill()
    holder.wait()
    holds.claim(_record(), {"cpu"})
    assert [r["pid"] for r in holds.live()] == [os.getpid()]
    assert not (tmp_path / "holds" / f"{holder.pid}.json").exists()


def test_recycled_pid_does_not_keep_a_hold(tmp_path):
    holds = ModelHolds(tmp_path)
    stale = _record()
    stale["create_time"] -= 3600  # same pid, but a process started an hour earlier
    holds.root.mkdir(parents=True)
    (holds.root / f"{os.getpid()}.json").write_text(__import__("json").dumps(stale))
    assert holds.live() == []


@pytest.mark.parametrize("content", ["", "abc", "1", str(os.getppid())])
def test_a_lock_file_left_behind_never_blocks(tmp_path, content):
    """Issue 15 (6): an empty .lock, or one naming a live but unrelated process, made
    every load fail with a raw TimeoutError. The lock is an OS lock now: what the file
    holds does not matter."""
    holds = ModelHolds(tmp_path)
    holds.root.mkdir(parents=True)
    (holds.root / ".lock").write_text(content)
    started = time.monotonic()
    holds.claim(_record(), {"cpu"})
    assert time.monotonic() - started < 5
    assert [r["pid"] for r in holds.live()] == [os.getpid()]


LOCK_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cbx.holds import ModelHolds
    holds = ModelHolds(Path(sys.argv[1]))
    holds.root.mkdir(parents=True, exist_ok=True)
    with holds._lock():
        print("locked", flush=True)
        time.sleep(120)
""")


def test_a_lock_held_by_a_killed_process_is_released_by_the_os(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    proc.kill()
    proc.wait()
    started = time.monotonic()
    ModelHolds(tmp_path).claim(_record(), {"cpu"})
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("content", [
    "{}", '{"pid":"abc"}', "[1,2]", '{"pid":1}', "null", "Infinity", "not json",
    '{"pid": 1, "create_time": 0, "session": "s", "variant": "original", '
    '"device": "cpu", "since": "now"}',
    '{"pid": true, "create_time": 1.0, "session": "s", "variant": "v", "device": "cpu", '
    '"since": "x"}',
    "[" * 100_000 + "]" * 100_000,
])
def test_corrupt_or_foreign_hold_records_are_stale_and_removed(tmp_path, content):
    """Issue 15 (5): such records crashed `load` and `python -m cbx deload`."""
    from cbx.holds import deload

    holds = ModelHolds(tmp_path)
    holds.root.mkdir(parents=True)
    bad = holds.root / "1.json"
    bad.write_text(content)
    assert deload(timeout=1, holds=holds) == []
    assert not bad.exists()
    bad.write_text(content)
    holds.claim(_record(), {"cpu"})
    assert [r["pid"] for r in holds.live()] == [os.getpid()] and not bad.exists()


def test_deload_command_survives_a_corrupt_record(tmp_path):
    holds = ModelHolds(tmp_path)
    holds.root.mkdir(parents=True)
    (holds.root / "77.json").write_text('{"pid":"abc"}')
    env = dict(os.environ, CBX_STATE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "cbx", "deload"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


CLAIMER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from cbx.errors import GpuInUse
    from cbx.holds import ModelHolds, process_create_time as _process_create_time
    holds = ModelHolds(Path(sys.argv[1]))
    record = {"pid": os.getpid(), "create_time": _process_create_time(), "session": "s",
              "variant": "original", "device": "cuda", "since": "now"}
    start = float(sys.argv[2])
    time.sleep(max(start - time.time(), 0))
    try:
        holds.claim(record, {"cuda"})
        print("won", flush=True)
    except GpuInUse:
        print("refused", flush=True)
    sys.stdin.read()          # keep the process (and its hold) alive until told
""")


def test_two_kernels_claiming_at_once_with_a_stale_lock_only_one_wins(tmp_path):
    """Issue 15 (7): a stale lock and two kernels loading at once let both claim CUDA."""
    holds = ModelHolds(tmp_path)
    holds.root.mkdir(parents=True)
    (holds.root / ".lock").write_text("")
    start = time.time() + 3
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(tmp_path), str(start)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    try:
        answers = sorted(p.stdout.readline().strip() for p in procs)
        assert answers == ["refused", "refused", "won"]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_json_written_atomically_leaves_no_partial_file(tmp_path):
    from cbx.holds import write_json_atomic

    target = tmp_path / "123.deload-result.json"
    write_json_atomic(target, {"released": True})
    write_json_atomic(target, {"released": False})
    assert __import__("json").loads(target.read_text()) == {"released": False}
    assert [p.name for p in tmp_path.iterdir()] == [target.name]

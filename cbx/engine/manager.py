"""The model manager: the one place in a kernel that owns a Chatterbox model.

Why a manager and not a global model: the dashboard generates in a worker thread while
buttons (Unload, Load, Cancel) arrive on the kernel's main thread, a forgotten tab must
give the GPU back by itself, and a second kernel must not load a second copy onto a
6 GB GPU. Everything that touches the loaded model goes through here, under one lock.

Layer 3: imports layers 1-2; torch and chatterbox are imported inside functions.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from . import decode
from .. import envcheck, options, paths, weights
from ..holds import (ModelHolds, exclusive_devices, now_iso, process_create_time, session_label, write_json_atomic)
from ..envsettings import DEFAULT_IDLE_UNLOAD_MINUTES
from ..errors import CUDA_OOM_SOLUTION, ModelBusy, ModelLoadFailed
from ..settings import DTYPES
from ..state import ModelInfo, ModelState
from ..variants import DEFAULT_VARIANT, get_variant

log = logging.getLogger(__name__)

MODEL_LIBRARIES = ("torch", "torchaudio", "chatterbox", "transformers", "librosa",
                   "soundfile", "psutil")


def memory_snapshot() -> dict:
    """Process RSS and, when CUDA is in use, allocated/reserved VRAM, in MiB."""
    import psutil

    figures = {"rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1)}
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        figures["cuda_allocated_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
        figures["cuda_reserved_mb"] = round(torch.cuda.memory_reserved() / 2**20, 1)
    return figures


@dataclass
class LoadedModel:
    """The upstream model object plus what the page and status report show about it."""

    tts: object                   # chatterbox's ChatterboxTTS / Turbo / Multilingual
    variant: str
    device: str
    dtype: str
    loaded_at: str
    load_seconds: float
    builtin_conds: object | None  # conds.pt as loaded, kept to restore the built-in voice
    conds_cache: dict = field(default_factory=dict)   # (voice sha, variant) -> Conditionals
    voice: str | None = None
    watermark_off: str | None = None   # why Perth's watermark is not applied (None: it is)


@dataclass
class UnloadReport:
    before: dict
    after: dict
    variant: str | None
    released: bool           # no model module is still alive (checked with weak references)
    alive_modules: list[str]
    reason: str = "requested"

    def freed(self) -> dict:
        return {k: round(self.before[k] - self.after.get(k, 0.0), 1)
                for k in self.before if k in self.after}

    def summary(self) -> str:
        if self.variant is None:
            return "No model was loaded; nothing to free."
        parts = []
        for key, label in (("cuda_allocated_mb", "VRAM allocated"),
                           ("cuda_reserved_mb", "VRAM reserved"), ("rss_mb", "process RAM")):
            if key in self.before and key in self.after:
                parts.append(f"{label} {self.before[key]:.0f} -> {self.after[key]:.0f} MiB")
        verdict = "all model memory released" if self.released else \
            f"still alive: {', '.join(self.alive_modules)} (restart the kernel to free them)"
        return f"Unloaded {self.variant} ({self.reason}): " + "; ".join(parts) + f"; {verdict}."

    def to_dict(self) -> dict:
        return {"variant": self.variant, "before": self.before, "after": self.after,
                "freed": self.freed(), "released": self.released,
                "alive_modules": self.alive_modules, "reason": self.reason}


class ModelManager:
    """Owns at most one loaded model per kernel; every public method is thread-safe.

    Locks, in the order they are taken (never the other way round):

    1. `_use_lock` - who uses the model: a generation, or a load / unload that replaces
       or frees it. Held for a whole generation; load and unload take it too, so the
       model is never freed or swapped under a running generation.
    2. `_lock` - the fields below (`_model`, `_state`, `_cancel_current`, the watcher).
       Held only briefly; never held while waiting for `_use_lock`.
    """

    def __init__(self, holds: ModelHolds | None = None):
        self._use_lock = threading.Lock()          # 1: see the class docstring
        self._lock = threading.RLock()              # 2
        self._model: LoadedModel | None = None
        self._state = ModelState.NOT_LOADED
        self._cancel_current = None        # CancelToken of the running generation
        self._listeners: list = []
        self._holds = holds
        self._last_used = time.monotonic()
        self._watcher: threading.Thread | None = None
        self.idle_minutes = DEFAULT_IDLE_UNLOAD_MINUTES   # the dashboard sets it from idle_unload_minutes()
        self.last_unload: UnloadReport | None = None

    # ----------------------------------------------------------------- state
    @property
    def holds(self) -> ModelHolds:
        # Resolved lazily so CBX_STATE_DIR set after import (tests, notebooks) applies.
        return self._holds or ModelHolds()

    @property
    def state(self) -> ModelState:
        return self._state

    @property
    def loaded(self) -> LoadedModel | None:
        return self._model

    def _set_state(self, state: ModelState) -> None:
        self._state = state
        for callback in list(self._listeners):
            callback(self.describe())

    def add_listener(self, callback) -> None:
        """Call `callback(describe())` (from any thread) whenever the state changes."""
        self._listeners.append(callback)

    def remove_listener(self, callback) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def describe(self) -> ModelInfo:
        with self._lock:       # one consistent look at model and state
            model = self._model
            loaded = {} if model is None else dict(
                variant=model.variant, device=model.device, dtype=model.dtype,
                loaded_at=model.loaded_at, load_seconds=model.load_seconds,
                voice=model.voice,
                watermark="off: " + model.watermark_off if model.watermark_off else "on")
            return ModelInfo(state=self._state, idle_unload_minutes=self.idle_minutes,
                             last_unload=self.last_unload.summary() if self.last_unload
                             else None, token_loop=decode.loop_status(), **loaded)

    def touch(self) -> None:
        """Mark the model as used now (the idle auto-unload counts from here)."""
        self._last_used = time.monotonic()

    # ------------------------------------------------------------------ load
    def load(self, variant: str = DEFAULT_VARIANT, device: str = "auto",
             dtype: str = "float32", model_dir=None) -> ModelInfo:
        """Load `variant` from the local model cache; a no-op when it is already loaded.

        Weights are only read from disk (`model_files_missing` names what to fetch);
        switching variant, device or dtype unloads the previous model first.
        """
        spec = get_variant(variant)
        options.choice("dtype", dtype, DTYPES)
        envcheck.require_libraries(MODEL_LIBRARIES)
        resolved = envcheck.resolve_device(device)
        envcheck.check_precision(resolved, dtype)
        with self._lock:
            if self._is_loaded(variant, resolved, dtype):
                return self.describe()
        if not self._use_lock.acquire(blocking=False):
            raise self._busy("A generation is running in this session, so the model "
                             "cannot be loaded or switched now.",
                             "Wait for it to finish or press Cancel, then try again.")
        try:
            with self._lock:
                if self._is_loaded(variant, resolved, dtype):
                    return self.describe()
                if self._model is not None:
                    self._free_model(f"switching to {variant}")
                return self._load_locked(spec, variant, resolved, dtype, model_dir)
        finally:
            self._use_lock.release()

    def _is_loaded(self, variant: str, device: str, dtype: str) -> bool:
        current = self._model
        if current is not None and (current.variant, current.device, current.dtype) == \
                (variant, device, dtype):
            self.touch()
            return True
        return False

    def _load_locked(self, spec, variant: str, resolved: str, dtype: str,
                     model_dir) -> ModelInfo:
        """Claim the device and load (both locks are held)."""
        folder = weights.require_weights(variant, model_dir)
        record = {"pid": os.getpid(), "create_time": process_create_time(),
                  "session": session_label(), "variant": variant, "device": resolved,
                  "since": now_iso(), "state_dir": str(paths.state_dir())}
        self.holds.claim(record, exclusive_devices())
        self._set_state(ModelState.LOADING)
        started = time.perf_counter()
        try:
            tts = _load_upstream(spec, folder, resolved, dtype)
        except BaseException as exc:
            self.holds.release(os.getpid())
            self._set_state(ModelState.NOT_LOADED)
            free_cuda_cache()
            if is_cuda_oom(exc):
                raise ModelLoadFailed(f"Out of GPU memory while loading {variant}.",
                                      CUDA_OOM_SOLUTION) from exc
            raise ModelLoadFailed.from_exception(
                exc, f"Loading {variant} from {folder} failed. If the files are damaged, "
                     f"run `python setup_env.py --models {variant}` again.") from exc
        self._model = LoadedModel(
            tts=tts, variant=variant, device=resolved, dtype=dtype, loaded_at=now_iso(),
            load_seconds=round(time.perf_counter() - started, 2),
            builtin_conds=getattr(tts, "conds", None),
            watermark_off=getattr(tts, "cbx_watermark_off", None))
        self.touch()
        self._set_state(ModelState.READY)
        self.ensure_watcher()
        return self.describe()

    # ---------------------------------------------------------------- unload
    def unload(self, reason: str = "requested", wait: float = 60.0) -> UnloadReport:
        """Free the model: cancel a running generation, drop every reference, collect
        garbage, empty the CUDA cache, and report memory before/after.

        `released` is checked with weak references to the model's modules, so a leak
        shows up in the report instead of silently keeping VRAM.
        """
        token = self._cancel_current
        if token is not None:
            token.cancel()
        if not self._use_lock.acquire(timeout=wait):
            # Freeing the model now would pull it from under the generation's feet.
            raise ModelBusy(f"A generation still runs {wait:g} s after it was asked to "
                            "stop, so the model was not unloaded.",
                            "Wait for the current chunk to finish and press Unload again; "
                            "or end the session (restart the kernel), which always frees "
                            "the memory.")
        try:
            with self._lock:
                return self._free_model(reason)
        finally:
            self._use_lock.release()

    def _free_model(self, reason: str) -> UnloadReport:
        """Drop the model and verify its release (both locks are held)."""
        before = memory_snapshot()
        model, self._model = self._model, None
        if model is None:
            report = UnloadReport(before, before, None, True, [], reason)
            self.last_unload = report
            return report
        refs = _module_refs(model.tts)
        variant = model.variant
        decode.uninstall(model.tts)       # its cache and CUDA graphs go first
        model.conds_cache.clear()
        del model
        alive = _collect_until_dead(refs)
        free_cuda_cache()
        _return_freed_heap_to_os()
        self.holds.release(os.getpid())
        report = UnloadReport(before, memory_snapshot(), variant, not alive, alive, reason)
        self.last_unload = report
        self._set_state(ModelState.NOT_LOADED)
        return report

    # ------------------------------------------------------------ generation
    @contextlib.contextmanager
    def generation(self, cancel_token):
        """Hold the model for one generation; a second concurrent call fails fast.

        Failing fast (instead of queueing) is what a double-clicked Generate needs: the
        caller gets `model_busy` and the first generation keeps going. A token with a
        `busy_hint` (message, fix) says what that caller is told meanwhile (see _busy).
        """
        if not self._use_lock.acquire(blocking=False):
            raise self._busy("A generation, load or unload is already running in this "
                             "session.",
                             "Wait for it to finish or press Cancel, then try again.")
        try:
            with self._lock:
                model = self._model
                if model is None:
                    raise ModelBusy("The model was unloaded just before the generation "
                                    "started.", "Press Generate again; the model reloads.")
                self._cancel_current = cancel_token
                self._set_state(ModelState.GENERATING)
            self.touch()
            yield model
        finally:
            with self._lock:
                self._cancel_current = None
                self.touch()
                if self._model is not None:
                    self._set_state(ModelState.READY)
            self._use_lock.release()

    def _busy(self, message: str, solution: str) -> ModelBusy:
        """model_busy, in the running generation's own words when it has some: a
        cbx.stream() left open holds the model with nothing on screen to show it, so
        the message names it and how to close it."""
        hint = getattr(self._cancel_current, "busy_hint", None)
        return ModelBusy(*hint) if hint else ModelBusy(message, solution)

    def cancel(self) -> bool:
        """Ask the running generation to stop; True if one was running."""
        token = self._cancel_current
        if token is None:
            return False
        token.cancel()
        return True

    # ----------------------------------------------- idle unload and deload
    def ensure_watcher(self) -> None:
        """Start the background thread that unloads an idle model and answers
        `python -m cbx deload` requests (once per kernel)."""
        with self._lock:
            if self._watcher is not None and self._watcher.is_alive():
                return
            self._watcher = threading.Thread(target=self._watch, name="cbx-model-watcher",
                                             daemon=True)
            self._watcher.start()

    def start_idle_unload(self, minutes: float) -> None:
        """Unload after `minutes` without use (0 disables); a forgotten tab frees the GPU."""
        self.idle_minutes = float(minutes)
        self.ensure_watcher()

    def _watch(self, interval: float = 0.5) -> None:
        while True:   # a daemon thread: it ends with the kernel
            time.sleep(interval)
            try:
                self._watch_once()
            except Exception:   # keep watching: a failed round must not end idle unload
                log.exception("cbx model watcher: unload attempt failed")

    def _watch_once(self) -> None:
        """One round: answer a deload request, or unload a model idle for too long."""
        if self._model is None:
            return
        request = self.holds.request_file(os.getpid())
        if request.exists():
            request.unlink(missing_ok=True)
            try:
                answer = self.unload(reason="deload command").to_dict()
            except ModelBusy as exc:
                answer = {"error": exc.message}
            write_json_atomic(self.holds.result_file(os.getpid()), answer)
            return
        if not self._use_lock.acquire(blocking=False):
            return                      # in use: not idle (and never cancelled from here)
        try:
            with self._lock:
                idle_seconds = time.monotonic() - self._last_used
                if self._model is not None and self.idle_minutes > 0 and \
                        idle_seconds >= self.idle_minutes * 60:
                    self._free_model(f"idle for {self.idle_minutes:g} min")
        finally:
            self._use_lock.release()


def _load_upstream(spec, folder: Path, device: str, dtype: str):
    """Build the upstream model object as chatterbox's `from_local` does, without its
    random initialisation and second copy of the weights (cbx.engine.fastload; it falls back to
    `from_local` itself where it cannot vouch for an identical result)."""
    from . import fastload

    half = dtype in ("float16", "bfloat16")
    with _watermarker_or_none() as watermark:
        tts = fastload.load_tts(spec, folder, device, t3_dtype=dtype if half else None)
    tts.cbx_watermark_off = watermark.get("off")
    if half:
        fastload.cast_half(tts, dtype)
    elif dtype == "int8":
        fastload.quantize_int8(tts.t3.tfmr)
        gc.collect()           # the float32 layers it replaced are in reference cycles
        _return_freed_heap_to_os()
    decode.install(tts)
    return tts


class NoWatermark:
    """Stands in for Perth's watermarker when it cannot be built: audio passes unchanged."""

    def apply_watermark(self, wav, sample_rate=None, **_kwargs):
        return wav


@contextlib.contextmanager
def _watermarker_or_none():
    """While a model is built, make a failing Perth watermarker (upstream issue #198:
    "'NoneType' object is not callable" when perth's implementation cannot be imported)
    fall back to `NoWatermark` instead of failing the load. The dict yielded gets
    "off": the reason, when that happened; the caller reports it."""
    import perth

    real = getattr(perth, "PerthImplicitWatermarker", None)
    outcome: dict = {}

    def build(*args, **kwargs):
        try:
            if real is None:
                raise ImportError("perth's PerthImplicitWatermarker could not be imported")
            return real(*args, **kwargs)
        except Exception as exc:   # noqa: BLE001 - any failure means "no watermark"
            outcome["off"] = f"{type(exc).__name__}: {exc}"
            log.warning("Perth watermarker unavailable (%s); audio is not watermarked.", exc)
            return NoWatermark()

    perth.PerthImplicitWatermarker = build
    try:
        yield outcome
    finally:
        perth.PerthImplicitWatermarker = real


def _module_refs(tts) -> dict:
    refs = {}
    for name in ("t3", "s3gen", "ve"):
        module = getattr(tts, name, None)
        if module is not None:
            refs[name] = weakref.ref(module)
    return refs


def _collect_until_dead(refs: dict, attempts: int = 40) -> list[str]:
    """Collect garbage until the model's modules are gone; return those still alive.

    A generation thread that was just cancelled may need a moment to unwind the frames
    that reference the model, so a few short retries separate that from a real leak.
    """
    for attempt in range(attempts):
        gc.collect()
        alive = [name for name, ref in refs.items() if ref() is not None]
        if not alive:
            return alive
        time.sleep(0.05)
    return alive


def _return_freed_heap_to_os() -> None:
    """glibc keeps freed heap pages mapped (≈1 GB after a model); hand them back so the
    RAM figure after unload is what other programs can really use. Linux/glibc only."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return  # not glibc (e.g. musl): nothing to trim


def free_cuda_cache() -> None:
    """Give cached CUDA blocks back to the driver (no-op without torch or CUDA)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_cuda_oom(exc: BaseException) -> bool:
    """True for CUDA out-of-memory, whichever way torch reported it."""
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(exc, oom_type)) or \
        "CUDA out of memory" in str(exc)


_MANAGER: ModelManager | None = None
_MANAGER_LOCK = threading.Lock()


def get_manager() -> ModelManager:
    """The kernel's one model manager."""
    global _MANAGER
    with _MANAGER_LOCK:
        if _MANAGER is None:
            _MANAGER = ModelManager()
        return _MANAGER

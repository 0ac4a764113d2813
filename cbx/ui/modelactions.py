"""The Model and Health cards' actions: load, unload, end the session, and the health
check (libraries, weight files, device memory) with the problems it finds.

Why apart: the model's life is its own story (the kernel's manager tells it from any
thread, an idle model unloads itself), and every other card only reads its outcome
from the session.
"""
from __future__ import annotations

import threading
from typing import Callable

from ..errors import (CbxError, GenerationFailed, HealthCheckFailed, ModelLoadFailed,
                      UnexpectedError)
from ..state import ModelInfo, ModelState
from ..variants import VARIANTS
from .session import LOADING, NOT_BUSY, UNLOADING, Session


class ModelActions:
    """Load, unload and end the session; refresh the health report."""

    def __init__(self, session: Session, backend, *,
                 exit_process: Callable[[], None] | None = None):
        self.session = session
        self.backend = backend
        self._exit_process = exit_process

    def connect(self, idle_unload_minutes: float | None) -> None:
        """Listen to the kernel's model manager and start the idle auto-unload."""
        s = self.session
        try:
            self.backend.add_model_listener(self._on_model_change)
            s.model = self.backend.describe_model()
            if idle_unload_minutes is not None:
                self.backend.start_idle_unload(idle_unload_minutes)
                s.model = self.backend.describe_model()
        except CbxError as exc:
            s.health_error = exc
        except Exception as exc:     # e.g. a broken install: explain it on the page
            s.health_error = HealthCheckFailed.from_exception(
                exc, "The model manager could not start. Run `python setup_env.py`, then "
                     "reload the page.")

    def _on_model_change(self, info: ModelInfo) -> None:
        """Called by the manager from any thread; it may hold its lock, so only copy."""
        s = self.session
        if isinstance(info, ModelInfo):
            s.model = info
            if info.state is ModelState.LOADING:
                s.model_note = ""        # the previous unload's figures no longer apply
            elif info.state is ModelState.NOT_LOADED and info.last_unload:
                s.model_note = info.last_unload
        s.emit("model")

    # ---------------------------------------------------------------------- health
    def refresh_health(self, emit: bool = True) -> None:
        """Re-read libraries, weight files, device memory and the model's state."""
        s = self.session
        try:
            s.model = self.backend.describe_model()
        except CbxError as exc:
            s.health_error = exc
        try:
            s.health = self.backend.status(model_state=s.model.to_dict(), device=s.device)
            s.health_error = None
        except CbxError as exc:
            s.health_error = exc
        except Exception as exc:     # the health panel must explain, never crash the page
            s.health_error = HealthCheckFailed.from_exception(
                exc, "The health check failed. Run `python -m cbx status` in a terminal for "
                     "details.")
        if emit:
            s.emit("health", "model")

    def problems(self) -> list[CbxError]:
        """Problems that stop the selected variant from working (shown above everything)."""
        s = self.session
        found: list[CbxError] = []
        if s.health_error is not None:
            found.append(s.health_error)
        report = s.health
        if report is None:
            return found
        for problem in report.problems():
            if problem.code == "model_files_missing":
                continue     # reported per variant below: other variants may be absent
            found.append(problem)
        weights = report.weights.get(s.variant)
        if weights is not None and not weights.complete:
            error = weights.error()
            if error is not None:
                found.append(error)
        return found

    # ------------------------------------------------------------- load, unload
    def load(self) -> bool:
        s = self.session
        label = VARIANTS[s.variant].label
        variant, device, dtype = s.variant, s.device, s.dtype

        def work() -> None:
            s.status_line = f"Loading {label} on {device} ({dtype})..."
            s.emit("status")
            try:
                s.model = self.backend.load(variant, device, dtype)
            except BaseException as exc:   # every failure reaches the page
                s.fail(exc, ModelLoadFailed)
                return
            seconds = s.model.load_seconds
            took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
            voice = s.voice_info
            if voice is not None:    # a saved voice: ready before the first click
                s.status_line = f"{label} is loaded; preparing voice '{voice.name}'..."
                s.emit("status")
                try:
                    self.backend.prepare_voice(
                        voice, exaggeration=s.settings.get("exaggeration", 0.5))
                except BaseException as exc:
                    s.fail(exc, GenerationFailed)
                    return
            s.status_line = f"{label} is loaded on {s.model.device or device}{took}."

        return s.start(LOADING, work)

    def unload(self) -> bool:
        s = self.session

        def work() -> None:
            s.live.stop()      # Unload means quiet: nothing buffered keeps playing
            s.status_line = "Unloading the model..."
            s.emit("status")
            try:
                report = self.backend.unload()
            except BaseException as exc:
                s.fail(exc, UnexpectedError)
                return
            s.model_note = report.summary()
            s.status_line = "Model unloaded. " + s.model_note

        return s.start(UNLOADING, work)

    def end_session(self) -> bool:
        """Unload, then stop this kernel process: the complete deload. The page must be
        reloaded afterwards, which starts a fresh kernel."""
        s = self.session
        if s.busy is not NOT_BUSY or self._exit_process is None:
            return False
        s.session_ended = True
        s.live.stop()
        try:
            s.model_note = self.backend.unload().summary()
        except CbxError as exc:
            s.model_note = f"Unload before exit failed ({exc.message}); exiting anyway."
        s.status_line = ("Session ended: this kernel has stopped and given all its memory "
                         "back. Reload the page to start a fresh session.")
        s.emit("session", "busy", "status")
        timer = threading.Timer(1.0, self._exit_process)
        timer.daemon = True
        timer.start()
        return True


__all__ = ["ModelActions"]

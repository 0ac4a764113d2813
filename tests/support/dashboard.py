"""Driving the dashboard in tests without a browser: a controller or a whole page on
a backend, a clock that fires timers when the test says so, and small waits."""
from __future__ import annotations

import time
from pathlib import Path

from cbx.dev import clips
from cbx.ui.controller import DashboardController


class FakeClock:
    """A schedule (the text count's timer) that runs nothing until the test says so."""

    class Handle:
        def __init__(self, delay, callback):
            self.delay, self.callback, self.cancelled = delay, callback, False

        def cancel(self):
            self.cancelled = True

    def __init__(self):
        self.handles: list[FakeClock.Handle] = []

    def __call__(self, delay, callback):
        handle = FakeClock.Handle(delay, callback)
        self.handles.append(handle)
        return handle

    @property
    def pending(self) -> list[Handle]:
        return [h for h in self.handles if not h.cancelled and h.callback is not None]

    def fire(self) -> float:
        """Let the oldest pending timer elapse; returns its delay."""
        handle = self.pending[0]
        callback, handle.callback = handle.callback, None
        callback()
        return handle.delay


def make_controller(backend, **kwargs) -> tuple[DashboardController, list[str]]:
    events: list[str] = []
    kwargs.setdefault("schedule", FakeClock())
    controller = DashboardController(backend, idle_unload_minutes=15, **kwargs)
    controller.observe(events.append)
    return controller, events


def clip_bytes(tmp_path: Path, seconds: float = 6.0) -> bytes:
    return clips.speech_clip(tmp_path / "ref.wav", seconds).read_bytes()


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def make(backend, **kwargs):
    """The whole page (ipywidgets) on `backend`, timers on a FakeClock."""
    from cbx.ui.view import Dashboard

    kwargs.setdefault("schedule", FakeClock())     # the text count runs when told
    return Dashboard(DashboardController(backend, idle_unload_minutes=15, **kwargs))

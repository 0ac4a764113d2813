"""Live playback: finished chunks play one after another while the rest is generated.

Why from the kernel: the page's "Live" player is an ipywidgets.Audio with autoplay, so
each new value starts playing by itself in the browser, with no JavaScript (Voila does
not run scripts from widget HTML). The kernel knows every chunk's duration, so it puts
the next chunk into the player once the previous one has had time to finish (its
duration plus a short gap), or as soon as it arrives when playback has caught up with
generation. Pure Python with an injectable timer, so tests step it without waiting.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol

# Pause between two chunks. It matches the pause the joined result has between chunks
# (synth.PAUSE_SECONDS) plus a little for the browser to receive and start each chunk,
# so a chunk is never cut off by the next one.
LIVE_GAP_SECONDS = 0.4

# Live states
NOT_STARTED = "not_started"  # no generation yet: the player is hidden
WAITING = "waiting"      # playback has caught up: the next chunk plays when it arrives
PLAYING = "playing"      # a chunk is in the player and has not had time to finish
DONE = "done"            # generation is over and every finished chunk has played
STOPPED = "stopped"      # cancelled, unloaded or closed: the player is silent


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], TimerHandle]


def thread_timer(delay: float, callback: Callable[[], None],
                 name: str = "cbx-live-playback") -> threading.Timer:
    """The default schedule: a daemon timer thread (it never keeps a kernel alive)."""
    timer = threading.Timer(delay, callback)
    timer.name = name
    timer.daemon = True
    timer.start()
    return timer


@dataclass(frozen=True)
class LiveChunk:
    index: int          # 0-based chunk index
    total: int          # chunks in this generation
    data: bytes         # WAV bytes
    seconds: float      # duration of the audio


@dataclass(frozen=True)
class LiveState:
    """One consistent look at the playback, for the view."""

    state: str
    chunk: LiveChunk | None   # what the player holds (None: silence)
    serial: int               # changes whenever the player must get new audio
    played: tuple[int, ...]   # indices put into the player, in order
    queued: int               # finished chunks waiting for the one playing to end
    total: int
    finished: bool            # the generation has ended (no more chunks will come)


class LivePlayback:
    """Queues finished chunks and hands them to the player one at a time."""

    def __init__(self, on_change: Callable[[], None], schedule: Schedule | None = None,
                 gap: float = LIVE_GAP_SECONDS):
        self._on_change = on_change
        self._schedule = schedule or thread_timer
        self.gap = gap
        self._lock = threading.Lock()
        self._queue: list[LiveChunk] = []
        self._current: LiveChunk | None = None
        self._state = NOT_STARTED
        self._serial = 0
        self._epoch = 0            # bumps on begin/stop so stale timers do nothing
        self._timer: TimerHandle | None = None
        self._played: list[int] = []
        self._total = 0
        self._finished = False

    # ------------------------------------------------------------------ queries
    def snapshot(self) -> LiveState:
        with self._lock:
            return LiveState(self._state, self._current, self._serial, tuple(self._played),
                             len(self._queue), self._total, self._finished)

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    # ------------------------------------------------------------------ actions
    def begin(self, total: int = 0) -> None:
        """A new generation starts: silence the old one and wait for its first chunk."""
        self._reset(WAITING, total)

    def add(self, index: int, total: int, data: bytes, seconds: float) -> None:
        """A chunk has finished: play it now if playback has caught up, else queue it."""
        with self._lock:
            if self._state in (NOT_STARTED, STOPPED, DONE):
                return            # stopped (e.g. cancelled) or not begun: nothing plays
            self._total = total
            self._queue.append(LiveChunk(index, total, data, max(float(seconds), 0.0)))
            if self._state == WAITING:
                self._play_next()
        self._on_change()

    def finish(self) -> None:
        """No more chunks will come; the queued ones still play to the end."""
        with self._lock:
            if self._state in (NOT_STARTED, STOPPED):
                return
            self._finished = True
            if self._state == WAITING and not self._queue:
                self._state = DONE
        self._on_change()

    def stop(self) -> None:
        """Silence the player now and drop what is queued (cancel, unload, close)."""
        self._reset(STOPPED, None)

    # ----------------------------------------------------------------- internals
    def _reset(self, state: str, total: int | None) -> None:
        with self._lock:
            if state == STOPPED and self._state in (NOT_STARTED, STOPPED):
                return
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            self._epoch += 1
            self._serial += 1
            self._queue.clear()
            self._current = None
            self._played = []
            self._finished = False
            self._state = state
            if total is not None:
                self._total = total
        if isinstance(timer, threading.Thread) and timer is not threading.current_thread():
            timer.join(5)         # outside the lock: the timer's callback takes it
        self._on_change()

    def _play_next(self) -> None:
        """Put the next queued chunk into the player (the lock is held)."""
        chunk = self._queue.pop(0)
        self._current = chunk
        self._serial += 1
        self._played.append(chunk.index)
        self._state = PLAYING
        epoch = self._epoch
        self._timer = self._schedule(chunk.seconds + self.gap,
                                     lambda: self._chunk_ended(epoch))

    def _chunk_ended(self, epoch: int) -> None:
        """The chunk in the player has had time to finish: play the next one or wait."""
        with self._lock:
            if epoch != self._epoch or self._state != PLAYING:
                return
            self._timer = None
            if self._queue:
                self._play_next()
            else:
                self._state = DONE if self._finished else WAITING
        self._on_change()


__all__ = ["LivePlayback", "LiveChunk", "LiveState", "LIVE_GAP_SECONDS",
           "NOT_STARTED", "WAITING", "PLAYING", "DONE", "STOPPED", "thread_timer"]

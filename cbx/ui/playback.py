"""The live feed: what the browser's live player is told during a generation.

Why a feed in plain Python: the controller must stay free of widgets (tests drive it
without ipywidgets), yet its worker thread has each AudioBlock the moment speak() makes
it. The feed passes begin / each block / finish / stop, in that order, to the players
connected to it (the view's `player.LivePlayer`, which sends them to the browser), and
drops what arrives after a stop. The browser owns the timeline; nothing here is timed.

Also the small timer helpers: a daemon timer thread (the text count, the project
holder's poll) and `Throttle` (the page's redraws while something runs).
"""
from __future__ import annotations

import functools
import threading
import time
from typing import Callable, Protocol

# Feed states
NOT_STARTED = "not_started"  # no generation yet
STREAMING = "streaming"      # blocks are arriving
FINISHED = "finished"        # the generation ended; the player plays what it has
STOPPED = "stopped"          # cancelled, unloaded or closed: the player is silent


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], TimerHandle]


def thread_timer(delay: float, callback: Callable[[], None],
                 name: str = "cbx-timer") -> threading.Timer:
    """The default schedule: a daemon timer thread (it never keeps a kernel alive)."""
    timer = threading.Timer(delay, callback)
    timer.name = name
    timer.daemon = True
    timer.start()
    return timer


class Throttle:
    """Calls `render` at most once per `interval` seconds; a call inside the interval is
    not lost but folded into one trailing call at its end (which draws the latest
    state, since renders read the controller, not the call's arguments)."""

    def __init__(self, render: Callable[[], None], interval: float,
                 schedule: Schedule | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._render = render
        self._interval = interval
        self._schedule = schedule or functools.partial(thread_timer,
                                                       name="cbx-throttle")
        self._clock = clock
        self._lock = threading.Lock()       # guards _last and _pending
        self._last = float("-inf")
        self._pending: TimerHandle | None = None

    def __call__(self) -> None:
        with self._lock:
            if self._pending is not None:
                return                       # the trailing call will draw this too
            wait = self._last + self._interval - self._clock()
            if wait > 0:
                self._pending = self._schedule(wait, self._trailing)
                return
            self._last = self._clock()
        self._render()

    def flush(self) -> None:
        """Draw now what a pending trailing call would have drawn (the burst is over)."""
        if self.cancel():
            self._render()

    def cancel(self) -> bool:
        """Forget a pending trailing call (the caller draws the final state itself);
        whether there was one."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        return pending is not None

    def _trailing(self) -> None:
        with self._lock:
            if self._pending is None:
                return                       # flushed meanwhile
            self._pending = None
            self._last = self._clock()
        self._render()


class Player(Protocol):
    """What the feed drives (`player.LivePlayer`; tests use a recorder)."""

    def begin(self) -> None: ...
    def add(self, block) -> None: ...
    def finish(self) -> None: ...
    def stop(self) -> None: ...


class LiveFeed:
    """Hands one generation's AudioBlocks to the connected players, in order."""

    def __init__(self):
        # guards the state and the counts, and is held while telling the players so a
        # stop from the page's thread never lands between a block's check and its send
        self._lock = threading.Lock()
        self._players: list[Player] = []
        self.state = NOT_STARTED
        self.blocks = 0           # blocks passed on in this generation
        self.seconds = 0.0        # their audio, in seconds

    def connect(self, player: Player) -> None:
        with self._lock:
            self._players.append(player)

    def begin(self) -> None:
        """A new generation: the player drops what it had and waits for blocks."""
        with self._lock:
            self.state, self.blocks, self.seconds = STREAMING, 0, 0.0
            self._tell("begin")

    def add(self, block) -> None:
        """speak()'s on_block: pass the block on, unless the generation was stopped."""
        with self._lock:
            if self.state != STREAMING:
                return
            self.blocks += 1
            self.seconds += block.duration
            self._tell("add", block)

    def finish(self) -> None:
        """No more blocks: what the player has still plays to the end."""
        self._end(FINISHED, "finish")

    def stop(self) -> None:
        """Silence the player now (Cancel, Unload, closing the page)."""
        self._end(STOPPED, "stop")

    def _end(self, state: str, call: str) -> None:
        with self._lock:
            if self.state != STREAMING and not (state == STOPPED and self.state == FINISHED):
                return
            self.state = state
            self._tell(call)

    def _tell(self, call: str, *args) -> None:
        for player in self._players:
            getattr(player, call)(*args)


__all__ = ["LiveFeed", "Player", "NOT_STARTED", "STREAMING", "FINISHED", "STOPPED",
           "thread_timer", "Schedule", "TimerHandle", "Throttle"]

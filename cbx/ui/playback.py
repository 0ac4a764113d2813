"""The live feed: what the browser's live player is told during a generation.

Why a feed in plain Python: the controller must stay free of widgets (tests drive it
without ipywidgets), yet its worker thread has each AudioBlock the moment speak() makes
it. The feed passes begin / each block / finish / stop, in that order, to the players
connected to it (the view's `player.LivePlayer`, which sends them to the browser), and
drops what arrives after a stop. The browser owns the timeline; nothing here is timed.

Also the small timer helper the page's throttles and the text count use.
"""
from __future__ import annotations

import threading
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
           "thread_timer", "Schedule", "TimerHandle"]

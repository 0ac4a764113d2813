"""The live player: an anywidget that plays AudioBlocks gaplessly with the Web Audio API.

Why in the browser: the kernel cannot see a pause or a slow browser, so a player the
kernel times by each chunk's length drifts and clips. Here each block travels as one
binary buffer (float32 PCM) in a custom message as soon as the kernel has it, and the
browser schedules it right after the previous one's end on the AudioContext's own
clock. A block that arrives after the timeline ran dry starts from now, and the gap is
counted, so nothing is skipped. The browser writes its counters back to the synced
traits below (at most four times a second while playing; no timer runs otherwise).

The JavaScript ships beside this module (player.js), read once at import.
"""
from __future__ import annotations

from pathlib import Path

import anywidget
import traitlets

ESM = (Path(__file__).with_name("player.js")).read_text(encoding="utf-8")

# Player states (written by the browser)
IDLE = "idle"           # no generation yet
PLAYING = "playing"     # the timeline runs (or waits for the next block)
PAUSED = "paused"       # the user paused: blocks still arrive and are scheduled
ENDED = "ended"         # the last block has played
STOPPED = "stopped"     # Cancel, Unload, a new Generate or the page closing


class LivePlayer(anywidget.AnyWidget):
    """`begin()` for each generation, `add(block)` per AudioBlock, then `finish()` (the
    last block plays to its end) or `stop()` (silence now)."""

    _esm = traitlets.Unicode(ESM).tag(sync=True)
    # the browser's own counters, for the page and for tests
    state = traitlets.Unicode(IDLE).tag(sync=True)
    played_s = traitlets.Float(0.0).tag(sync=True)
    buffered_s = traitlets.Float(0.0).tag(sync=True)
    blocks = traitlets.Int(0).tag(sync=True)
    max_gap_ms = traitlets.Float(0.0).tag(sync=True)    # largest gap between blocks
    late_gaps = traitlets.Int(0).tag(sync=True)         # blocks that came after a run-dry
    late_s = traitlets.Float(0.0).tag(sync=True)        # silence those waits added
    first_played_at = traitlets.Float(0.0).tag(sync=True)  # epoch ms, 0 before any sound

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._generation = 0

    def begin(self) -> None:
        """A new generation: whatever still plays stops, counters start from zero."""
        self._generation += 1
        self.send({"kind": "begin", "gen": self._generation})

    def add(self, block) -> None:
        """Send one AudioBlock's samples as a float32 buffer (no base64, no copy of
        the history: the browser keeps only what it has not played)."""
        import numpy as np

        pcm = np.ascontiguousarray(block.wav, dtype="<f4")
        self.send({"kind": "block", "gen": self._generation, "rate": int(block.sample_rate),
                   "chunk": int(block.chunk), "start_s": float(block.start_s),
                   "last": bool(block.last)}, buffers=[pcm.tobytes()])

    def finish(self) -> None:
        """No more blocks will come: the player ends once the last one has played."""
        self.send({"kind": "finish", "gen": self._generation})

    def stop(self) -> None:
        """Stop every source now and close the audio context."""
        self.send({"kind": "stop", "gen": self._generation})


__all__ = ["LivePlayer", "IDLE", "PLAYING", "PAUSED", "ENDED", "STOPPED"]

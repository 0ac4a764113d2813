"""A stand-in for cbx.engine.synth.speak that makes a tone per chunk in microseconds, for
project tests that run in other processes (a writer holding the lock, a killed one).

Deterministic per (text, seed): resumed and uninterrupted runs must match bit for bit.
The tone is voiced (the babble guard sees speech) and as long as the text predicts.
"""
from __future__ import annotations

import time

SR = 24_000


def tone(text: str, seed: int):
    import numpy as np

    from cbx.text import CHARS_PER_SECOND

    seconds = max(0.3, len(text) / CHARS_PER_SECOND)
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * (120 + seed % 97) * t)).astype(np.float32)


def install(delay: float = 0.0, calls: list | None = None, monkeypatch=None):
    """Replace cbx.engine.synth.speak; each call sleeps `delay` s (cancellable) first. In a
    test process pass pytest's `monkeypatch`, so the real speak() is back afterwards;
    a worker process started for one test replaces it for good."""
    from cbx.engine import synth
    from cbx.errors import GenerationCancelled
    from cbx.engine.synth import Result

    def speak(text, voice=None, *, seed, max_chunk_chars, first_chunk_chars, progress,
              cancel, **options):
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if cancel is not None and cancel.cancelled:
                raise GenerationCancelled("Cancelled.", "Press Resume.")
            time.sleep(0.02)
        if calls is not None:
            calls.append((text, seed))
        return Result(wav=tone(text, seed), sample_rate=SR, text=text, voice="v",
                      variant="original", seed=seed, settings=options, chunks=[text],
                      timings={}, device="cpu", dtype="float32")

    if monkeypatch is not None:
        monkeypatch.setattr(synth, "speak", speak)
    else:
        synth.speak = speak
    return speak

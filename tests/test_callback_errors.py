"""A caller's own callback that raises (issue 21, item 6) ends the generation as
`generation_failed` naming that callback, through speak() and stream(): it is not
retried as a chunk without speech nor blamed on the text.

These run the real manager and synth around a stand-in model (`FakeTTS`) whose
generate() calls cbx's decoder seam before each transformer forward, as the real T3
does, so a callback raising inside the token loop takes the real path through
`_generate_chunk`'s error handling. test_generation_faults.py has the same case on the
real random-weight model.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import cbx
from cbx.engine import decode, manager
from cbx.errors import GenerationCancelled, GenerationFailed

TWO_SENTENCES = "The first sentence is here. The second sentence ends it."
TOKENS = 8          # what each fake generate() "samples", like the fixture model


class FakeTTS:
    """Chatterbox's model as synth sees it: 24 kHz, a decoder seam, 0.1 s of silence."""

    sr = 24000
    device = "cpu"

    def __init__(self):
        self.t3 = SimpleNamespace()
        self.t3.cbx_decoder = decode.Decoder(self.t3, fast=False)
        self.calls = 0

    def generate(self, text, **_kwargs):
        self.calls += 1
        for _ in range(1 + TOKENS):            # the prompt, then each token
            self.t3.cbx_decoder.on_forward()
        return torch.zeros(1, 2400)


@pytest.fixture
def fake(monkeypatch):
    """The kernel's manager with FakeTTS loaded as the `original` variant on the CPU."""
    held = manager.ModelManager()
    held._model = manager.LoadedModel(
        tts=FakeTTS(), variant="original", device="cpu", dtype="float32",
        loaded_at="now", load_seconds=0.0, builtin_conds=object())
    held._state = manager.ModelState.READY
    monkeypatch.setattr(manager, "_MANAGER", held)
    return held._model.tts


def boom(*_args):
    raise RuntimeError("boom")


def on_stage(stage):
    def progress(p):
        if p.stage == stage:
            raise RuntimeError("boom")
    return progress


class FailingCancel:
    """A caller's cancel object whose `cancelled` fails on its `fail_at`-th read."""

    def __init__(self, fail_at):
        self.reads, self.fail_at = 0, fail_at

    @property
    def cancelled(self):
        self.reads += 1
        if self.reads >= self.fail_at:
            raise RuntimeError("boom")
        return False


def speak_all(text, **kwargs):
    return cbx.speak(text, seed=1, max_chunk_chars=40, **kwargs)


def stream_all(text, **kwargs):
    generator = cbx.stream(text, seed=1, max_chunk_chars=40, **kwargs)
    try:
        while True:
            next(generator)
    except StopIteration as stop:
        return stop.value


CASES = {
    "progress in the token loop": ("progress", on_stage("tokens"), "progress callback", 1),
    "progress before loading": ("progress", on_stage("loading"), "progress callback", 0),
    "on_chunk": ("on_chunk", boom, "on_chunk callback", 1),
    "on_block": ("on_block", boom, "on_block callback", 1),
    "cancel object": ("cancel", None, "cancel object", 1),
}


@pytest.mark.parametrize("case,run", [
    pytest.param(case, run, id=f"{run.__name__}-{case}")
    for case in CASES for run in (speak_all, stream_all)
    if not (case == "on_block" and run is stream_all)])   # stream() yields blocks itself
def test_a_callback_that_raises_is_named_and_not_retried(case, run, fake):
    argument, function, name, calls = CASES[case]
    if argument == "cancel":
        function = FailingCancel(fail_at=4)     # read in the check, then in chunk 1
    with pytest.raises(GenerationFailed) as info:
        run(TWO_SENTENCES, **{argument: function})
    error = info.value
    assert error.message == f"Your {name} raised RuntimeError: boom"
    assert name in error.solution and "almost no speech" not in error.message
    assert "RuntimeError: boom" in error.traceback, "the traceback is kept for the toggle"
    assert fake.calls == calls, "a callback's error is not retried with other seeds"
    assert manager.get_manager().state == "ready", "the model is free and usable"


def test_the_chunks_before_a_failing_on_chunk_are_kept(fake):
    seen = []

    def on_chunk(index, total, wav, sample_rate):
        seen.append(index)
        if index == 1:
            raise ValueError("disk full")

    with pytest.raises(GenerationFailed) as info:
        speak_all(TWO_SENTENCES, on_chunk=on_chunk)
    assert info.value.message == "Your on_chunk callback raised ValueError: disk full"
    assert seen == [0, 1] and len(info.value.partial.chunks) == 2


def test_a_coded_error_raised_on_purpose_by_a_callback_passes_unchanged(fake):
    def progress(p):
        if p.stage == "tokens":
            raise GenerationCancelled("Stopped by the caller.", "Start again.")

    with pytest.raises(GenerationCancelled, match="Stopped by the caller"):
        speak_all(TWO_SENTENCES, progress=progress)


def test_a_callers_token_still_cancels_and_closing_a_stream_leaves_it_alone(fake):
    token = cbx.CancelToken()
    generator = cbx.stream(TWO_SENTENCES, seed=1, max_chunk_chars=40, cancel=token)
    next(generator)
    generator.close()
    assert not token.cancelled, "closing the stream does not touch the caller's token"
    token.cancel()
    with pytest.raises(GenerationCancelled):
        speak_all(TWO_SENTENCES, cancel=token)

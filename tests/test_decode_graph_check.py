"""The CUDA-graph path checks itself and falls back (cbx/engine/decode.py), tried on the
CPU with the random-weight `original` fixture, loaded once for the module.

A CPU has no CUDA graphs, so the tests ask the decoder for graphs and put their own
capture in `decode.capture_graph` (the seam): one that fails, and a "graph" that reruns
the captured step on replay, either faithfully or with its logits shifted. What must
hold: the speech still comes out (upstream's tokens for the seed: on the CPU in float32
the fast loop makes them, tests/test_decode.py), a note in the Result and a row in
cbx.status() say why, the whole process stays switched, and a graph that matches keeps
graphs on. Most checks call T3 alone (a speak() costs S3Gen too).
"""
from __future__ import annotations

import pytest

import cbx
from cbx.dev import fixture
from cbx.engine import decode
from tests.test_decode import _t3_call

SEED = 7
SPOKEN = "Hello there."

pytestmark = pytest.mark.model


class _Rerun:
    """Stands in for a torch.cuda.CUDAGraph on a CPU: replay() runs the captured step
    again into the same output tensor, as a graph rewrites its static output, plus
    `shift` (a graph that computes something else)."""

    def __init__(self, forward, shift: float):
        self.forward, self.shift = forward, shift
        self.out = forward()

    def replay(self):
        self.out.copy_(self.forward() + self.shift)


def _rerun_capture(shift: float):
    def capture(forward):
        graph = _Rerun(forward, shift)
        return graph, graph.out
    return capture


def _failing(message: str, calls: list):
    def capture(forward):
        calls.append(forward)
        raise RuntimeError(message)
    return capture


@pytest.fixture
def tts(loaded):
    return loaded.loaded.tts


@pytest.fixture(scope="module")
def upstream(model_env):
    """Upstream's own loop's tokens and generator state for SEED."""
    from cbx.engine.manager import get_manager

    cbx.load("original", device="cpu")
    tts = get_manager().loaded.tts
    with decode.upstream_token_loop(tts):
        return _t3_call("original", tts, None, SEED)


@pytest.fixture
def decoder(tts, monkeypatch):
    """A fresh process's fallback state, and the loaded model's decoder asking for CUDA
    graphs although it runs on the CPU (no step kept from an earlier test)."""
    monkeypatch.setattr(decode, "_OFF", {})
    monkeypatch.setattr(decode, "_CHECKED", {})
    decoder = decode.decoder_of(tts)
    monkeypatch.setattr(decoder, "graphs", True)
    decoder.release()
    yield decoder
    decoder.release()


def _assert_upstreams(ours, upstream):
    import torch

    assert torch.equal(ours[0], upstream[0])
    assert torch.equal(ours[1], upstream[1])


def test_a_graph_that_matches_keeps_graphs_on(tts, decoder, upstream, monkeypatch):
    from cbx.engine.manager import get_manager

    monkeypatch.setattr(decode, "capture_graph", _rerun_capture(0.0))
    _assert_upstreams(_t3_call("original", tts, decoder, SEED), upstream)
    assert decoder.last.fast and decoder.last.graphed and decoder.last.fallback is None
    assert decode.fallback() is None and list(decode._CHECKED) == [decode._Step]
    row = get_manager().describe().to_dict()["token_loop"]
    assert row.startswith("CUDA graphs on: the first graph matched the same step run "
                          "eagerly (largest logit difference 0)")


def test_a_graph_that_disagrees_with_the_eager_step_is_dropped(tts, decoder, upstream,
                                                               monkeypatch):
    monkeypatch.setattr(decode, "capture_graph", _rerun_capture(0.5))
    # the eager logits replace the graph's from the checked step on: upstream's tokens
    _assert_upstreams(_t3_call("original", tts, decoder, SEED), upstream)
    assert decoder.last.fast and not decoder.last.graphed and not decode._CHECKED
    assert decoder.last.fallback == decode.fallback()
    assert "CUDA graphs are off in this process" in decode.fallback()
    assert "its self-check failed (the graph's logits differ from the same step run " \
           "eagerly by 0.5, more than 0.001)" in decode.fallback()


def test_a_failed_capture_switches_the_process_to_the_eager_loop(tts, decoder,
                                                                 monkeypatch):
    attempts = []
    monkeypatch.setattr(decode, "capture_graph",
                        _failing("injected capture failure", attempts))
    result = cbx.speak(SPOKEN, seed=SEED)
    assert len(result.wav) == fixture.expected_samples("original")
    assert decoder.last.fast and not decoder.last.graphed
    notes = [note for note in result.notes if "CUDA graphs are off" in note]
    assert notes == [decode.fallback()]
    assert "capturing the step in a graph failed (RuntimeError: injected capture " \
           "failure)" in notes[0]
    report = cbx.status()
    assert report.model["token_loop"] == notes[0] and notes[0] in str(report)
    # the whole process stays off graphs: the next call does not try again, says why
    _t3_call("original", tts, decoder, SEED)
    assert len(attempts) == 1 and decoder.last.fallback == notes[0]


def test_a_failing_fast_loop_redoes_the_call_with_upstreams_loop(tts, decoder, upstream,
                                                                 monkeypatch):
    """The whole chain: the capture fails (eager step), then the eager step fails a few
    tokens in (after random draws), and upstream's loop redoes the call from the random
    state it began with: upstream's tokens, and the generator where upstream leaves it."""
    forward = decode._Step.forward
    calls = []

    def failing_forward(self, embeds, positions):
        calls.append(1)
        if len(calls) == 4:          # the prompt and two tokens went through
            raise RuntimeError("injected loop failure")
        return forward(self, embeds, positions)

    monkeypatch.setattr(decode, "capture_graph", _failing("injected capture failure", []))
    monkeypatch.setattr(decode._Step, "forward", failing_forward)
    _assert_upstreams(_t3_call("original", tts, decoder, SEED), upstream)
    assert not decoder.fast and not decoder.last.fast
    chain = decode.fallback()
    assert decoder.last.fallback == chain
    assert "capturing the step in a graph failed (RuntimeError: injected capture" in chain
    assert "upstream's slower loop makes the speech tokens" in chain
    assert "the loop failed (RuntimeError: injected loop failure)" in chain
    # a speak() after it runs upstream's loop (cbx's not tried again) and says why
    result = cbx.speak(SPOKEN, seed=SEED)
    assert len(result.wav) == fixture.expected_samples("original")
    assert len(calls) == 4 and result.notes.count(chain) == 1
    assert cbx.status().model["token_loop"] == chain


def test_a_cancel_is_not_taken_for_a_loop_failure(tts, decoder, monkeypatch):
    """An exception from the caller's callback (a cancel) ends the call as before and
    switches nothing off."""
    monkeypatch.setattr(decode, "capture_graph", _rerun_capture(0.0))
    calls = []

    class Stop(Exception):
        pass

    def on_forward():
        calls.append(1)
        if len(calls) == 3:          # the prompt and two tokens
            raise Stop

    with decoder.chunk(decode.UPSTREAM_MAX_TOKENS, on_forward), pytest.raises(Stop):
        _t3_call("original", tts, decoder, SEED)
    assert decode.fallback() is None and decoder.fast

"""Token-level streaming (cbx/engine/blocks.py, cbx.stream, speak(on_block=)) on the
random-weight fixtures.

The fixture models stop by themselves after 8 tokens, so the block schedule is scaled
down here (first block after 5 tokens) to put a window inside every chunk; the
never-stopping fixture under a token budget gives a longer chunk with several windows.
This CPU decodes slower than speech plays, where cbx makes only the text's first window
(more would only delay the rest); `every_window` lifts that rule to test the joins.
"""
from __future__ import annotations

import contextlib
import gc
import threading
import time
import weakref

import numpy as np
import pytest

import cbx
from cbx.engine import blocks, decode
from cbx.dev import fixture
from cbx import errors
from cbx.engine.manager import get_manager

pytestmark = pytest.mark.model

THREE_CHUNKS = ("The quick brown fox jumps over the lazy dog. "
                "A second sentence follows the first one. "
                "And a third sentence ends the little story.")


@pytest.fixture
def small_blocks(monkeypatch):
    """A window after 5 tokens (the fixture makes 8 and its stop token)."""
    monkeypatch.setattr(blocks, "FIRST_BLOCK_TOKENS", 5)
    monkeypatch.setattr(blocks, "HOLD_TOKENS", 2)


@pytest.fixture
def every_window(monkeypatch):
    """Windows in every chunk, as on a device that decodes faster than speech plays."""
    monkeypatch.setattr(blocks, "REALTIME_TOKENS_PER_SECOND", 0)


def _joined(collected):
    return np.concatenate([b.wav for b in collected])


def _check_contiguous(collected, sample_rate):
    position = 0
    for block in collected:
        assert block.sample_rate == sample_rate
        assert block.start_s == pytest.approx(position / sample_rate)
        assert block.wav.dtype == np.float32 and block.wav.ndim == 1 and len(block.wav)
        position += len(block.wav)
    assert [b.last for b in collected] == [False] * (len(collected) - 1) + [True]
    assert [b.chunk for b in collected] == sorted(b.chunk for b in collected)


def _largest_inner_jump(collected):
    return max(float(np.abs(np.diff(b.wav)).max()) for b in collected if len(b.wav) > 1)


def _join_jumps(collected):
    return [abs(float(b.wav[0]) - float(a.wav[-1])) for a, b in zip(collected, collected[1:])]


@pytest.mark.parametrize("variant", ["original", "turbo", "multilingual"])
def test_blocks_come_in_order_join_into_speaks_length_for_every_variant(
        variant, small_blocks, every_window, monkeypatch, speech_wav):
    root = fixture.cached_checkpoint_root((variant,))
    monkeypatch.setenv("CBX_MODEL_DIR", str(root))
    offline = (fixture.offline_multilingual() if variant == "multilingual"
               else contextlib.nullcontext())
    language = {"language": "en"} if variant == "multilingual" else {}
    with offline:
        try:
            cbx.load(variant, device="cpu")
            voice = cbx.voice(speech_wav, variant=variant)
            collected, at = [], []
            chunk_done = []
            result = cbx.speak(THREE_CHUNKS, voice=voice, seed=11, max_chunk_chars=50,
                               on_block=lambda b: (collected.append(b),
                                                   at.append(len(chunk_done))),
                               on_chunk=lambda *a: chunk_done.append(1), **language)
            whole = cbx.speak(THREE_CHUNKS, voice=voice, seed=11, max_chunk_chars=50,
                              **language)
        finally:
            get_manager().unload()
    assert len(result.chunks) == 3
    _check_contiguous(collected, result.sample_rate)
    joined = _joined(collected)
    # exactly speak()'s length, and speak()'s audio is unchanged by streaming
    assert len(joined) == len(whole.wav) == len(result.wav)
    assert np.array_equal(result.wav, whole.wav)
    # every chunk: a window made while its tokens were still coming, then its end
    assert [b.chunk for b in collected] == [1, 1, 2, 2, 3, 3]
    assert at == [0, 0, 1, 1, 2, 2]
    # the rest of each chunk is speak()'s own audio; the joins make no click
    assert max(_join_jumps(collected)) <= _largest_inner_jump(collected)
    assert np.array_equal(joined[-len(collected[-1].wav) // 2:],
                          whole.wav[-len(collected[-1].wav) // 2:])


def test_a_long_chunk_gets_growing_windows_and_stays_close_to_speak(
        every_window, monkeypatch, speech_wav):
    """The never-stopping fixture under a 90-token budget: windows at 20, 40 and 80
    tokens, then the chunk's own end; the streamed audio stays close to speak()'s."""
    root = fixture.cached_checkpoint_root(("original",), stop_after=2000)
    monkeypatch.setenv("CBX_MODEL_DIR", str(root))
    monkeypatch.setattr(decode, "token_budget", lambda chars: 90)
    try:
        cbx.load("original", device="cpu")
        s3gen = get_manager().loaded.tts.s3gen
        prompts = []          # the voice prompt's length in every S3Gen call
        upstream = s3gen.inference

        def counting(**kwargs):
            prompts.append(kwargs["ref_dict"]["prompt_token"].shape[1])
            return upstream(**kwargs)

        monkeypatch.setattr(s3gen, "inference", counting)
        voice = cbx.voice(speech_wav)
        collected = []
        streamed = cbx.speak("One long sentence.", voice=voice, seed=5,
                             on_block=collected.append)
        whole = cbx.speak("One long sentence.", voice=voice, seed=5)
    finally:
        get_manager().unload()
    assert np.array_equal(streamed.wav, whole.wav)
    assert len(collected) == 4
    # three windows on 3 s of the prompt, then the chunk's own call on all of it, twice
    full = prompts[-1]
    assert full > blocks.WINDOW_PROMPT_TOKENS
    assert prompts == [blocks.WINDOW_PROMPT_TOKENS] * 3 + [full, full], prompts
    sizes = [len(b.wav) for b in collected]
    assert sizes[0] < sizes[1] < sizes[2], sizes          # blocks grow
    joined = _joined(collected)
    assert len(joined) == len(whole.wav)
    noise = joined - whole.wav
    snr = 10 * np.log10(np.sum(whole.wav ** 2) / max(np.sum(noise ** 2), 1e-20))
    print(f"streamed vs speak(): SNR {snr:.1f} dB over {len(joined) / 24000:.2f} s")
    assert max(_join_jumps(collected)) <= _largest_inner_jump(collected)


def test_slower_than_real_time_only_the_first_chunk_gets_an_early_window(
        small_blocks, checkpoint_root, speech_wav):
    """Each window costs about one S3Gen call; where decoding cannot keep up with
    playback anyway, only the first audio is brought forward."""
    collected, done = [], []
    try:
        cbx.speak(THREE_CHUNKS, voice=cbx.voice(speech_wav), seed=11, max_chunk_chars=50,
                  on_block=lambda b: collected.append((b.chunk, len(done))),
                  on_chunk=lambda *a: done.append(1))
    finally:
        get_manager().unload()
    # chunk 1: its early window, then its own end; chunks 2 and 3: whole
    assert [chunk for chunk, _ in collected] == [1, 1, 2, 3]
    assert all(finished == chunk - 1 for chunk, finished in collected)


def test_stream_yields_blocks_then_returns_the_result(small_blocks, checkpoint_root,
                                                     speech_wav):
    try:
        gen = cbx.stream("Hello from the stream. And a second sentence here.",
                         voice=cbx.voice(speech_wav), seed=3, max_chunk_chars=30)
        collected = []
        with pytest.raises(StopIteration) as stop:
            while True:
                collected.append(next(gen))
        result = stop.value.value
        assert isinstance(result, cbx.engine.synth.Result)
        assert len(_joined(collected)) == len(result.wav)
        assert isinstance(collected[0], cbx.AudioBlock) and collected[-1].last
    finally:
        get_manager().unload()


def test_breaking_out_of_the_stream_cancels_the_generation(small_blocks, checkpoint_root,
                                                          speech_wav):
    try:
        gen = cbx.stream(THREE_CHUNKS, voice=cbx.voice(speech_wav), seed=3,
                         max_chunk_chars=50)
        first = next(gen)
        assert first.chunk == 1
        gen.close()                            # the consumer stops listening
        assert not any(t.name == "cbx-stream" for t in threading.enumerate())
        # the model is free again at once: no generation is still running
        assert get_manager().describe().state.value == "ready"
    finally:
        get_manager().unload()


def test_cancel_between_blocks_raises_cancelled_with_the_finished_chunks(
        small_blocks, every_window, checkpoint_root, speech_wav):
    """Cancelled on chunk 2's early block, i.e. while chunk 2's tokens still come."""
    token = cbx.CancelToken()
    seen = []
    try:
        with pytest.raises(errors.GenerationCancelled) as info:
            for block in cbx.stream(THREE_CHUNKS, voice=cbx.voice(speech_wav), seed=3,
                                    max_chunk_chars=50, cancel=token):
                seen.append(block)
                if block.chunk == 2:
                    token.cancel()
        assert info.value.partial is not None and len(info.value.partial.chunks) == 1
        assert seen and all(b.chunk <= 2 for b in seen)
    finally:
        get_manager().unload()


def test_on_block_must_be_a_function(checkpoint_root):
    with pytest.raises(errors.InvalidSetting):
        cbx.speak("Hello.", on_block="not a function")
    with pytest.raises(errors.InvalidSetting):
        next(cbx.stream("Hello.", on_block=print))


def test_a_dropped_stream_frees_the_model_and_names_itself_while_open(loaded):
    """Issue 21 item 5: a stream kept in a variable goes on generating; speak() got
    model_busy with no hint. While it is open the refusal names it; dropped (garbage
    collected), it cancels at the next token and lets the model go."""
    gen = cbx.stream(THREE_CHUNKS, seed=3, max_chunk_chars=50)
    assert next(gen).chunk == 1                 # the worker goes on with chunk 2
    with pytest.raises(errors.ModelBusy) as info:
        cbx.speak("Hello.", seed=1)
    assert "cbx.stream()" in info.value.message
    assert ".close()" in info.value.solution and "del" in info.value.solution
    dropped = weakref.ref(gen)
    started = time.perf_counter()
    del gen
    gc.collect()
    seconds = time.perf_counter() - started
    print(f"the model was free {seconds:.2f} s after the stream was dropped")
    assert dropped() is None, "nothing else (the worker included) holds the generator"
    assert not any(t.name == "cbx-stream" for t in threading.enumerate())
    assert get_manager().state == "ready" and seconds < 3
    # the model is usable at once; this call also shows item 8's note on the real path
    result = cbx.speak("Hello.", seed=1, language="fr")
    assert result.language is None
    assert any("ignores language='fr'" in note for note in result.notes), result.notes

"""The cbx core through the real chatterbox classes on a random-weight checkpoint:
load -> voice -> speak -> save -> unload, seeds, equality with upstream, bad input,
and the thread-safety the dashboard relies on."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf

import cbx
from cbx import errors
from cbx.dev import fixture
from cbx.engine.decode import upstream_token_loop
from cbx.engine.manager import get_manager
from cbx.engine.synth import sidecar_path
from cbx.engine.synth import CancelToken
from cbx.text import split_text

pytestmark = pytest.mark.model

THREE_SENTENCES = ("The quick brown fox jumps over the lazy dog. "
                   "A second sentence follows the first one. "
                   "And a third sentence ends the little story.")


def test_status_before_and_after_load(model_env, monkeypatch):
    monkeypatch.setenv("CBX_MODEL_DIR", str(model_env))
    get_manager().unload()
    before = cbx.status().to_dict()
    assert before["model"]["state"] == "not_loaded"
    cbx.load("original", device="cpu")
    after = cbx.status().to_dict()
    assert after["model"]["state"] == "ready"
    assert after["model"]["variant"] == "original"
    assert after["model"]["device"] == "cpu"
    assert after["model"]["load_seconds"] > 0


def test_load_twice_is_a_no_op(loaded):
    first = loaded.loaded
    cbx.load("original", device="cpu")
    assert loaded.loaded is first


def test_full_path_load_voice_speak_save_unload(loaded, speech_wav, tmp_path):
    voice = cbx.voice(speech_wav, name="narrator")
    assert voice.duration == pytest.approx(sf.info(speech_wav).duration, abs=0.05)
    events = []
    chunk_audio = []
    result = cbx.speak(THREE_SENTENCES, voice=voice, seed=7, max_chunk_chars=60,
                       progress=events.append,
                       on_chunk=lambda i, n, wav, sr: chunk_audio.append((i, n, len(wav))))
    n = len(split_text(THREE_SENTENCES, max_chars=60))
    assert n == 3 and result.chunks == split_text(THREE_SENTENCES, max_chars=60)
    assert [c[0] for c in chunk_audio] == [0, 1, 2] and {c[1] for c in chunk_audio} == {3}
    assert {e.total for e in events} == {3}
    assert [e.chunk for e in events if e.stage == "chunk_done"] == [1, 2, 3]
    assert result.wav.dtype == np.float32 and result.sample_rate == 24000
    pauses = (n - 1) * int(0.3 * 24000)
    assert len(result.wav) == sum(c[2] for c in chunk_audio) + pauses
    assert result.voice == "narrator" and result.seed == 7
    assert result.timings["first_audio"] <= result.timings["total"]

    path = result.save(tmp_path / "out.wav")
    data, rate = sf.read(path)
    assert rate == 24000 and len(data) == len(result.wav)
    sidecar = json.loads(sidecar_path(path).read_text())
    for key in ("text", "voice", "voice_sha256", "variant", "seed", "settings", "device",
                "dtype", "chunks", "timings", "versions", "duration_seconds"):
        assert key in sidecar, key
    assert sidecar["text"] == THREE_SENTENCES and sidecar["seed"] == 7
    assert sidecar["settings"]["cfg_weight"] == 0.5
    assert sidecar["versions"]["chatterbox-tts"] == "0.1.7"

    report = cbx.unload()
    assert report.variant == "original"
    assert report.released, report.alive_modules
    assert get_manager().loaded is None and get_manager().state == "not_loaded"
    assert "rss_mb" in report.before and "rss_mb" in report.after


def test_same_seed_same_audio_and_different_seed_differs(loaded, speech_wav):
    voice = cbx.voice(speech_wav)
    a = cbx.speak("Reproducible results matter.", voice=voice, seed=123)
    b = cbx.speak("Reproducible results matter.", voice=voice, seed=123)
    c = cbx.speak("Reproducible results matter.", voice=voice, seed=124)
    assert np.array_equal(a.wav, b.wav)
    assert not np.array_equal(a.wav, c.wav)


def test_equals_upstream_generate_for_a_short_text(loaded, speech_wav):
    import torch

    voice = cbx.voice(speech_wav)
    ours = cbx.speak("Hello from the upstream check.", voice=voice, seed=42)
    tts = loaded.loaded.tts
    tts.prepare_conditionals(str(voice.path), exaggeration=0.5)
    with upstream_token_loop(tts):
        torch.manual_seed(42)
        theirs = tts.generate("Hello from the upstream check.").squeeze(0).numpy()
    assert np.array_equal(ours.wav, theirs)


def test_a_chunk_the_token_budget_ends_says_so(loaded, speech_wav, monkeypatch):
    from cbx.engine import decode

    made = fixture.DEFAULT_STOP_AFTER + 1          # the fixture's tokens + its stop token
    monkeypatch.setattr(decode, "token_budget", lambda chars: made - 3)
    cut = cbx.speak("Hello from the budget check.", voice=cbx.voice(speech_wav), seed=3)
    assert any("token budget" in note for note in cut.notes), cut.notes
    monkeypatch.setattr(decode, "token_budget", lambda chars: made)
    whole = cbx.speak("Hello from the budget check.", voice=cbx.voice(speech_wav), seed=3)
    assert not any("token budget" in note for note in whole.notes), whole.notes
    assert len(cut.wav) < len(whole.wav)


def test_builtin_voice_is_used_without_a_voice_and_cfg_zero_runs(loaded):
    result = cbx.speak("Built in voice.", seed=1, cfg_weight=0.0)
    assert result.voice == "built-in" and result.duration > 0
    assert result.settings["cfg_weight"] == pytest.approx(1e-3)
    assert any("cfg_weight 0" in note for note in result.notes)


def test_empty_and_whitespace_text_are_refused_before_loading(loaded):
    for text in ("", "   \n\t "):
        with pytest.raises(errors.InvalidText) as info:
            cbx.speak(text)
        assert info.value.code == "invalid_text" and info.value.solution


def test_characters_the_tokenizer_lacks_are_reported(loaded):
    result = cbx.speak("Hello 你好 there.", seed=3)
    assert any("你" in note and "好" in note for note in result.notes)
    with pytest.raises(errors.InvalidText):
        cbx.speak("你好世界", seed=3)


def test_long_text_runs_in_chunks_and_reports_n(loaded):
    sentence = "This sentence is part of a very long text that goes on and on. "
    text = (sentence * (20000 // len(sentence) + 1))[:20000]
    expected = split_text(text)
    assert len(expected) > 50
    token = CancelToken()
    events = []

    def progress(p):
        events.append(p)
        if p.stage == "chunk_done" and p.chunk == 2:
            token.cancel()

    with pytest.raises(errors.GenerationCancelled) as info:
        cbx.speak(text, seed=5, progress=progress, cancel=token)
    assert {e.total for e in events} == {len(expected)}
    partial = info.value.partial
    assert partial.chunks == expected[:2]
    assert partial.duration > 0


def test_second_generation_while_one_runs_is_refused(loaded):
    started = threading.Event()
    token = CancelToken()
    outcome = {}

    def first():
        try:
            cbx.speak(THREE_SENTENCES, max_chunk_chars=60, seed=9, cancel=token,
                      progress=lambda p: p.stage == "tokens" and started.set())
        except errors.CbxError as exc:
            outcome["first"] = exc.code

    worker = threading.Thread(target=first)
    worker.start()
    assert started.wait(60)
    with pytest.raises(errors.ModelBusy) as info:
        cbx.speak("Me too.", seed=1)
    assert "Cancel" in info.value.solution
    token.cancel()
    worker.join(120)
    assert outcome["first"] == "generation_cancelled"


def test_unload_mid_generation_cancels_cleanly(loaded):
    tokens_seen = threading.Event()
    outcome = {}

    def run():
        try:
            cbx.speak(THREE_SENTENCES, max_chunk_chars=60, seed=11,
                      progress=lambda p: p.stage == "tokens" and tokens_seen.set())
        except errors.CbxError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    assert tokens_seen.wait(120)
    began = time.monotonic()
    report = cbx.unload()
    worker.join(60)
    assert isinstance(outcome.get("error"), errors.GenerationCancelled)
    assert report.variant == "original" and report.released, report.alive_modules
    assert time.monotonic() - began < 60
    assert get_manager().state == "not_loaded"


def test_missing_weights_name_the_files_and_the_fix(tmp_path, monkeypatch, model_env):
    partial = tmp_path / "original"
    partial.mkdir()
    (partial / "tokenizer.json").write_bytes((model_env / "original" / "tokenizer.json")
                                             .read_bytes())
    monkeypatch.setenv("CBX_MODEL_DIR", str(tmp_path))
    get_manager().unload()
    with pytest.raises(errors.ModelFilesMissing) as info:
        cbx.load("original", device="cpu")
    assert "t3_cfg.safetensors" in info.value.message
    assert "python setup_env.py" in info.value.solution
    assert get_manager().state == "not_loaded"


def test_cuda_out_of_memory_names_the_fixes_and_the_model_stays_usable(loaded, monkeypatch):
    import torch

    tts = loaded.loaded.tts
    real_generate = tts.generate

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(tts, "generate", out_of_memory)
    with pytest.raises(errors.GenerationFailed) as info:
        cbx.speak("This will not fit.", seed=1)
    err = info.value
    assert err.code == "generation_failed"
    assert "float16" in err.solution and "cpu" in err.solution and "chunk" in err.solution
    assert "OutOfMemoryError" in err.traceback
    assert get_manager().state == "ready"
    monkeypatch.setattr(tts, "generate", real_generate)
    assert cbx.speak("Now it fits.", seed=1).duration > 0


FIVE_SENTENCES = ("The morning train was late again, so Maria walked along the river. "
                  "She noticed the fog lifting slowly over the old stone bridge. "
                  "A fisherman waved and pointed to the herons near the bank. "
                  "By the time she reached the office, the sun was out. "
                  "It was the best part of her day.")


def test_first_chunk_is_short_and_reaches_on_chunk_before_the_next_starts(loaded, speech_wav):
    """Time to first audio: by default the first chunk is one short sentence, and its
    audio is handed to on_chunk before chunk 2's token loop has begun."""
    voice = cbx.voice(speech_wav)
    log = []
    result = cbx.speak(FIVE_SENTENCES, voice=voice, seed=21,
                       progress=lambda p: log.append((p.stage, p.chunk)),
                       on_chunk=lambda i, n, wav, sr: log.append(("on_chunk", i + 1)))
    assert result.chunks == split_text(FIVE_SENTENCES)
    assert result.chunks[0] == "The morning train was late again, so Maria walked along the river."
    assert len(result.chunks) == 2 and " ".join(result.chunks) == FIVE_SENTENCES
    first_audio = log.index(("on_chunk", 1))
    assert ("tokens", 1) in log[:first_audio]
    assert log.index(("tokens", 2)) > first_audio, log
    assert [e for e in log if e[0] == "on_chunk"] == [("on_chunk", 1), ("on_chunk", 2)]
    assert result.timings["first_audio"] < result.timings["total"]
    # The old packing is still available and gives one chunk for this text.
    whole = cbx.speak(FIVE_SENTENCES, voice=voice, seed=21, first_chunk_chars=None)
    assert whole.chunks == [FIVE_SENTENCES]
    with pytest.raises(errors.InvalidSetting):
        cbx.speak(FIVE_SENTENCES, voice=voice, first_chunk_chars=0)


def test_every_chunk_equals_upstream_generate_with_seed_plus_index(loaded, speech_wav):
    import torch

    voice = cbx.voice(speech_wav)
    pieces = []
    ours = cbx.speak(FIVE_SENTENCES, voice=voice, seed=42,
                     on_chunk=lambda i, n, wav, sr: pieces.append(wav.copy()))
    assert len(ours.chunks) == 2
    tts = loaded.loaded.tts
    tts.prepare_conditionals(str(voice.path), exaggeration=0.5)
    for i, chunk in enumerate(ours.chunks):
        with upstream_token_loop(tts):
            torch.manual_seed(42 + i)
            theirs = tts.generate(chunk).squeeze(0).numpy()
        assert np.array_equal(pieces[i], theirs), f"chunk {i} differs from upstream"

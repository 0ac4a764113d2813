"""The test fixture itself: random-weight checkpoints must load through upstream's own
from_local, generate a known number of tokens, and be built once; reference clips
must be what they claim to be.  Everything else in the suite leans on these."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cbx.dev import clips
from cbx.dev import fixture

sf = pytest.importorskip("soundfile")


# --------------------------------------------------------------------------- clips

def _read(path):
    wav, sr = sf.read(str(path), dtype="float32")
    return wav, sr


def test_speech_clip_is_24k_16bit_speech_of_the_asked_length(tmp_path):
    path = clips.speech_clip(tmp_path / "s.wav", 8.0)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
    assert info.frames == 8 * 24000
    wav, _ = _read(path)
    assert 0.05 < float(np.sqrt(np.mean(wav ** 2))) < 0.5
    # speech has pauses: a good share of 50 ms frames is much quieter than the loudest
    frames = wav[: len(wav) // 1200 * 1200].reshape(-1, 1200)
    energy = np.sqrt((frames ** 2).mean(axis=1))
    assert (energy < 0.1 * energy.max()).mean() > 0.05


@pytest.mark.skipif(not clips.espeak_available(), reason="espeak-ng not installed")
def test_speech_comes_from_espeak_when_installed():
    wav, source = clips.speech(3.0)
    assert source == "espeak" and len(wav) == 3 * 24000


def test_fallback_voice_without_espeak(no_espeak, tmp_path):
    wav, source = clips.speech(6.0)
    assert source == "synthetic" and len(wav) == 6 * 24000
    assert float(np.abs(wav).max()) == pytest.approx(0.8, abs=1e-3)
    # voiced: the spectrum peaks in the speech pitch range, not at one pure tone
    spec = np.abs(np.fft.rfft(wav))
    freqs = np.fft.rfftfreq(len(wav), 1 / 24000)
    assert 80 < freqs[spec.argmax()] < 3000
    assert (spec > 0.1 * spec.max()).sum() > 50
    path = clips.speech_clip(tmp_path / "fallback.wav", 6.0)
    assert sf.info(str(path)).frames == 6 * 24000


def test_silent_and_tone_clips(tmp_path):
    silent, _ = _read(clips.silent_clip(tmp_path / "silent.wav", 3.0))
    tone, sr = _read(clips.tone_clip(tmp_path / "tone.wav", 3.0, freq=440.0))
    assert len(silent) == len(tone) == 3 * 24000 and not silent.any()
    spec = np.abs(np.fft.rfft(tone))
    assert np.fft.rfftfreq(len(tone), 1 / sr)[spec.argmax()] == pytest.approx(440, abs=1)


@pytest.mark.parametrize("suffix", [".flac", ".ogg", ".mp3"])
def test_other_containers_round_trip(tmp_path, suffix):
    if not clips.can_write(suffix):
        pytest.skip(f"libsndfile here cannot write {suffix}")
    path = clips.speech_clip_as(tmp_path / f"clip{suffix}", 4.0)
    info = sf.info(str(path))
    assert info.format == suffix[1:].upper()
    assert info.duration == pytest.approx(4.0, abs=0.1)


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unsupported clip suffix"):
        clips.speech_clip(tmp_path / "clip.aac", 2.0)


# --------------------------------------------------------------------------- tokenizers

def test_english_tokenizer_fits_t3_and_lacks_cjk_and_emoji(tmp_path):
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.tokenizers import EnTokenizer

    fixture.write_english_tokenizer(tmp_path / "tokenizer.json")
    tok = EnTokenizer(str(tmp_path / "tokenizer.json"))
    vocab = tok.tokenizer.get_vocab()
    hp = T3Config.english_only()
    assert max(vocab.values()) < hp.text_tokens_dict_size
    assert vocab["[START]"] == hp.start_text_token and vocab["[STOP]"] == hp.stop_text_token
    assert sorted(vocab.values()) == list(range(len(vocab)))      # no holes
    text = "Hello, World! It's 10:45 (really?) - \"quoted\"; café."
    ids = tok.encode(text)
    assert vocab["[UNK]"] not in ids
    assert tok.decode(ids) == text
    unk = tok.encode("你好 😀")
    assert unk == [vocab["[UNK]"], vocab["[UNK]"], vocab["[SPACE]"], vocab["[UNK]"]]


def test_multilingual_tokenizer_has_language_tags(tmp_path):
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.tokenizers import MTLTokenizer
    from chatterbox.mtl_tts import SUPPORTED_LANGUAGES

    path = tmp_path / "grapheme_mtl_merged_expanded_v1.json"
    fixture.write_multilingual_tokenizer(path)
    with fixture.offline_multilingual():
        start = time.perf_counter()
        tok = MTLTokenizer(str(path))
        assert time.perf_counter() - start < 10, "offline shim should avoid Hub retries"
    vocab = tok.tokenizer.get_vocab()
    assert max(vocab.values()) < T3Config.multilingual().text_tokens_dict_size
    unk = vocab["[UNK]"]
    for lang in SUPPORTED_LANGUAGES:
        assert tok.encode("a", language_id=lang)[0] == vocab[f"[{lang}]"]
    for lang, text in [("fr", "Ça va très bien"), ("ru", "Привет мир"), ("el", "Καλημέρα"),
                       ("ar", "مرحبا"), ("he", "שלום"), ("hi", "नमस्ते"), ("ko", "안녕하세요"),
                       ("ja", "こんにちは")]:
        assert unk not in tok.encode(text, language_id=lang), lang
    assert tok.encode("😀", language_id="en") == [vocab["[en]"], unk]


def test_turbo_tokenizer_is_a_gpt2_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    fixture.write_turbo_tokenizer(tmp_path, seed=0)
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "merges.txt").is_file()
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    ids = tok("Hello there, how are you?", return_tensors="pt").input_ids
    assert int(ids.max()) < 50276
    assert tok.decode(ids[0]) == "Hello there, how are you?"
    assert tok.eos_token == "<|endoftext|>"


# --------------------------------------------------------------------------- cache logic

@pytest.fixture
def fake_builds(monkeypatch, tmp_path):
    """Replace the expensive build with one that writes the layout's files and counts."""
    calls = []

    def fake_build(variant, dest, *, stop_after, seed):
        calls.append((variant, stop_after, seed))
        time.sleep(0.2)                      # long enough for concurrent callers to collide
        dest.mkdir(parents=True)
        for name in fixture.LAYOUT[variant]:
            (dest / name).write_bytes(b"x")
        return {"variant": variant}

    monkeypatch.setattr(fixture, "_build", fake_build)
    monkeypatch.setenv(fixture.CACHE_ENV, str(tmp_path / "cache"))
    return calls


def test_cache_builds_once_and_is_keyed(fake_builds, tmp_path):
    root = fixture.cached_checkpoint_root(("original",), in_subprocess=False)
    assert root.parent == tmp_path / "cache"
    assert fixture.chatterbox_version() in root.name
    assert f"builder-{fixture.BUILDER_VERSION}" in root.name
    assert sorted(p.name for p in (root / "original").iterdir()) == \
        sorted(fixture.LAYOUT["original"])
    first = fixture.build_record(root, "original")
    assert fixture.cached_checkpoint_root("original", in_subprocess=False) == root
    assert fixture.build_record(root, "original") == first
    assert fake_builds == [("original", 8, 0)]
    other = fixture.cached_checkpoint_root(("original",), stop_after=12, in_subprocess=False)
    assert other != root and fake_builds[-1] == ("original", 12, 0)
    # no temp build folders are left behind
    assert [p.name for p in root.iterdir() if p.name.startswith(".original-building")] == []


def test_concurrent_callers_build_once(fake_builds):
    roots, errors = [], []

    def ask():
        try:
            roots.append(fixture.cached_checkpoint_root(("original", "turbo"),
                                                            in_subprocess=False))
        except Exception as exc:   # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(roots)) == 1
    assert sorted(fake_builds) == [("original", 8, 0), ("turbo", 8, 0)]


def test_failed_build_leaves_nothing_half_built(fake_builds, monkeypatch, tmp_path):
    def broken(variant, dest, *, stop_after, seed):
        dest.mkdir(parents=True)
        (dest / "ve.safetensors").write_bytes(b"x")
        raise MemoryError("simulated")

    monkeypatch.setattr(fixture, "_build", broken)
    with pytest.raises(MemoryError):
        fixture.cached_checkpoint_root(("original",), in_subprocess=False)
    root = tmp_path / "cache" / fixture.cache_key()
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []


def test_cli_builds_into_dest_and_prints_the_root(fake_builds, tmp_path, capsys):
    dest = tmp_path / "models"
    assert fixture.main(["--variants", "original", "multilingual", "--dest", str(dest)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(dest.resolve())
    assert (dest / "multilingual" / "t3_mtl23ls_v2.safetensors").is_file()
    assert fixture.main(["--variants", "original", "--dest", str(dest)]) == 0
    assert [c[0] for c in fake_builds] == ["original", "multilingual"]   # reused


def test_unknown_variant_is_refused(fake_builds):
    with pytest.raises(ValueError, match="unknown variant"):
        fixture.cached_checkpoint_root(("large",), in_subprocess=False)


def test_child_build_failure_is_reported_with_its_output(tmp_path):
    # The child interpreter must find `cbx.dev.fixture`; argparse then refuses the variant.
    with pytest.raises(RuntimeError, match=r"(?s)exit 2.*invalid choice: 'large'"):
        fixture._build_in_child("large", tmp_path, stop_after=8, seed=0)


# --------------------------------------------------------------------------- real builds

def _record_tokens(model):
    """Wrap S3Gen.inference on this instance to see the tokens generate() hands it."""
    seen = []
    inner = model.s3gen.inference

    def spy(*args, **kwargs):
        seen.append(kwargs["speech_tokens"].detach().cpu().clone())
        return inner(*args, **kwargs)

    model.s3gen.inference = spy
    return seen


def _assert_keys_match(file: Path, module):
    """The file holds exactly the module's state-dict keys (what a strict load needs)."""
    if file.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(file), "pt") as f:
            keys = set(f.keys())
    else:
        import torch
        keys = set(torch.load(str(file), map_location="cpu", weights_only=True))
    assert keys == set(module.state_dict()), file.name


def _assert_audio(wav, variant):
    import torch

    assert wav.shape == (1, fixture.expected_samples(variant))
    assert torch.isfinite(wav).all()
    assert float(wav.abs().max()) > 1e-3     # noise, but not silence


@pytest.fixture(scope="class")
def original_model(checkpoint_root):
    """One load for TestOriginal, freed when the class is done (before other variants load)."""
    from chatterbox.tts import ChatterboxTTS

    return ChatterboxTTS.from_local(checkpoint_root / "original", "cpu")


@pytest.mark.model
class TestOriginal:
    def test_loads_with_upstream_from_local(self, checkpoint_root, original_model):
        folder = checkpoint_root / "original"
        assert sorted(p.name for p in folder.iterdir()) == sorted(fixture.LAYOUT["original"])
        _assert_keys_match(folder / "ve.safetensors", original_model.ve)
        _assert_keys_match(folder / "t3_cfg.safetensors", original_model.t3)
        # upstream loads s3gen with strict=False, so check the keys here
        _assert_keys_match(folder / "s3gen.safetensors", original_model.s3gen)
        assert original_model.conds is not None          # the built-in voice
        assert tuple(original_model.conds.t3.cond_prompt_speech_tokens.shape) == (1, 150)
        record = fixture.build_record(checkpoint_root, "original")
        assert record["stop_after"] == fixture.DEFAULT_STOP_AFTER

    @pytest.mark.parametrize("text, settings", [
        ("Hello world, this is a test.", {}),
        ("A much longer sentence, with several clauses and far more characters, checks that "
         "the stop does not depend on the text.",
         dict(exaggeration=1.2, temperature=1.2, repetition_penalty=2.0, min_p=0.0)),
    ])
    def test_generate_stops_after_the_fixed_token_count(self, original_model, text, settings):
        seen = _record_tokens(original_model)
        wav = original_model.generate(text, **settings)
        assert len(seen) == 1
        tokens = seen[0]
        assert tokens.numel() == fixture.expected_tokens("original")
        assert int(tokens.max()) < 6561
        _assert_audio(wav, "original")


@pytest.mark.model
def test_cache_is_reused(checkpoint_root):
    t3_file = checkpoint_root / "original" / "t3_cfg.safetensors"
    mtime = t3_file.stat().st_mtime_ns
    record = fixture.build_record(checkpoint_root, "original")
    start = time.perf_counter()
    assert fixture.cached_checkpoint_root(("original",)) == checkpoint_root
    assert time.perf_counter() - start < 5
    assert t3_file.stat().st_mtime_ns == mtime
    assert fixture.build_record(checkpoint_root, "original") == record


@pytest.mark.model
def test_multilingual_checkpoint_loads_and_stops(multilingual_root):
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS

    folder = multilingual_root / "multilingual"
    assert sorted(p.name for p in folder.iterdir()) == \
        sorted(fixture.LAYOUT["multilingual"])
    model = ChatterboxMultilingualTTS.from_local(folder, "cpu")   # every load is strict
    seen = _record_tokens(model)
    wav = model.generate("Bonjour tout le monde, ceci est un essai un peu plus long.", "fr")
    assert seen[0].numel() == fixture.expected_tokens("multilingual")
    _assert_audio(wav, "multilingual")


@pytest.mark.model
def test_turbo_checkpoint_loads_and_stops(turbo_root):
    from chatterbox.tts_turbo import ChatterboxTurboTTS

    folder = turbo_root / "turbo"
    assert {p.name for p in folder.iterdir()} >= set(fixture.LAYOUT["turbo"])
    model = ChatterboxTurboTTS.from_local(folder, "cpu")
    seen = _record_tokens(model)
    wav = model.generate("Hello there, this is the fast model talking.")
    assert seen[0].numel() == fixture.expected_tokens("turbo")
    record = json.loads((turbo_root / "turbo.fixture.json").read_text(encoding="utf-8"))
    assert seen[0][: fixture.DEFAULT_STOP_AFTER].tolist() == record["stop"]["chain"]
    _assert_audio(wav, "turbo")

"""The voice library: clip validation, safe names, persistence, conditionals cache.

Most tests need no model: clips are numpy signals written with soundfile into tmp
folders, and CBX_VOICE_DIR points at a tmp library. The conditionals-cache tests
(marked `model`) load the random-weight `original` checkpoint through upstream code.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cbx.engine import conditionals as C
from cbx.errors import CbxError, InvalidVoiceFile, NoVoiceLoaded, VoiceFileNotFound

# Not `from cbx import voices`: cbx/__init__.py defines a function of that name, which
# `from cbx import ...` would return instead of the module.
V = importlib.import_module("cbx.voices")

REPO_ROOT = Path(__file__).resolve().parent.parent
SR = 24_000


@pytest.fixture
def lib(tmp_path, monkeypatch) -> Path:
    """An empty voice library inside a sandbox folder whose other contents we watch."""
    library = tmp_path / "sandbox" / "voices"
    monkeypatch.setenv("CBX_VOICE_DIR", str(library))
    return library


@pytest.fixture
def src(tmp_path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    return folder


def voice_signal(seconds: float, *, sr: int = SR, channels: int = 1, amp: float = 0.3,
                 seed: int = 0) -> np.ndarray:
    """A voiced-sounding signal: harmonics of a wobbling pitch under a syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 6))
    y *= 0.5 * (1 + np.sin(2 * np.pi * 4 * t))
    y = y / np.max(np.abs(y)) * amp + rng.normal(0, 0.002, len(t))
    y = y.astype(np.float32)
    if channels > 1:
        y = np.stack([y * (1 - 0.2 * c) for c in range(channels)], axis=1)
    return y


def encode(y: np.ndarray, fmt: str, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt)
    return buf.getvalue()


def write_clip(path: Path, seconds: float = 3.0, fmt: str = "WAV", **kw) -> Path:
    sr = kw.pop("sr", SR)
    path.write_bytes(encode(voice_signal(seconds, sr=sr, **kw), fmt, sr))
    return path


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# --------------------------------------------------------------------------- formats

@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_each_format_is_validated_and_saved_byte_for_byte(lib, src, fmt):
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    clip = write_clip(src / f"Speaker One.{fmt.lower()}", 3.0, fmt)
    voice = V.load_voice(clip)
    assert voice.name == "Speaker One"
    assert not voice.builtin
    assert voice.path == lib / "Speaker One" / f"clip.{fmt.lower()}"
    assert voice.path.read_bytes() == clip.read_bytes()
    assert voice.sha256 == hashlib.sha256(clip.read_bytes()).hexdigest()
    assert voice.duration == pytest.approx(3.0, abs=0.06 if fmt == "MP3" else 1e-6)
    assert (voice.sample_rate, voice.channels, voice.format) == (SR, 1, fmt)
    assert voice.notes == []
    meta = json.loads((voice.folder / "meta.json").read_text(encoding="utf-8"))
    assert meta["name"] == "Speaker One" and meta["original_name"] == clip.name
    assert meta["sha256"] == voice.sha256 and meta["channels"] == 1
    assert meta["sample_rate"] == SR and meta["created"]
    # The model reads the saved clip with librosa.load: it must decode there too.
    import librosa
    wav, sr = librosa.load(str(voice.path), sr=None)
    assert sr == SR and abs(len(wav) / sr - 3.0) < 0.1


def test_upload_bytes_and_memoryview(lib):
    data = encode(voice_signal(3.0), "WAV")
    voice = V.load_voice(memoryview(data), "from browser.wav")   # ipywidgets gives memoryview
    assert voice.name == "from browser"
    assert voice.original_name == "from browser.wav"
    assert voice.path.read_bytes() == data


def test_fallback_decoder_when_libsndfile_cannot_read(lib, src, monkeypatch):
    """An older libsndfile (no MP3) fails; librosa's audioread path must take over."""
    clip = write_clip(src / "old.wav", 3.0, channels=2)

    class NoLibsndfile(sf.SoundFile):      # librosa checks isinstance(x, sf.SoundFile)
        def __init__(self, *args, **kwargs):
            raise sf.LibsndfileError(1, "simulated: ")

    monkeypatch.setattr(sf, "SoundFile", NoLibsndfile)
    voice = V.load_voice(clip)
    assert voice.format == "audioread"
    assert voice.duration == pytest.approx(3.0, abs=0.01)
    assert (voice.sample_rate, voice.channels) == (SR, 2)
    assert voice.path.name == "clip.wav" and voice.path.read_bytes() == clip.read_bytes()


# --------------------------------------------------------------------------- bad files

def test_missing_path(lib, src):
    missing = src / "nope" / "voice.wav"
    with pytest.raises(VoiceFileNotFound) as info:
        V.load_voice(missing)
    assert str(missing) in info.value.message and "does not exist" in info.value.message
    assert "WAV" in info.value.solution
    assert not lib.exists()


def test_directory(lib, src):
    with pytest.raises(VoiceFileNotFound) as info:
        V.load_voice(src)
    assert "folder" in info.value.message and str(src) in info.value.message


def test_unreadable_file(lib, src, monkeypatch):
    clip = write_clip(src / "locked.wav")
    real_open = os.open

    def deny(path, *args, **kwargs):      # what the OS says to a user without rights
        if Path(path) == clip:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(VoiceFileNotFound) as info:
        V.load_voice(clip)
    assert "permission denied" in info.value.message and str(clip) in info.value.message


@pytest.mark.skipif(os.name == "nt" or (hasattr(os, "geteuid") and os.geteuid() == 0),
                    reason="needs POSIX permissions and a non-root user")
def test_unreadable_file_for_real(lib, src):
    clip = write_clip(src / "locked.wav")
    clip.chmod(0)
    try:
        with pytest.raises(VoiceFileNotFound, match="permission denied"):
            V.load_voice(clip)
    finally:
        clip.chmod(0o644)


def test_zero_byte_file_and_empty_upload(lib, src):
    empty = src / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InvalidVoiceFile) as info:
        V.load_voice(empty)
    assert "empty (0 bytes)" in info.value.message
    with pytest.raises(InvalidVoiceFile, match="empty"):
        V.load_voice(b"", "x.wav")


def test_text_file_renamed_wav(lib, src):
    fake = src / "notes.wav"
    fake.write_text("Shopping list: eggs, milk, bread.\n", encoding="utf-8")
    with pytest.raises(InvalidVoiceFile) as info:
        V.load_voice(fake)
    assert "text file, not audio" in info.value.message
    assert "Shopping list" in info.value.message
    assert info.value.code == "invalid_voice_file" and "WAV" in info.value.solution
    assert not any(lib.glob("*/*")) if lib.exists() else True


def test_corrupt_wav_header(lib, src):
    data = bytearray(encode(voice_signal(3.0), "WAV"))
    data[12:36] = b"\xff" * 24          # the 'fmt ' chunk
    bad = src / "broken.wav"
    bad.write_bytes(bytes(data))
    with pytest.raises(InvalidVoiceFile) as info:
        V.load_voice(bad)
    assert "looks like a WAV file but cannot be decoded" in info.value.message
    assert "damaged" in info.value.message


def test_unsupported_and_unknown_formats(lib):
    m4a = b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(range(256)) * 20
    with pytest.raises(InvalidVoiceFile) as info:
        V.load_voice(m4a, "phone memo.m4a")
    assert "MP4/M4A" in info.value.message and "cannot read" in info.value.message
    noise = np.random.default_rng(3).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    with pytest.raises(InvalidVoiceFile) as info:
        V.load_voice(b"\x01\x02" + noise, "random.bin")
    assert "not a recognised audio file" in info.value.message


def test_too_large(lib, src):
    big = src / "huge.wav"
    with open(big, "wb") as f:          # sparse: no 50 MB actually written
        f.truncate(V.MAX_VOICE_BYTES + 1)
    with pytest.raises(InvalidVoiceFile) as info:
        V.load_voice(big)
    assert "limit is 50 MB" in info.value.message
    with pytest.raises(InvalidVoiceFile, match="limit is 50 MB"):
        V.load_voice(bytes(V.MAX_VOICE_BYTES + 1), "huge.wav")


def test_one_second_clip_is_too_short(lib, src):
    clip = write_clip(src / "short.wav", 1.0)
    with pytest.raises(InvalidVoiceFile) as info:
        V.load_voice(clip)
    assert "1.00 s long" in info.value.message and "longer than 2 s" in info.value.message
    assert not lib.exists() or not any(lib.iterdir())


@pytest.mark.parametrize("case", ["zeros", "hiss", "late_start"])
def test_silent_clips(lib, case):
    if case == "zeros":
        y = np.zeros(SR * 4, np.float32)
    elif case == "hiss":           # -100 dBFS noise: a muted microphone
        y = np.random.default_rng(0).normal(0, 1e-5, SR * 4).astype(np.float32)
    else:                          # speech only after the 10 s the model reads
        y = np.concatenate([np.zeros(SR * 11, np.float32), voice_signal(3.0)])
    with pytest.raises(InvalidVoiceFile) as info:
        V.load_voice(encode(y, "WAV"), f"{case}.wav")
    assert "is silent" in info.value.message and "dBFS" in info.value.message


def test_long_clip_is_accepted_with_a_note(lib, src):
    clip = write_clip(src / "long.flac", 25.0, "FLAC")
    voice = V.load_voice(clip)
    assert voice.duration == pytest.approx(25.0)
    assert any("25.0 s" in n and "first 10 s" in n for n in voice.notes), voice.notes
    turbo = V.load_voice(clip, variant="turbo")
    assert turbo.name == voice.name                        # same audio: same entry
    assert any("first 15 s" in n for n in turbo.notes), turbo.notes


def test_stereo_is_accepted_and_mixed_down(lib, src):
    clip = write_clip(src / "stereo.wav", 3.0, channels=2)
    voice = V.load_voice(clip)
    assert voice.channels == 2
    assert any("mixed down to mono" in n for n in voice.notes)


def test_quality_notes(lib):
    low = V.load_voice(encode(voice_signal(3.0, sr=8000), "WAV", 8000), "phone.wav")
    assert low.sample_rate == 8000 and any("8000 Hz" in n for n in low.notes)
    hot = V.load_voice(encode(np.clip(voice_signal(3.0, amp=2.0), -1, 1), "WAV"), "hot.wav")
    assert any("full scale" in n for n in hot.notes)
    quiet = V.load_voice(encode(voice_signal(3.0, amp=0.01), "WAV"), "quiet.wav")
    assert any("quiet" in n for n in quiet.notes)


def test_turbo_needs_more_than_five_seconds(lib, src):
    four = write_clip(src / "four.wav", 4.0)
    assert V.load_voice(four).duration == pytest.approx(4.0)       # fine for original
    with pytest.raises(InvalidVoiceFile) as info:
        V.load_voice(four, variant="turbo")
    assert "4.00 s long" in info.value.message and "longer than 5 s" in info.value.message
    assert "Turbo" in info.value.message
    with pytest.raises(InvalidVoiceFile):     # upstream asserts len/sr > 5.0, strictly
        V.load_voice(write_clip(src / "five.wav", 5.0), variant="turbo")
    saved = V.get_voice("four")
    with pytest.raises(InvalidVoiceFile):     # a saved voice is re-checked per variant
        V.load_voice(saved, variant="turbo")
    assert V.load_voice(write_clip(src / "six.wav", 6.0), variant="turbo").name == "six"


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("upload_name, expected", [
    ("../../evil.wav", "evil"),
    ("..\\..\\evil.wav", "evil"),
    ("C:\\x\\CON.wav", "voice_CON"),
    ("", "voice"),
    ("..", "voice"),
    ("/etc/passwd", "passwd"),
    ("C:evil.wav", "evil"),
    ("nul.txt.wav", "voice_nul.txt"),
    ("com1", "voice_com1"),
    ("a\x00b\x1f\x7fc.wav", "abc"),
    ("  .hidden.wav", "hidden"),
    ('bad<>:"|?*name.wav', "bad_name"),
    ("Zoë Ünïcode.flac", "Zoë Ünïcode"),
    ("x" * 300 + ".wav", "x" * V.MAX_NAME_LEN),
])
def test_upload_names_never_escape_the_library(lib, tmp_path, upload_name, expected):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    (sandbox / "keep.txt").write_text("neighbour")
    before = all_files(tmp_path)
    voice = V.load_voice(encode(voice_signal(3.0), "WAV"), upload_name)
    assert voice.name == expected
    assert voice.path.resolve().parent.parent == lib.resolve()
    new = all_files(tmp_path) - before
    assert new and all(p == lib or lib in p.parents for p in new), new
    assert (sandbox / "keep.txt").read_text() == "neighbour"


def test_name_argument_is_sanitised_too(lib, src):
    voice = V.load_voice(write_clip(src / "a.wav"), name="../../../etc/evil")
    assert voice.name == "evil" and voice.folder.parent == lib


def test_lookups_reject_path_like_names(lib, src, tmp_path):
    V.load_voice(write_clip(src / "alice.wav"))
    for bad in ("../src", "..", "alice/../..", "C:\\alice", "/alice"):
        with pytest.raises(VoiceFileNotFound):
            V.get_voice(bad)
        with pytest.raises(VoiceFileNotFound):
            V.delete_voice(bad)
    assert (src / "alice.wav").exists() and V.get_voice("alice").name == "alice"


# --------------------------------------------------------------------------- library

def test_same_audio_is_reused_not_duplicated(lib, src):
    data = encode(voice_signal(3.0), "WAV")
    first = V.load_voice(data, "alice.wav")
    again = V.load_voice(data, "someone else.wav")
    from_path = V.load_voice(first.path)
    assert again.name == from_path.name == "alice"
    assert [p.name for p in lib.iterdir()] == ["alice"]


def test_same_name_different_audio_gets_a_suffix(lib):
    a = V.load_voice(encode(voice_signal(3.0, seed=1), "WAV"), "alice.wav")
    b = V.load_voice(encode(voice_signal(3.0, seed=2), "WAV"), "alice.wav")
    c = V.load_voice(encode(voice_signal(3.0, seed=3), "WAV"), "ALICE.wav")  # Windows: same
    assert (a.name, b.name, c.name) == ("alice", "alice-2", "ALICE-3")
    assert len({a.sha256, b.sha256, c.sha256}) == 3


def test_list_get_delete(lib, src):
    assert V.list_voices() == []
    for name in ("carol", "Bob", "alice"):
        V.load_voice(write_clip(src / f"{name}.wav", 3.0, seed=len(name) + ord(name[0])))
    listed = V.list_voices()
    assert [v.name for v in listed] == ["alice", "Bob", "carol"]
    bob = V.get_voice("Bob")
    assert bob == next(v for v in listed if v.name == "Bob")
    assert V.load_voice("Bob") == bob             # a saved voice's name works as a source
    V.delete_voice("Bob")
    assert not (lib / "Bob").exists()
    assert [v.name for v in V.list_voices()] == ["alice", "carol"]
    with pytest.raises(VoiceFileNotFound) as info:
        V.get_voice("Bob")
    assert "alice, carol" in info.value.solution
    with pytest.raises(VoiceFileNotFound):
        V.delete_voice("Bob")
    assert V.get_voice("built-in").builtin
    with pytest.raises(InvalidVoiceFile):
        V.delete_voice("built-in")


def test_broken_entries_are_skipped_with_a_warning(lib, src):
    good = V.load_voice(write_clip(src / "good.wav"))
    (lib / "no_meta").mkdir()
    (lib / "bad_json").mkdir()
    (lib / "bad_json" / "meta.json").write_text("{not json")
    lost = V.load_voice(write_clip(src / "lost.wav", seed=9))
    lost.path.unlink()
    (lib / "stray-file.txt").write_text("not an entry")
    with pytest.warns(RuntimeWarning) as record:
        listed = V.list_voices()
    assert [v.name for v in listed] == [good.name]
    messages = " | ".join(str(w.message) for w in record)
    for name in ("no_meta", "bad_json", "lost"):
        assert repr(name) in messages, messages
    with pytest.raises(InvalidVoiceFile, match="damaged"):
        V.get_voice("lost")


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_symlinked_entry_pointing_outside_is_not_followed(lib, src, tmp_path):
    V.load_voice(write_clip(src / "real.wav"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (lib / "sneaky").symlink_to(outside, target_is_directory=True)
    with pytest.warns(RuntimeWarning, match="outside"):
        assert [v.name for v in V.list_voices()] == ["real"]
    with pytest.raises(VoiceFileNotFound):
        V.delete_voice("sneaky")
    assert outside.exists()


def test_voices_persist_across_kernels(lib, src):
    voice = V.load_voice(write_clip(src / "persistent.ogg", 3.0, "OGG"))
    code = ("import json, cbx.voices as V; "
            "print(json.dumps([[v.name, v.sha256, str(v.path)] for v in V.list_voices()]))")
    env = {**os.environ, "CBX_VOICE_DIR": str(lib)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout) == [[voice.name, voice.sha256, str(voice.path)]]


def test_import_is_light():
    code = ("import sys, cbx.voices, cbx.text; "
            "heavy = [m for m in ('torch', 'numpy', 'soundfile', 'librosa', 'chatterbox', "
            "'IPython') if m in sys.modules]; print(heavy); assert not heavy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


def test_html_repr(lib):
    voice = V.load_voice(encode(voice_signal(3.0), "WAV"), "<b>bold</b>.wav")
    page = voice._repr_html_()
    assert "<audio" in page and "data:audio/" in page
    assert "<b>bold" not in page                 # the name is escaped
    builtin = V.BUILTIN_VOICE._repr_html_()
    assert "Built-in" in builtin and "<audio" not in builtin
    assert V.Voice.builtin_voice().builtin and V.Voice.builtin_voice().path is None


def test_storage_failure_is_reported(lib, monkeypatch):
    def full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(CbxError) as info:
        V.load_voice(encode(voice_signal(3.0), "WAV"), "x.wav")
    assert "No space left" in info.value.message and "CBX_VOICE_DIR" in info.value.solution
    assert [p.name for p in lib.iterdir()] == []       # no half-written entry left


# --------------------------------------------------------------------------- conditionals

def test_conditionals_path_is_keyed_by_content_and_variant(lib, src):
    voice = V.load_voice(write_clip(src / "key.wav"))
    path = C.conditionals_path(voice, "original")
    assert path == lib / "key" / f"conds-original-{voice.sha256[:16]}.pt"
    assert C.conditionals_path(voice, "turbo").name.startswith("conds-turbo-")
    with pytest.raises(InvalidVoiceFile):
        C.conditionals_path(V.BUILTIN_VOICE, "original")
    stray = V.Voice(name="key", path=src / "key.wav", sha256=voice.sha256, duration=3.0,
                    sample_rate=SR, channels=1)
    with pytest.raises(InvalidVoiceFile, match="not in the voice library"):
        C.conditionals_path(stray, "original")


def _assert_conds_equal(a, b):
    import torch

    for key in ("speaker_emb", "clap_emb", "cond_prompt_speech_tokens",
                "cond_prompt_speech_emb", "emotion_adv"):
        x, y = getattr(a.t3, key), getattr(b.t3, key)
        if torch.is_tensor(x) or torch.is_tensor(y):
            assert torch.is_tensor(x) and torch.is_tensor(y), key
            assert x.dtype == y.dtype and x.device == y.device and torch.equal(x, y), key
        else:
            assert x == y, key
    assert a.gen.keys() == b.gen.keys()
    for key, x in a.gen.items():
        y = b.gen[key]
        if torch.is_tensor(x):
            assert torch.is_tensor(y) and torch.equal(x, y), key
        else:
            assert x == y, key


@pytest.fixture(scope="module")
def original_model(checkpoint_root):
    from chatterbox.tts import ChatterboxTTS

    return ChatterboxTTS.from_local(checkpoint_root / "original", "cpu")


@pytest.mark.model
def test_conditionals_are_cached_and_equal_fresh_ones(original_model, lib, src, monkeypatch):
    model = original_model
    voice = V.load_voice(write_clip(src / "cached.wav", 6.0))
    cache = C.conditionals_path(voice, "original")
    assert not cache.exists()

    first = C.prepare_conditionals(model, voice, "original", exaggeration=0.5)
    assert cache.is_file()
    model.prepare_conditionals(str(voice.path), exaggeration=0.5)
    _assert_conds_equal(first, model.conds)
    model.prepare_conditionals(str(voice.path), exaggeration=0.8)
    fresh_08 = model.conds

    def must_not_run(*args, **kwargs):
        raise AssertionError("upstream prepare_conditionals ran despite the cache")

    with monkeypatch.context() as patch:
        patch.setattr(model, "prepare_conditionals", must_not_run)
        cached_05 = C.prepare_conditionals(model, voice, "original", exaggeration=0.5)
        cached_08 = C.prepare_conditionals(model, voice, "original", exaggeration=0.8)
    _assert_conds_equal(cached_05, first)
    _assert_conds_equal(cached_08, fresh_08)      # exaggeration applied like upstream

    # A damaged cache file is noticed, recomputed (upstream again) and rewritten.
    cache.write_bytes(b"truncated")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = C.prepare_conditionals(model, voice, "original", exaggeration=0.5)
    _assert_conds_equal(again, first)
    assert cache.stat().st_size > 1000


@pytest.mark.model
def test_changed_clip_and_upstream_failure_are_reported(original_model, lib, src,
                                                         monkeypatch):
    model = original_model
    voice = V.load_voice(write_clip(src / "changing.wav", 3.0))
    with open(voice.path, "r+b") as f:       # edited after it was saved
        f.seek(-100, os.SEEK_END)
        f.write(b"\x00" * 100)
    with pytest.raises(InvalidVoiceFile, match="changed on disk"):
        C.prepare_conditionals(model, voice, "original", exaggeration=0.5)

    other = V.load_voice(write_clip(src / "other.wav", 3.0, seed=5))

    def upstream_assert(path, exaggeration=0.5):
        assert False, "Audio prompt must be longer than 5 seconds!"

    with monkeypatch.context() as patch, pytest.raises(InvalidVoiceFile) as info:
        patch.setattr(model, "prepare_conditionals", upstream_assert)
        C.prepare_conditionals(model, other, "original", exaggeration=0.5)
    assert "longer than 5 seconds" in info.value.message and info.value.details
    assert not C.conditionals_path(other, "original").exists()


@pytest.mark.model
def test_builtin_voice_loads_the_variants_conds(original_model, checkpoint_root, tmp_path):
    conds_file = checkpoint_root / "original" / "conds.pt"
    if not conds_file.exists():
        with pytest.raises(NoVoiceLoaded):
            C.prepare_conditionals(original_model, V.BUILTIN_VOICE, "original",
                                   exaggeration=0.5, model_dir=checkpoint_root)
        return
    from chatterbox.tts import Conditionals

    conds = C.prepare_conditionals(original_model, V.BUILTIN_VOICE, "original",
                                   exaggeration=0.5, model_dir=checkpoint_root)
    _assert_conds_equal(conds, Conditionals.load(conds_file))
    with pytest.raises(NoVoiceLoaded):
        C.prepare_conditionals(original_model, V.BUILTIN_VOICE, "original",
                               exaggeration=0.5, model_dir=tmp_path)


# --------------------------------------------------------------- hardening (issue 15)

@pytest.mark.parametrize("meta_text", [
    '{"clip": "clip.wav", "sha256": "%s", "duration": Infinity, "sample_rate": 24000, '
    '"channels": 1}',
    '{"clip": "clip.wav", "sha256": "%s", "duration": 3.0, "sample_rate": 1e400, '
    '"channels": 1}',
    '{"clip": "clip.wav", "sha256": "%s", "duration": NaN, "sample_rate": 24000, '
    '"channels": 1}',
    '{"clip": "clip.wav", "sha256": "%s", "duration": -3, "sample_rate": 24000, '
    '"channels": 1}',
    "[" * 100_000 + "]" * 100_000,
    '{"a": ' * 100_000 + "1" + "}" * 100_000,
])
def test_corrupt_voice_entries_are_skipped_and_the_page_still_builds(lib, src, meta_text):
    """Issue 15 (12): a meta.json with Infinity or a 100k-deep JSON made list_voices
    raise and the dashboard fail to build."""
    good = V.load_voice(write_clip(src / "good.wav", 6.0))
    broken = lib / "broken"
    broken.mkdir()
    (broken / "clip.wav").write_bytes((good.path).read_bytes())
    text = meta_text % good.sha256 if "%s" in meta_text else meta_text
    (broken / V.META_FILE).write_text(text, encoding="utf-8")
    with pytest.warns(RuntimeWarning, match="broken"):
        names = [v.name for v in V.list_voices()]
    assert names == [good.name]
    pytest.importorskip("ipywidgets")
    from cbx.ui.view import dashboard

    with pytest.warns(RuntimeWarning):
        page = dashboard()
    assert any(value == good.name for _label, value in page.voice_pick.options)
    page.close()


def test_hand_made_folder_names_are_not_listed(lib, src):
    """Issue 15 (19): list_voices accepted folder names cbx would never make."""
    good = V.load_voice(write_clip(src / "good.wav", 6.0))
    for bad in ("<img src=x onerror=alert(1)>", "two  spaces", "a..b"):
        shutil_copy = lib / bad
        shutil_copy.mkdir()
        for item in good.path.parent.iterdir():
            (shutil_copy / item.name).write_bytes(item.read_bytes())
    with pytest.warns(RuntimeWarning, match="never makes such a name"):
        assert [v.name for v in V.list_voices()] == [good.name]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_or_device_is_refused_without_reading_it(lib, tmp_path):
    """Issue 15 (13): a FIFO was read far past the 50 MB limit (checked on st_size)."""
    import threading

    fifo = tmp_path / "clip.wav"
    os.mkfifo(fifo)
    outcome = []

    def load(path):
        try:
            V.load_voice(path)
        except CbxError as exc:
            outcome.append(exc)

    for path in (fifo, Path("/dev/zero")):
        worker = threading.Thread(target=load, args=(path,), daemon=True)
        worker.start()
        worker.join(10)
        assert not worker.is_alive(), f"{path} was opened and read"
    assert [type(e) for e in outcome] == [VoiceFileNotFound, VoiceFileNotFound]
    assert all("not a regular file" in e.message for e in outcome)


def test_reads_are_capped_whatever_the_size_claims(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 1000)
    with pytest.raises(InvalidVoiceFile):
        V.read_capped(big, 999, lambda size: InvalidVoiceFile(f"{size}", "smaller"))
    assert V.read_capped(big, 1000, lambda size: AssertionError()) == b"x" * 1000


def test_result_html_escapes_the_voice_and_everything_else():
    """Issue 15 (19): Result._repr_html_ did not escape the voice name."""
    from cbx.engine.synth import Result

    result = Result(wav=np.zeros(2400, dtype=np.float32), sample_rate=24000,
                    text="<b>x</b>", voice="<script>alert(1)</script>", variant="original",
                    seed=1, settings={}, chunks=["x"], timings={"total": 1.0}, device="cpu",
                    dtype="float32")
    page = result._repr_html_()
    assert "<script>alert" not in page and "&lt;script&gt;" in page


@pytest.mark.model
def test_cached_conditionals_that_do_not_fit_the_model_are_recomputed(original_model, lib,
                                                                       src):
    """Issue 15 (12): a cache entry with other shapes or types was reused for ever."""
    import torch

    model = original_model
    model.prepare_conditionals(str(write_clip(src / "ref.wav", 6.0, seed=3)),
                               exaggeration=0.5)   # the model's own conds: the reference
    voice = V.load_voice(write_clip(src / "misfit.wav", 6.0, seed=4))
    first = C.prepare_conditionals(model, voice, "original", exaggeration=0.5)
    cache = C.conditionals_path(voice, "original")
    misfit = C.prepare_conditionals(model, voice, "original", exaggeration=0.5)
    misfit.t3.speaker_emb = torch.zeros(1, 17, dtype=torch.float64)
    misfit.save(cache)
    with pytest.warns(RuntimeWarning, match="do not fit"):
        again = C.prepare_conditionals(model, voice, "original", exaggeration=0.5)
    _assert_conds_equal(again, first)
    assert C.conditionals_fit(again, model.conds)


def test_results_saved_at_once_under_one_name_never_overwrite_each_other(tmp_path):
    """Issue 15 (4): two tabs finishing in the same second with the same voice and seed
    overwrote each other's WAV and JSON. Each pair is created exclusively."""
    import threading

    from cbx.engine.synth import Result, sidecar_path

    def result(seed):
        return Result(wav=np.full(2400, seed / 100, dtype=np.float32), sample_rate=24000,
                      text=f"take {seed}", voice="v", variant="original", seed=seed,
                      settings={}, chunks=["x"], timings={}, device="cpu", dtype="float32")

    (tmp_path / "same-3.wav.json").write_text("a stray sidecar from elsewhere")
    barrier = threading.Barrier(8)
    saved = {}

    def save(seed):
        barrier.wait()
        saved[seed] = result(seed).save(tmp_path / "same.wav", unique=True)

    threads = [threading.Thread(target=save, args=(seed,)) for seed in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(set(saved.values())) == 8
    assert tmp_path / "same-3.wav" not in saved.values()
    assert (tmp_path / "same-3.wav.json").read_text() == "a stray sidecar from elsewhere"
    for seed, path in saved.items():
        assert json.loads(sidecar_path(path).read_text())["seed"] == seed
        data, _rate = sf.read(str(path), dtype="float32")
        assert abs(float(data[0]) - seed / 100) < 1e-3, "each WAV belongs to its sidecar"


def test_one_rule_tells_a_saved_voice_name_from_a_clip_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alice").write_bytes(b"a file of that name")
    assert V.is_voice_name("Narrator") and V.is_voice_name("my.voice")
    for path_like in ("alice", "clips/alice", "C:\\\\clips\\\\bob", "bob.wav", "bob.MP3",
                      "x.flac", b"RIFF", 5, None):
        assert not V.is_voice_name(path_like), path_like

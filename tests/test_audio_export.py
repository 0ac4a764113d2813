"""Export formats (issue 12): Result.save writes WAV, FLAC, MP3, Ogg Vorbis and Ogg Opus
by suffix, with the settings JSON beside the audio, and each file reads back with the
right sample rate and duration. No model needed: a Result is built from espeak-ng
speech."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from cbx import audio
from cbx.dev import clips
from cbx.errors import InvalidSetting, OutputExists
from cbx.engine.synth import Result, sidecar_path

SR = 24_000
# One codec frame: what a lossy container may add or drop at the ends.
FRAME_BLOCK = {".wav": 0, ".flac": 0, ".mp3": 1152, ".ogg": 2048, ".opus": 960}


@pytest.fixture(scope="module")
def speech():
    wav, _source = clips.speech(4.0)
    return wav


def make_result(wav, sample_rate=SR, seed=7):
    return Result(wav=wav, sample_rate=sample_rate, text="The quick brown fox.",
                  voice="narrator", variant="original", seed=seed,
                  settings={"temperature": 0.8}, chunks=["The quick brown fox."],
                  timings={"total": 1.0}, device="cpu", dtype="float32")


def test_the_table_covers_the_issue_formats_and_this_libsndfile_writes_them():
    assert set(audio.FORMATS) == {".wav", ".flac", ".mp3", ".ogg", ".opus"}
    for suffix in audio.FORMATS:
        assert clips.can_write(suffix), f"{suffix}: libsndfile {sf.__libsndfile_version__}"


@pytest.mark.parametrize("suffix", sorted(FRAME_BLOCK))
def test_each_format_reads_back_with_its_rate_and_duration(tmp_path, speech, suffix):
    path = make_result(speech).save(tmp_path / f"take{suffix}")
    assert path == tmp_path / f"take{suffix}"
    info = sf.info(str(path))
    fmt = audio.FORMATS[suffix]
    assert (info.format, info.subtype) == (fmt.container, fmt.codec)
    assert info.samplerate == SR and info.channels == 1
    assert abs(info.frames - len(speech)) <= FRAME_BLOCK[suffix]
    data, _rate = sf.read(str(path), dtype="float32")
    n = min(len(data), len(speech))
    # The audio itself, not just a header: lossy codecs keep the waveform's shape.
    assert np.corrcoef(data[:n], speech[:n])[0, 1] > (0.999 if FRAME_BLOCK[suffix] == 0
                                                      else 0.8)
    meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert meta["seed"] == 7 and meta["settings"] == {"temperature": 0.8}
    assert meta["file"] == {"format": fmt.container, "codec": fmt.codec,
                            "sample_rate": SR}


def test_compressed_files_are_smaller_than_wav(tmp_path, speech):
    sizes = {s: make_result(speech).save(tmp_path / f"a{s}").stat().st_size
             for s in audio.FORMATS}
    assert sizes[".flac"] < sizes[".wav"]
    for lossy in (".mp3", ".ogg", ".opus"):
        assert sizes[lossy] < sizes[".wav"] / 5, sizes


def test_opus_resamples_a_rate_it_cannot_take(tmp_path, speech):
    wav = audio.resample(speech, SR, 22_050)
    path = make_result(wav, sample_rate=22_050).save(tmp_path / "odd.opus")
    info = sf.info(str(path))
    assert info.samplerate == audio.OPUS_FALLBACK_RATE
    assert info.duration == pytest.approx(len(wav) / 22_050, abs=960 / 48_000)
    meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    assert meta["file"]["sample_rate"] == 48_000 and meta["sample_rate"] == 22_050


def test_no_suffix_means_wav_and_an_unknown_one_is_refused(tmp_path, speech):
    assert make_result(speech).save(tmp_path / "plain") == tmp_path / "plain.wav"
    with pytest.raises(InvalidSetting) as caught:
        make_result(speech).save(tmp_path / "notes.txt")
    assert caught.value.code == "invalid_setting"
    assert ".mp3" in caught.value.solution and ".opus" in caught.value.solution
    assert {p.name for p in tmp_path.iterdir()} == {"plain.wav", "plain.wav.json"}


def test_uppercase_suffix_refused_when_taken_and_numbered_when_unique(tmp_path, speech):
    first = make_result(speech, seed=1).save(tmp_path / "Take.MP3")
    with pytest.raises(OutputExists):
        make_result(speech, seed=2).save(tmp_path / "Take.MP3")
    second = make_result(speech, seed=2).save(tmp_path / "Take.MP3", unique=True)
    assert first == tmp_path / "Take.MP3" and second == tmp_path / "Take-2.MP3"
    assert sf.info(str(second)).format == "MP3"
    assert json.loads((tmp_path / "Take.MP3.json").read_text())["seed"] == 1
    assert json.loads((tmp_path / "Take-2.MP3.json").read_text())["seed"] == 2


def test_a_libsndfile_without_the_codec_gets_a_fix_not_a_crash(tmp_path, speech,
                                                              monkeypatch):
    real = sf.available_subtypes
    monkeypatch.setattr(sf, "available_subtypes",
                        lambda fmt=None: {k: v for k, v in real(fmt).items()
                                          if k != "MPEG_LAYER_III"})
    with pytest.raises(InvalidSetting) as caught:
        make_result(speech).save(tmp_path / "x.mp3")
    assert "MP3" in caught.value.message and ".wav" in caught.value.solution
    assert list(tmp_path.iterdir()) == []


def test_test_clips_use_the_same_table(tmp_path):
    path = clips.speech_clip(tmp_path / "voice.opus", 2.0)
    assert sf.info(str(path)).subtype == "OPUS"
    with pytest.raises(ValueError, match=".opus"):
        clips.speech_clip(tmp_path / "voice.aac", 2.0)

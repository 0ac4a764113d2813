"""Speech rate (issue 12): a pitch-preserving time-stretch from 0.5x to 2x, on espeak-ng
speech measured with librosa (duration within 3% of the rate asked, median F0 within
5%), validated like every other setting, and applied by speak() to each chunk."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from cbx import audio
from cbx.dev import clips
from cbx.errors import EnvironmentNotSetup, InvalidSetting
from cbx.settings import SPEECH_RATE
from cbx.engine.synth import sidecar_path

SR = 24_000


def median_f0(wav) -> float:
    import librosa

    f0, voiced, _prob = librosa.pyin(wav, fmin=60, fmax=400, sr=SR, frame_length=2048)
    return float(np.nanmedian(f0[voiced]))


def speech_span(wav) -> float:
    """Seconds from the first to the last sound above -40 dB of the peak."""
    import librosa

    _trimmed, (start, end) = librosa.effects.trim(wav, top_db=40)
    return (end - start) / SR


@pytest.fixture(scope="module")
def espeak():
    if not clips.espeak_available():
        pytest.skip("espeak-ng is not installed")
    wav = clips.espeak_speech("The quick brown fox jumps over the lazy dog. "
                              "Please read this sentence slowly and clearly.")
    return wav, median_f0(wav), speech_span(wav)


@pytest.mark.parametrize("rate", [0.5, 0.8, 1.25, 2.0])
def test_duration_scales_and_pitch_stays(espeak, rate):
    wav, f0, span = espeak
    out = audio.stretch(wav, SR, rate)
    assert out.dtype == np.float32
    assert len(out) / SR == pytest.approx(len(wav) / SR / rate, rel=0.03)
    assert speech_span(out) == pytest.approx(span / rate, rel=0.03)
    assert median_f0(out) == pytest.approx(f0, rel=0.05)


def test_the_pitch_check_would_catch_a_plain_resample(espeak):
    # Guard: playing the samples 1.5x faster (a resample) shifts F0 by 1.5x.
    wav, f0, _span = espeak
    resampled = audio.resample(wav, int(SR * 1.5), SR)
    assert median_f0(resampled) > f0 * 1.3


def test_rate_one_is_the_identity():
    wav = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert audio.stretch(wav, SR, 1.0) is wav


@pytest.mark.parametrize("bad", [0.49, 2.01, "fast", True, float("nan"), [1.0]])
def test_rates_outside_the_table_are_invalid_settings(bad):
    with pytest.raises(InvalidSetting) as caught:
        audio.check_rate(bad)
    assert f"{SPEECH_RATE.low:g}" in caught.value.solution
    assert f"{SPEECH_RATE.high:g}" in caught.value.solution


def test_none_means_unchanged_and_the_range_ends_are_allowed():
    assert audio.check_rate(None) == 1.0
    assert audio.check_rate(SPEECH_RATE.low) == 0.5
    assert audio.check_rate(2) == 2.0


def test_speak_refuses_a_bad_rate_before_loading_anything():
    import cbx
    from cbx.engine.manager import get_manager

    with pytest.raises(InvalidSetting, match="rate=3"):
        cbx.speak("Hello there.", rate=3)
    assert get_manager().loaded is None


def test_missing_pedalboard_says_how_to_fix_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pedalboard", None)   # import now raises
    assert audio.check_rate(1.0) == 1.0                      # rate 1 never needs it
    with pytest.raises(EnvironmentNotSetup) as caught:
        audio.check_rate(1.5)
    assert "setup_env.py" in caught.value.solution and "rate=1" in caught.value.solution


@pytest.mark.model
def test_speak_stretches_each_chunk_and_records_the_rate(loaded, tmp_path):
    import cbx

    text = "A first short sentence here. And a second one."
    plain, fast = [], []
    slow = cbx.speak(text, seed=3, max_chunk_chars=30, first_chunk_chars=None,
                     on_chunk=lambda i, n, wav, sr: plain.append(wav))
    quick = cbx.speak(text, seed=3, max_chunk_chars=30, first_chunk_chars=None, rate=2.0,
                      on_chunk=lambda i, n, wav, sr: fast.append(wav))
    assert len(plain) == len(fast) == 2
    for raw, stretched in zip(plain, fast):
        np.testing.assert_array_equal(stretched, audio.stretch(raw, SR, 2.0))
        assert len(stretched) == pytest.approx(len(raw) / 2, abs=2)
    assert slow.rate == 1.0 and quick.rate == 2.0
    assert quick.duration == pytest.approx(slow.duration / 2, rel=0.01)
    path = quick.save(tmp_path / "quick.flac")
    assert json.loads(sidecar_path(path).read_text())["speech_rate"] == 2.0

"""Reference clips that tests make themselves (docs/DESIGN.md: never downloaded).

`speech_clip` speaks English with espeak-ng when it is installed, so the voice
encoder, the S3 tokenizer and the clip validators see real speech; without espeak-ng
it falls back to a voice-like numpy signal (a harmonic sweep under a syllable
envelope) so tests still run on a bare Windows machine.  The other makers cover the
cases validators must reject or convert: silence, a pure tone, other containers.

Everything here uses numpy, scipy and soundfile only; no torch.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from math import gcd
from pathlib import Path

import numpy as np

SAMPLE_RATE = 24_000   # S3Gen's rate; upstream resamples whatever it gets anyway

DEFAULT_TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "Chatterbox clones a voice from a few seconds of clean speech. "
    "Please read this sentence slowly and clearly, one word at a time."
)


def espeak_available() -> bool:
    """True when an espeak-ng (or espeak) binary is on PATH."""
    return _espeak_binary() is not None


def _espeak_binary() -> str | None:
    return shutil.which("espeak-ng") or shutil.which("espeak")


def _resample(wav: np.ndarray, src_sr: int, dst_sr: int) -> np.ndarray:
    if src_sr == dst_sr:
        return wav
    from scipy.signal import resample_poly

    g = gcd(src_sr, dst_sr)
    return resample_poly(wav, dst_sr // g, src_sr // g).astype(np.float32)


def _fit_length(wav: np.ndarray, n: int, gap: int) -> np.ndarray:
    """Repeat `wav` (with `gap` samples of silence between takes) and cut to n samples."""
    if len(wav) >= n:
        return wav[:n]
    unit = np.concatenate([wav, np.zeros(gap, dtype=wav.dtype)])
    reps = int(np.ceil(n / len(unit)))
    return np.tile(unit, reps)[:n]


def espeak_speech(text: str = DEFAULT_TEXT, *, sr: int = SAMPLE_RATE, voice: str = "en",
                  speed_wpm: int = 150) -> np.ndarray:
    """Speak `text` with espeak-ng and return float32 mono at `sr`.

    Raises RuntimeError when espeak-ng is missing or fails, so callers choose the fallback.
    """
    import soundfile as sf

    exe = _espeak_binary()
    if exe is None:
        raise RuntimeError("espeak-ng is not installed")
    with tempfile.TemporaryDirectory(prefix="cbx_espeak_") as tmp:
        out = Path(tmp) / "speech.wav"
        proc = subprocess.run([exe, "-v", voice, "-s", str(speed_wpm), "-w", str(out), text],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"espeak-ng failed ({proc.returncode}): {proc.stderr.strip()}")
        wav, src_sr = sf.read(str(out), dtype="float32", always_2d=False)
    if wav.ndim > 1:
        wav = wav.mean(axis=1)
    return _resample(wav, int(src_sr), sr)


def voice_like(seconds: float, *, sr: int = SAMPLE_RATE, seed: int = 0,
               f0: float = 130.0) -> np.ndarray:
    """A speech-like numpy signal: gliding pitch, harmonics shaped by two moving formants,
    4 Hz syllable envelope with pauses. Not speech, but voiced, non-silent and non-tonal."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    # pitch glides slowly (intonation) and wobbles (vibrato)
    pitch = f0 * (1 + 0.15 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6.28))
                  + 0.02 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    f1 = 500 + 250 * np.sin(2 * np.pi * 1.7 * t + rng.uniform(0, 6.28))    # first formant
    f2 = 1500 + 600 * np.sin(2 * np.pi * 1.1 * t + rng.uniform(0, 6.28))   # second formant
    wav = np.zeros(n)
    for k in range(1, 30):
        fk = k * pitch
        gain = (np.exp(-((fk - f1) / 180.0) ** 2) + 0.6 * np.exp(-((fk - f2) / 250.0) ** 2)
                + 0.05 / k)
        wav += gain * np.sin(k * phase)
    # syllables: raised-cosine bumps at ~4 Hz with random pauses between phrases
    syll = 0.5 - 0.5 * np.cos(2 * np.pi * 4.0 * t)
    phrase = (np.sin(2 * np.pi * 0.35 * t + rng.uniform(0, 6.28)) > -0.6).astype(float)
    smooth = np.ones(int(0.03 * sr)) / int(0.03 * sr)
    env = np.convolve(syll * phrase, smooth, mode="same")
    wav = wav * env + 0.003 * rng.standard_normal(n) * env   # a little breath noise
    wav = wav / (np.abs(wav).max() + 1e-9) * 0.7
    return wav.astype(np.float32)


def speech(seconds: float = 8.0, *, text: str = DEFAULT_TEXT, sr: int = SAMPLE_RATE,
           seed: int = 0) -> tuple[np.ndarray, str]:
    """`seconds` of speech as float32; returns (wav, source) with source 'espeak' or 'synthetic'."""
    n = int(round(seconds * sr))
    try:
        wav = espeak_speech(text, sr=sr)
        source = "espeak"
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        wav = voice_like(seconds, sr=sr, seed=seed)
        source = "synthetic"
    wav = _fit_length(wav, n, gap=int(0.3 * sr))
    peak = float(np.abs(wav).max())
    if peak > 0:
        wav = wav / peak * 0.8
    return wav.astype(np.float32), source


def write(path: str | Path, wav: np.ndarray, sr: int = SAMPLE_RATE,
          subtype: str | None = None) -> Path:
    """Write mono audio; container and codec follow the suffix (cbx.audio.FORMATS:
    .wav is 16-bit PCM, .ogg Vorbis, .opus Opus) unless `subtype` names another."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = _format_for(path)
    sf.write(str(path), np.asarray(wav, dtype=np.float32), sr, format=fmt.container,
             subtype=subtype or fmt.codec)
    return path


def _format_for(path: Path):
    from ..audio import FORMATS

    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"unsupported clip suffix {path.suffix!r}; use one of "
                         f"{', '.join(FORMATS)}") from None


def can_write(suffix: str) -> bool:
    """Whether the installed libsndfile can write this container and codec (MP3 needs
    libsndfile >= 1.1, Opus >= 1.0.29)."""
    import soundfile as sf

    from ..audio import FORMATS

    fmt = FORMATS.get(suffix.lower())
    return (fmt is not None and fmt.container in sf.available_formats()
            and fmt.codec in sf.available_subtypes(fmt.container))


def speech_clip(path: str | Path, seconds: float = 8.0, text: str = DEFAULT_TEXT, *,
                sr: int = SAMPLE_RATE, seed: int = 0) -> Path:
    """Write `seconds` of speech (espeak-ng, else the synthetic voice) to `path`."""
    wav, _source = speech(seconds, text=text, sr=sr, seed=seed)
    return write(path, wav, sr)


def silent_clip(path: str | Path, seconds: float = 5.0, *, sr: int = SAMPLE_RATE) -> Path:
    """Digital silence: validators must reject it as a voice."""
    return write(path, np.zeros(int(round(seconds * sr)), dtype=np.float32), sr)


def tone_clip(path: str | Path, seconds: float = 5.0, *, freq: float = 440.0,
              amplitude: float = 0.5, sr: int = SAMPLE_RATE) -> Path:
    """A pure sine tone: loud enough to pass a silence check, but not a voice."""
    t = np.arange(int(round(seconds * sr))) / sr
    return write(path, (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)


def noise_clip(path: str | Path, seconds: float = 5.0, *, amplitude: float = 0.3,
               sr: int = SAMPLE_RATE, seed: int = 0) -> Path:
    """White noise: audible, not speech."""
    rng = np.random.default_rng(seed)
    wav = (amplitude * rng.uniform(-1, 1, int(round(seconds * sr)))).astype(np.float32)
    return write(path, wav, sr)


def speech_clip_as(path: str | Path, seconds: float = 8.0, text: str = DEFAULT_TEXT, *,
                   sr: int = SAMPLE_RATE, seed: int = 0) -> Path:
    """Speech written in the container the suffix names (.flac, .ogg, .mp3, .wav).

    Raises ValueError when libsndfile cannot write that container here; tests should
    `pytest.skip` on `not can_write(suffix)` first.
    """
    path = Path(path)
    if not can_write(path.suffix):
        raise ValueError(f"this soundfile/libsndfile cannot write {path.suffix} files")
    wav, _source = speech(seconds, text=text, sr=sr, seed=seed)
    return write(path, wav, sr)


def corrupt_clip(path: str | Path, *, size: int = 4096, seed: int = 0) -> Path:
    """A file with an audio suffix whose bytes are not audio (upload of the wrong file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    return path

"""The babble guard: is a finished chunk what its text predicts?

Chatterbox sometimes keeps going after the words (babble, breaths, noise) or runs to
its token budget. Three cheap checks catch that without a transcript:
- the duration against the text's expected length (cbx.text.estimate_seconds: ~15
  characters a second, ~5 for Chinese, Japanese and Korean);
- sound after the last speech: speech is voiced (energy in harmonics, a low spectral
  flatness), trailing noise is loud but flat;
- a note from speak() that the chunk hit its token budget.
`trim_tail` then cuts what follows the last speech down to a natural pause.

Layer 4; numpy only, imported inside functions.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..text import estimate_seconds

FRAME_SECONDS = 0.02
SILENCE_DB = -40.0          # frames quieter than the peak frame by this are silence
SPEECH_FLATNESS = 0.3       # voiced speech frames sit far below this; white noise ~0.5+
LONG_FACTOR = 2.0           # longer than twice the expected length, plus the slack
LONG_SLACK_SECONDS = 3.0
SHORT_FACTOR = 0.25         # shorter than a quarter, minus the slack
SHORT_SLACK_SECONDS = 0.5
TRAILING_NOISE_SECONDS = 1.0
NATURAL_PAUSE_SECONDS = 0.25
FADE_SECONDS = 0.01


@dataclass(frozen=True)
class Check:
    flags: tuple[str, ...]    # empty: the chunk looks right
    duration: float
    expected: float
    speech_end: float         # seconds: end of the last speech frame (0: none found)
    trailing: float           # seconds of sound (not silence, not speech) after it

    @property
    def ok(self) -> bool:
        return not self.flags


def _frames(wav, sample_rate: int):
    """Per 20 ms frame: level in dB below the loudest frame, and spectral flatness."""
    import numpy as np

    hop = max(1, int(FRAME_SECONDS * sample_rate))
    n = len(wav) // hop
    if n == 0:
        return np.zeros(0), np.zeros(0), hop
    frames = np.asarray(wav[:n * hop], dtype=np.float64).reshape(n, hop)
    rms = np.sqrt(np.mean(frames ** 2, axis=1)) + 1e-12
    level = 20 * np.log10(rms / rms.max())
    power = np.abs(np.fft.rfft(frames * np.hanning(hop), axis=1)) ** 2 + 1e-20
    flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
    return level, flatness, hop


def _last_speech(wav, sample_rate: int) -> tuple[int, int]:
    """(sample where the last speech ends, samples of sound after it). With no voiced
    frame at all (noise-like audio, e.g. a random-weight model's), the last sound
    counts as the end of speech."""
    import numpy as np

    level, flatness, hop = _frames(wav, sample_rate)
    sound = level > SILENCE_DB
    if not sound.any():
        return 0, 0
    voiced = np.flatnonzero(sound & (flatness < SPEECH_FLATNESS))
    end_frame = voiced[-1] + 1 if len(voiced) else np.flatnonzero(sound)[-1] + 1
    trailing_frames = int(sound[end_frame:].sum())
    return int(end_frame * hop), trailing_frames * hop


def check(wav, sample_rate: int, text: str, notes=(), rate: float = 1.0) -> Check:
    """Flags for one chunk's audio, each a sentence saying what looks wrong."""
    duration = len(wav) / float(sample_rate)
    expected = estimate_seconds(text, rate)
    end, trailing = _last_speech(wav, sample_rate)
    flags = []
    if duration > expected * LONG_FACTOR + LONG_SLACK_SECONDS:
        flags.append(f"{duration:.1f} s of audio for text that takes about "
                     f"{expected:.1f} s: it may babble or repeat.")
    elif duration < expected * SHORT_FACTOR - SHORT_SLACK_SECONDS:
        flags.append(f"only {duration:.1f} s of audio for text that takes about "
                     f"{expected:.1f} s: words may be missing.")
    if trailing / sample_rate > TRAILING_NOISE_SECONDS:
        flags.append(f"{trailing / sample_rate:.1f} s of noise after the last speech.")
    if any("token budget" in str(note).lower() for note in notes):
        flags.append("it hit the token budget (cut off, or babbling to the end).")
    return Check(tuple(flags), round(duration, 3), round(expected, 3),
                 round(end / sample_rate, 3), round(trailing / sample_rate, 3))


def trim_tail(wav, sample_rate: int):
    """`wav` with what follows the last speech cut to a natural pause, faded out."""
    import numpy as np

    end, _trailing = _last_speech(wav, sample_rate)
    keep = end + int(NATURAL_PAUSE_SECONDS * sample_rate)
    if end == 0 or keep >= len(wav):
        return wav
    out = np.array(wav[:keep], dtype=np.float32)
    fade = min(int(FADE_SECONDS * sample_rate), len(out))
    out[len(out) - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out

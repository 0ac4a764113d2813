"""Audio files cbx writes: the one table of export formats (suffix -> container and
codec) and the encoder that turns a float waveform into any of them.

Why soundfile: its bundled libsndfile (1.2.2 in soundfile 0.14.0's wheels) writes WAV,
FLAC, MP3 (LAME) and Ogg Vorbis/Opus, and reads each back sample-exact (MP3 with its
gapless header), so no second audio library is needed for export.

Layer 4 (beside synth.py); numpy, scipy and soundfile are imported inside functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import options
from .errors import EnvironmentNotSetup, InvalidSetting, SETUP_COMMAND
from .settings import SPEECH_RATE

DEFAULT_SUFFIX = ".wav"


@dataclass(frozen=True)
class AudioFormat:
    suffix: str                   # what the file name ends with
    container: str                # soundfile's format name
    codec: str                    # soundfile's subtype
    label: str                    # for people: the dashboard's choice, error messages
    mime: str                     # for the browser's <audio> and downloads
    rates: tuple[int, ...] = ()   # sample rates the codec takes (empty: any)


# The one suffix -> format table: Result.save, project export, the test clips and the
# page all read it. Opus only takes a few rates; other rates are resampled to 48 kHz.
FORMATS: dict[str, AudioFormat] = {f.suffix: f for f in (
    AudioFormat(".wav", "WAV", "PCM_16", "WAV (16-bit, lossless)", "audio/wav"),
    AudioFormat(".flac", "FLAC", "PCM_16", "FLAC (lossless, about half the size)",
                "audio/flac"),
    AudioFormat(".mp3", "MP3", "MPEG_LAYER_III", "MP3 (plays everywhere)", "audio/mpeg"),
    AudioFormat(".ogg", "OGG", "VORBIS", "Ogg Vorbis", "audio/ogg"),
    AudioFormat(".opus", "OGG", "OPUS", "Ogg Opus (smallest)", "audio/ogg",
                rates=(8000, 12000, 16000, 24000, 48000)),
)}
OPUS_FALLBACK_RATE = 48_000


def _supported() -> str:
    return ", ".join(FORMATS)


def format_for(path) -> AudioFormat:
    """The format a file name asks for; no suffix means WAV. An unknown suffix is an
    `invalid_setting` naming the ones cbx writes (never a silent switch to WAV)."""
    suffix = Path(path).suffix.lower()
    if not suffix:
        return FORMATS[DEFAULT_SUFFIX]
    try:
        return FORMATS[suffix]
    except KeyError:
        raise InvalidSetting(f"cbx cannot write {suffix!r} audio files.",
                             f"End the file name with one of: {_supported()}.") from None


def with_suffix(path) -> Path:
    """`path` with the default suffix added when it has none."""
    path = Path(path).expanduser()
    return path if path.suffix else path.with_suffix(DEFAULT_SUFFIX)


def encode_wav(wav, sample_rate: int) -> bytes:
    """16-bit mono WAV bytes of a float waveform, clipped to [-1, 1]: the one encoder
    for saved files, downloads and every player on the page."""
    import io
    import wave

    import numpy as np

    data = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(np.round(data * 32767.0).astype("<i2").tobytes())
    return buffer.getvalue()


def encode(wav, sample_rate: int, fmt: AudioFormat) -> tuple[bytes, int]:
    """The bytes of a mono file in `fmt` and the sample rate written (Opus may need a
    resample). Clipped to [-1, 1] like encode_wav, so every format sounds the same."""
    import io

    import numpy as np
    import soundfile as sf

    if fmt.container not in sf.available_formats() or \
            fmt.codec not in sf.available_subtypes(fmt.container):
        raise InvalidSetting(
            f"This installation's libsndfile ({sf.__libsndfile_version__}) cannot write "
            f"{fmt.label} files.",
            "Reinstall soundfile from its wheel (pip install --force-reinstall "
            "soundfile==0.14.0 bundles libsndfile 1.2 with MP3 and Opus), or save as "
            ".wav or .flac.")
    data = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
    rate = int(sample_rate)
    if fmt.rates and rate not in fmt.rates:
        data, rate = resample(data, rate, OPUS_FALLBACK_RATE), OPUS_FALLBACK_RATE
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format=fmt.container, subtype=fmt.codec)
    return buffer.getvalue(), rate


def resample(wav, src_rate: int, dst_rate: int):
    """Band-limited polyphase resampling (scipy), float32 out."""
    from math import gcd

    import numpy as np
    from scipy.signal import resample_poly

    if src_rate == dst_rate:
        return np.asarray(wav, dtype=np.float32)
    g = gcd(int(src_rate), int(dst_rate))
    return resample_poly(wav, dst_rate // g, src_rate // g).astype(np.float32)


def check_rate(value) -> float:
    """A speech rate from the settings table's range; None means 1 (unchanged). Any
    other rate needs the time-stretcher, checked here so a long generation is not
    made only to fail at its first chunk."""
    if value is None:
        return 1.0
    rate = options.number(SPEECH_RATE.name, value, SPEECH_RATE.low, SPEECH_RATE.high)
    if rate != 1.0:
        _time_stretch()
    return rate


def _time_stretch():
    """pedalboard's Rubber Band time_stretch, or `environment_not_setup`."""
    try:
        from pedalboard import time_stretch
    except ImportError as exc:
        raise EnvironmentNotSetup(
            f"Changing the speech rate needs pedalboard, which cannot be imported ({exc}).",
            f"Run `{SETUP_COMMAND}` (installs pedalboard), or use rate=1.") from None
    return time_stretch


def stretch(wav, sample_rate: int, rate: float):
    """`wav` spoken `rate` times as fast at the same pitch: Rubber Band's time-stretch
    (pedalboard), not a resample, which would shift the pitch by the same factor.
    Rate 1 returns the input untouched, so unstretched audio stays bit-exact."""
    import numpy as np

    if rate == 1.0:
        return wav
    data = np.asarray(wav, dtype=np.float32).reshape(1, -1)
    out = _time_stretch()(data, float(sample_rate), stretch_factor=float(rate))
    return np.ascontiguousarray(out[0], dtype=np.float32)

"""OpenAI's `response_format`s made from cbx's audio blocks, as they arrive.

Why encoders that take blocks: the server sends audio while the rest is still being
made. PCM and Ogg Opus lose nothing that way. WAV, MP3 and FLAC write the audio's
length into their header when the file is finished (WAV's sizes, MP3's LAME/Xing
frame for gapless length, FLAC's STREAMINFO), so by default they are sent whole,
headers right; a request that asks for `stream_format` gets them streamed with the
length left open (WAV's sizes 0xFFFFFFFF, no Xing frame, FLAC's "unknown" total),
which players accept. The same libsndfile (cbx.audio.FORMATS) writes every format.

numpy and soundfile are imported inside functions.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from .. import audio
from ..errors import InvalidSetting

PCM_RATE = 24_000          # OpenAI's pcm: 24 kHz, 16-bit signed little-endian, mono
UNKNOWN_SIZE = 0xFFFFFFFF  # a WAV size field whose length is not known yet


@dataclass(frozen=True)
class SpeechFormat:
    name: str               # OpenAI's response_format
    mime: str
    suffix: str | None      # cbx.audio.FORMATS key; None: raw PCM
    whole_by_default: bool  # its header holds the length (see the module docstring)


FORMATS: dict[str, SpeechFormat] = {f.name: f for f in (
    SpeechFormat("mp3", "audio/mpeg", ".mp3", True),
    SpeechFormat("opus", "audio/ogg", ".opus", False),
    SpeechFormat("flac", "audio/flac", ".flac", True),
    SpeechFormat("wav", "audio/wav", ".wav", True),
    SpeechFormat("pcm", "audio/pcm", None, False),
)}
# OpenAI offers aac too; libsndfile has no AAC encoder, and nothing else installed has
UNAVAILABLE = {"aac": "no installed library writes AAC (libsndfile has no AAC encoder)"}


def available() -> list[str]:
    """The response formats this installation can write."""
    import soundfile as sf

    names = []
    for fmt in FORMATS.values():
        spec = audio.FORMATS.get(fmt.suffix)
        if spec is None or (spec.container in sf.available_formats()
                            and spec.codec in sf.available_subtypes(spec.container)):
            names.append(fmt.name)
    return names


def check_format(name) -> SpeechFormat:
    """The format a request names, or `invalid_setting` naming those it can have."""
    if isinstance(name, str) and name in FORMATS and name in available():
        return FORMATS[name]
    why = f" ({UNAVAILABLE[name]})" if isinstance(name, str) and name in UNAVAILABLE else ""
    raise InvalidSetting(f"response_format={name!r} cannot be made here{why}.",
                         f"Use one of: {', '.join(available())}.")


def _pcm16(wav) -> bytes:
    import numpy as np

    data = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
    return np.round(data * 32767.0).astype("<i2").tobytes()


def wav_stream_header(sample_rate: int) -> bytes:
    """A 16-bit mono WAV header whose sizes say "unknown" (a stream's length)."""
    return (b"RIFF" + struct.pack("<I", UNKNOWN_SIZE) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", UNKNOWN_SIZE))


class Encoder:
    """Turns float blocks at the model's rate into the bytes of one response:
    `feed(wav)` returns what can be sent now, `finish()` the rest."""

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate

    def feed(self, wav) -> bytes:
        raise NotImplementedError

    def finish(self) -> bytes:
        raise NotImplementedError


class PcmEncoder(Encoder):
    """Raw PCM at 24 kHz; a WAV header first when `wav` (the streamed WAV)."""

    def __init__(self, sample_rate: int, wav: bool = False):
        super().__init__(sample_rate)
        self._header = wav_stream_header(PCM_RATE) if wav else b""

    def feed(self, wav) -> bytes:
        head, self._header = self._header, b""
        return head + _pcm16(audio.resample(wav, self.sample_rate, PCM_RATE))

    def finish(self) -> bytes:
        return self._header


class WholeEncoder(Encoder):
    """Keeps every block and writes the finished file (cbx.audio.encode), headers right."""

    def __init__(self, sample_rate: int, fmt: SpeechFormat):
        super().__init__(sample_rate)
        self.fmt = audio.FORMATS[fmt.suffix]
        self._blocks: list = []

    def feed(self, wav) -> bytes:
        self._blocks.append(wav)
        return b""

    def finish(self) -> bytes:
        import numpy as np

        wav = np.concatenate(self._blocks) if self._blocks else np.zeros(0, np.float32)
        return audio.encode(wav, self.sample_rate, self.fmt)[0]


class _Sink(io.RawIOBase):
    """The file libsndfile writes into: keeps what is written, hands out what has not
    been sent yet. A write behind what was sent (a header patched at close) cannot
    reach the client and is dropped from the stream."""

    def __init__(self):
        super().__init__()
        self.data = bytearray()
        self.position = 0
        self.sent = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = (0, self.position, len(self.data))[whence]
        self.position = base + offset
        return self.position

    def write(self, chunk) -> int:
        chunk = bytes(chunk)
        end = self.position + len(chunk)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[self.position:end] = chunk
        self.position = end
        return len(chunk)

    def take(self) -> bytes:
        out = bytes(self.data[self.sent:])
        self.sent = len(self.data)
        return out


class StreamEncoder(Encoder):
    """libsndfile writing the file block by block (Opus always; MP3 and FLAC when a
    stream is asked for). MP3's first frame is the LAME/Xing frame, a placeholder until
    the end, where it gets the frame count: it is left out, or decoders would trust
    its zeros."""

    def __init__(self, sample_rate: int, fmt: SpeechFormat):
        import soundfile as sf

        super().__init__(sample_rate)
        spec = audio.FORMATS[fmt.suffix]
        self.rate = sample_rate
        if spec.rates and sample_rate not in spec.rates:
            self.rate = audio.OPUS_FALLBACK_RATE
        self._sink = _Sink()
        self._file = sf.SoundFile(self._sink, "w", samplerate=self.rate, channels=1,
                                  format=spec.container, subtype=spec.codec)
        self._skip_xing = spec.container == "MP3"

    def feed(self, wav) -> bytes:
        import numpy as np

        data = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
        self._file.write(audio.resample(data, self.sample_rate, self.rate))
        return self._take()

    def finish(self) -> bytes:
        self._file.close()
        return self._take()

    def _take(self) -> bytes:
        out = self._sink.take()
        if self._skip_xing and out:
            self._skip_xing = False
            length = mp3_frame_length(out[:4])
            if length and (b"Xing" in out[:length] or b"Info" in out[:length]):
                out = out[length:]
        return out


_MP3_BITRATES = {1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
                 2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_frame_length(header: bytes) -> int | None:
    """Bytes in the MPEG layer III frame this 4-byte header starts (None: not one)."""
    if len(header) < 4 or header[0] != 0xFF or (header[1] & 0xE0) != 0xE0 \
            or ((header[1] >> 1) & 3) != 1:
        return None
    version = (header[1] >> 3) & 3          # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    bitrate_index, rate_index = header[2] >> 4, (header[2] >> 2) & 3
    if version not in _MP3_RATES or rate_index == 3 or bitrate_index in (0, 15):
        return None
    bitrate = _MP3_BITRATES[1 if version == 3 else 2][bitrate_index] * 1000
    rate = _MP3_RATES[version][rate_index]
    return (144 if version == 3 else 72) * bitrate // rate + ((header[2] >> 1) & 1)


def encoder(fmt: SpeechFormat, sample_rate: int, streamed: bool) -> Encoder:
    """The encoder for one response; `streamed` when the request asked for a stream."""
    if fmt.suffix is None:
        return PcmEncoder(sample_rate)
    if fmt.whole_by_default and not streamed:
        return WholeEncoder(sample_rate, fmt)
    if fmt.name == "wav":
        return PcmEncoder(sample_rate, wav=True)
    return StreamEncoder(sample_rate, fmt)


def sends_whole(fmt: SpeechFormat, streamed: bool) -> bool:
    return fmt.whole_by_default and not streamed

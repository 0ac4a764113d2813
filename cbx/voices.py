"""Reference voices: validate a clip and keep it in the on-disk voice library.

A clip is checked before the model ever sees it, so a bad upload fails in a second
with the exact reason instead of deep inside chatterbox. Accepted clips are copied
byte for byte into `<library>/<name>/clip.<ext>` with a `meta.json` beside them;
they survive kernel restarts. The conditionals the model computes from a clip are
cached beside it by cbx.engine.conditionals, which touches the model.

Layer 4: numpy/soundfile/librosa/IPython are imported inside functions only
(`import cbx` must stay light).
"""
from __future__ import annotations

import errno
import hashlib
import html
import io
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
import unicodedata
import uuid
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from . import paths
from .errors import CbxError, InvalidVoiceFile, VoiceFileNotFound
from .variants import DEFAULT_VARIANT, VARIANTS, Variant, get_variant

MAX_VOICE_BYTES = 50 * 1024 * 1024
"""Larger uploads are refused: a 50 MB clip is ~5 min of WAV, far beyond what any
variant reads (10-15 s), and decoding more only costs memory."""

SILENCE_DBFS = -60.0
"""RMS level (dB relative to full scale) below which the part the model reads counts
as silent. Speech recordings sit around -30 to -10 dBFS; room noise is about -60."""

QUIET_DBFS = -40.0
CLIPPING_PEAK = 0.999
LOW_SAMPLE_RATE = 16_000
META_FILE = "meta.json"
MAX_META_BYTES = 1024 * 1024      # a meta.json cbx writes is a few hundred bytes
MAX_NAME_LEN = 64
SUPPORTED_FORMATS = ("WAV", "FLAC", "OGG", "MP3")
BUILTIN_NAME = "built-in"

# soundfile's format name -> the extension the saved clip gets.
_FORMAT_EXT = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "W64": "w64", "FLAC": "flac",
               "OGG": "ogg", "MP3": "mp3", "AIFF": "aiff", "AU": "au", "CAF": "caf"}
_AUDIO_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,5}")
_AUDIO_EXTENSIONS = frozenset({"wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "m4a",
                               "aac", "aif", "aiff", "aifc", "au", "caf", "w64", "webm",
                               "wma", "mp4"})
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{p}{i}" for p in ("COM", "LPT") for i in range(10)}
)
_MAX_READ_SECONDS = max(v.voice_seconds_used for v in VARIANTS.values())
_STAGING_PREFIX = ".incoming-"
_STALE_STAGING_SECONDS = 24 * 3600


@dataclass
class Voice:
    """A reference voice: a validated clip in the library, or the variant's built-in one."""

    name: str
    path: Path | None            # the saved clip inside the library; None for built-in
    sha256: str | None           # of the clip file's bytes: the identity of the audio
    duration: float | None       # seconds
    sample_rate: int | None
    channels: int | None
    builtin: bool = False
    notes: list[str] = field(default_factory=list)
    original_name: str | None = None
    format: str | None = None
    created: str | None = None

    @classmethod
    def builtin_voice(cls) -> "Voice":
        """The voice shipped with a variant (its conds.pt), used when none is chosen."""
        return cls(name=BUILTIN_NAME, path=None, sha256=None, duration=None,
                   sample_rate=None, channels=None, builtin=True,
                   notes=["The model's own default voice (conds.pt in the model folder)."])

    @property
    def folder(self) -> Path | None:
        return None if self.path is None else self.path.parent

    def describe(self) -> str:
        """One line for the dashboard: what this voice is."""
        if self.builtin:
            return "Built-in voice of the model"
        layout = "mono" if self.channels == 1 else f"{self.channels} channels"
        return f"{self.name}: {self.duration:.1f} s, {self.sample_rate} Hz, {layout}"

    def _repr_html_(self) -> str:
        parts = [f"<div><b>{html.escape(self.describe())}</b>"]
        if self.notes:
            parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
                         + "</ul>")
        if self.path is not None:
            parts.append(_audio_player_html(self.path))
        parts.append("</div>")
        return "".join(parts)


BUILTIN_VOICE = Voice.builtin_voice()


def _audio_player_html(path: Path) -> str:
    try:
        from IPython.display import Audio
    except ImportError:
        return "<i>(install IPython to get a player here)</i>"
    try:
        return Audio(filename=str(path))._repr_html_()
    except OSError as exc:
        return f"<i>Cannot play {html.escape(str(path))}: {html.escape(str(exc))}</i>"


# --------------------------------------------------------------------------- names

def sanitize_name(name) -> str:
    """Turn any user- or browser-supplied name into a safe single folder name.

    Directories (either separator), drive letters, "..", control characters and the
    characters Windows forbids are removed; Windows device names (CON, NUL, COM1...)
    are prefixed; the result is at most MAX_NAME_LEN characters; an empty result
    becomes "voice". An audio file extension is dropped ("alice.wav" -> "alice").
    """
    text = unicodedata.normalize("NFC", "" if name is None else str(name))
    text = re.split(r"[\\/]", text)[-1]
    text = re.sub(r"^[A-Za-z]:", "", text).strip()
    stem, dot, ext = text.rpartition(".")
    if dot and stem and ext.lower() in _AUDIO_EXTENSIONS:
        text = stem
    return _clean_name(text)


def _clean_name(text: str) -> str:
    """The character-level rules of sanitize_name; a valid library name is a fixed point."""
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = "".join(ch if (ch.isalnum() or ch in "-_. ()'+,&") else "_" for ch in text)
    text = re.sub(r"\.{2,}", ".", text)
    text = re.sub(r"_{2,}", "_", re.sub(r"\s+", " ", text))
    text = text.strip(" ._-")
    if text.split(".")[0].strip().upper() in _WINDOWS_RESERVED:
        text = f"voice_{text}"
    text = text[:MAX_NAME_LEN].rstrip(" ._-")
    return text or "voice"


def _library(library) -> Path:
    return paths.voice_dir(library)


def _inside(library: Path, target: Path) -> bool:
    """True if target (resolved, symlinks followed) is a direct child of the library."""
    try:
        return target.resolve().parent == library.resolve()
    except OSError:
        return False


def _entry_dir(library: Path, name: str) -> Path:
    """The folder of an existing-or-new entry, refusing anything outside the library."""
    if not isinstance(name, str) or _clean_name(name) != name:
        raise VoiceFileNotFound(
            f"{name!r} is not a valid voice name.",
            "Pick a voice from list_voices(); names are plain folder names without "
            "slashes or '..'.",
        )
    folder = library / name
    if not _inside(library, folder):
        raise VoiceFileNotFound(
            f"Voice {name!r} resolves outside the voice library {library}.",
            "Remove the link or folder of that name from the voice library.",
        )
    return folder


# --------------------------------------------------------------------------- decoding

@dataclass
class _Decoded:
    samples: "object"      # numpy float32 array (frames, channels): the first seconds only
    sample_rate: int
    channels: int
    frames: int            # of the whole file
    format: str            # soundfile's format name, or "audioread"

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _sniff(data: bytes) -> str | None:
    """Name the container from the first bytes, to explain a decoding failure."""
    head = data[:16]
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "WAV"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "OGG"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    if head[4:8] == b"ftyp":
        return "MP4/M4A"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "WebM/Matroska"
    if head[:4] == b"FORM":
        return "AIFF"
    if head[:4] == b"MThd":
        return "MIDI"
    return None


def _looks_like_text(data: bytes) -> bool:
    sample = data[:4096]
    try:
        decoded = sample.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the 4096th byte is still text.
        try:
            decoded = sample[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in decoded)
    return bool(decoded) and printable / len(decoded) > 0.95


def _decode(data: bytes, suffix: str, display: str, variant: Variant) -> _Decoded:
    """Decode with soundfile (WAV/FLAC/OGG/MP3 in libsndfile >= 1.1), else librosa's
    audioread fallback, exactly the decoders chatterbox's librosa.load will use."""
    import numpy as np
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sr, channels, frames, fmt = f.samplerate, f.channels, f.frames, f.format
            samples = f.read(frames=min(frames, int(sr * _MAX_READ_SECONDS)),
                             dtype="float32", always_2d=True)
        if frames <= 0 or sr <= 0:
            raise InvalidVoiceFile(
                f"{display} is a {fmt} file with no audio in it (0 samples).",
                valid_clip_solution(variant),
            )
        return _Decoded(samples, sr, channels, frames, fmt)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        # LibsndfileError's str() names the BytesIO object; its error_string is the reason.
        sf_error = getattr(exc, "error_string", None) or str(exc)

    fallback = _decode_with_librosa(data, suffix)
    if fallback is not None:
        samples, sr, frames = fallback
        if frames > 0:
            samples = np.ascontiguousarray(np.atleast_2d(samples).T, dtype=np.float32)
            return _Decoded(samples, sr, samples.shape[1], frames, "audioread")

    kind = _sniff(data)
    if kind is None and _looks_like_text(data):
        snippet = data[:40].decode("utf-8", "replace").strip()
        message = f"{display} is a text file, not audio (it begins {snippet!r})."
    elif kind in SUPPORTED_FORMATS:
        message = (f"{display} looks like a {kind} file but cannot be decoded "
                   f"({sf_error}); it is probably damaged or incomplete.")
    elif kind is not None:
        message = (f"{display} is a {kind} file, which the installed audio decoders "
                   f"cannot read ({sf_error}).")
    else:
        message = (f"{display} is not a recognised audio file: neither WAV, FLAC, OGG "
                   f"nor MP3 ({sf_error}).")
    raise InvalidVoiceFile(message, valid_clip_solution(variant))


def _decode_with_librosa(data: bytes, suffix: str):
    """audioread (ffmpeg, GStreamer, Core Audio...) for what libsndfile cannot read;
    None when no installed backend can decode it either."""
    try:
        import librosa
    except ImportError:
        return None
    fd, tmp = tempfile.mkstemp(suffix=suffix or ".audio", prefix="cbx-voice-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        with warnings.catch_warnings():
            # librosa warns that soundfile failed and that audioread is deprecated;
            # we already know, and report the outcome ourselves.
            warnings.simplefilter("ignore")
            try:
                total = librosa.get_duration(path=tmp)
                samples, sr = librosa.load(tmp, sr=None, mono=False,
                                           duration=_MAX_READ_SECONDS)
            except Exception:   # noqa: BLE001 - audioread raises many unrelated types
                return None
        return samples, int(sr), int(round(total * sr))
    finally:
        Path(tmp).unlink(missing_ok=True)


def valid_clip_solution(variant: Variant) -> str:
    return (f"Use a WAV, FLAC, OGG or MP3 recording of one person speaking clearly, "
            f"longer than {variant.min_voice_seconds:g} s ({variant.label} reads the first "
            f"{variant.voice_seconds_used:g} s), no larger than "
            f"{MAX_VOICE_BYTES // (1024 * 1024)} MB.")


def check_duration(duration: float, display: str, variant: Variant) -> None:
    if duration <= variant.min_voice_seconds:
        raise InvalidVoiceFile(
            f"{display} is {duration:.2f} s long; {variant.label} needs a clip longer "
            f"than {variant.min_voice_seconds:g} s.",
            valid_clip_solution(variant),
        )


def _level_dbfs(rms: float) -> float:
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def _check_audio(decoded: _Decoded, display: str, variant: Variant) -> list[str]:
    """Validate decoded audio for a variant; return the notes the user should see."""
    import numpy as np

    check_duration(decoded.duration, display, variant)
    used = decoded.samples[: int(decoded.sample_rate * variant.voice_seconds_used)]
    if not np.all(np.isfinite(used)):
        raise InvalidVoiceFile(f"{display} contains invalid samples (NaN or infinity).",
                               valid_clip_solution(variant))
    mono = used.mean(axis=1)
    rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
    peak = float(np.max(np.abs(used)))
    level = _level_dbfs(rms)
    if level < SILENCE_DBFS or peak < 1e-4:
        raise InvalidVoiceFile(
            f"{display} is silent: its level is {level:.0f} dBFS (peak {peak:.5f}) over the "
            f"{min(decoded.duration, variant.voice_seconds_used):.1f} s the model reads; "
            f"speech is usually -30 to -10 dBFS.",
            "Check the microphone and record again. " + valid_clip_solution(variant),
        )
    return _notes(decoded.duration, decoded.sample_rate, decoded.channels, variant,
                  level=level, peak=peak)


def _notes(duration: float, sample_rate: int, channels: int, variant: Variant, *,
           level: float | None = None, peak: float | None = None) -> list[str]:
    notes = []
    if duration > variant.voice_seconds_used:
        notes.append(f"The clip is {duration:.1f} s; {variant.label} reads only the first "
                     f"{variant.voice_seconds_used:g} s.")
    if channels > 1:
        notes.append(f"The clip has {channels} channels; it is mixed down to mono.")
    if sample_rate < LOW_SAMPLE_RATE:
        notes.append(f"The clip's sample rate is {sample_rate} Hz; the model works at "
                     f"16/24 kHz, so the cloned voice may sound muffled.")
    if level is not None and level < QUIET_DBFS:
        notes.append(f"The clip is quiet ({level:.0f} dBFS); a louder recording usually "
                     f"clones better.")
    if peak is not None and peak >= CLIPPING_PEAK:
        notes.append("The clip reaches full scale (it may be clipped/distorted).")
    return notes


# --------------------------------------------------------------------------- library

def load_voice(source, name: str | None = None, *, variant: str = DEFAULT_VARIANT,
               library=None) -> Voice:
    """Validate a clip for `variant` and save it in the voice library (or reuse it).

    `source` is a path (str/PathLike), the bytes of an upload (bytes, bytearray or
    memoryview; then `name` is the upload's file name), a Voice, or the name of a
    saved voice. Same audio as a saved voice returns that voice (no duplicate); a
    new voice whose name is taken gets "-2", "-3"... Raises VoiceFileNotFound or
    InvalidVoiceFile with the exact reason.
    """
    v = get_variant(variant)
    lib = _library(library)
    if isinstance(source, Voice):
        return _for_variant(source, v, lib)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        original = name
        display = f"The upload {name!r}" if name else "The uploaded file"
        if len(data) > MAX_VOICE_BYTES:
            raise too_large_error(display, len(data), v)
    elif isinstance(source, (str, os.PathLike)):
        saved = _saved_voice_named(source, lib, v)
        if saved is not None:
            return saved
        path = Path(source).expanduser()
        data = _read_clip(path, v)
        original = path.name
        display = f"'{path}'"
    else:
        raise InvalidVoiceFile(
            f"A voice must be a file path or the bytes of an audio file, not "
            f"{type(source).__name__}.",
            "Pass the path of a WAV, FLAC, OGG or MP3 file, or upload one.",
        )
    if not data:
        raise InvalidVoiceFile(f"{display} is empty (0 bytes).", valid_clip_solution(v))

    suffix = Path(original or "").suffix.lower()
    suffix = suffix if _AUDIO_SUFFIX.fullmatch(suffix or "") else ""
    decoded = _decode(data, suffix, display, v)
    notes = _check_audio(decoded, display, v)

    sha = hashlib.sha256(data).hexdigest()
    for existing in _iter_entries(lib, warn=False):
        if existing.sha256 == sha:
            return replace(existing, notes=notes)

    ext = _FORMAT_EXT.get(decoded.format) or (suffix[1:] if suffix else "audio")
    meta = {
        "name": None,   # set once the folder name is final
        "original_name": original,
        "sha256": sha,
        "size": len(data),
        "clip": f"clip.{ext}",
        "format": decoded.format,
        "duration": decoded.duration,
        "sample_rate": decoded.sample_rate,
        "channels": decoded.channels,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    base = sanitize_name(name if name is not None else original)
    folder = _save_entry(lib, base, data, meta)
    voice = _voice_from_meta(folder, meta)
    voice.notes = notes
    return voice


def too_large_error(display: str, size: int, variant: Variant) -> InvalidVoiceFile:
    """The one "this clip is over the limit" error (files, uploads, the page's button,
    which checks the size in the browser and sends only name and size)."""
    return InvalidVoiceFile(
        f"{display} is {size / 2**20:.1f} MB, over the limit for a voice clip: the limit "
        f"is {MAX_VOICE_BYTES // 2**20} MB.",
        "Trim the clip to 10-20 s of speech (Chatterbox reads at most "
        f"{variant.voice_seconds_used:g} s) and use that.")


def read_capped(path: Path, limit: int, too_large) -> bytes:
    """Read at most `limit` bytes of the regular file `path`, whatever its size claims.

    The one reader for files a user names (clips, text files): anything but a regular
    file is an OSError before a byte is read, since opening a FIFO waits for a writer
    for ever and a device such as /dev/zero never ends. That is checked on the path,
    then again on the file opened without blocking, in case one was swapped in between.
    The size check is on what is read, not on `st_size`, which a growing file reports
    wrongly; `too_large(size)` makes the error for more than `limit`."""
    _require_regular(path.stat().st_mode, path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with open(fd, "rb") as handle:
        _require_regular(os.fstat(fd).st_mode, path)
        data = handle.read(limit + 1)
        size = max(len(data), os.fstat(fd).st_size)
    if len(data) > limit:
        raise too_large(size)
    return data


def _require_regular(mode: int, path: Path) -> None:
    if not stat.S_ISREG(mode):
        raise OSError(errno.EINVAL, "not a regular file (a folder, pipe or device)", str(path))


def _read_clip(path: Path, variant: Variant) -> bytes:
    valid = ("A valid voice is an existing audio file (WAV, FLAC, OGG or MP3), given by its "
             "full path, e.g. C:\\Users\\me\\voice.wav or /home/me/voice.wav.")
    if not path.exists():
        raise VoiceFileNotFound(f"The voice file '{path}' does not exist.",
                                f"Check the spelling and folder. {valid}")
    if path.is_dir():
        raise VoiceFileNotFound(f"'{path}' is a folder, not an audio file.",
                                f"Pick a file inside it. {valid}")
    if not path.is_file():
        raise VoiceFileNotFound(
            f"'{path}' is not a regular file (a pipe, device or socket cannot be a clip).",
            f"Save the recording to a file first. {valid}")
    try:
        return read_capped(path, MAX_VOICE_BYTES,
                           too_large=lambda size: too_large_error(f"'{path}'", size, variant))
    except PermissionError as exc:
        raise VoiceFileNotFound(f"The voice file '{path}' cannot be read: permission denied.",
                                "Copy it to a folder you own, or fix its permissions.") from exc
    except OSError as exc:
        raise VoiceFileNotFound(f"The voice file '{path}' cannot be read: {exc.strerror or exc}.",
                                f"Copy it to a local folder and try again. {valid}") from exc


def is_voice_name(source) -> bool:
    """The one rule for "a saved voice's name, not a clip's path": a string with no
    folder separator and no audio file extension, naming no existing file."""
    return (isinstance(source, str) and not any(sep in source for sep in ("/", "\\"))
            and source.rpartition(".")[2].lower() not in _AUDIO_EXTENSIONS
            and not Path(source).expanduser().exists())


def resolve_voice(source, variant: str = DEFAULT_VARIANT) -> Voice:
    """What speak() does with its `voice`: a clip path or bytes is validated and saved;
    any other string names a saved voice. Public so `cbx speak` can check the voice
    before the model loads, by the same rule."""
    if is_voice_name(source):
        return get_voice(source, variant=variant)
    return load_voice(source, variant=variant)


def _saved_voice_named(source, lib: Path, variant: Variant) -> Voice | None:
    """A plain name (see is_voice_name) that matches a saved voice."""
    if not is_voice_name(source):
        return None
    if _clean_name(source) != source or not (lib / source / META_FILE).is_file():
        return None
    return get_voice(source, library=lib, variant=variant.name)


def _save_entry(lib: Path, base: str, data: bytes, meta: dict) -> Path:
    """Write clip + meta.json into a hidden staging folder, then rename it into place,
    so other kernels never see a half-written voice."""
    try:
        lib.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(lib)
        staging = lib / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
        if not _inside(lib, staging):
            raise InvalidVoiceFile(f"Refusing to write outside the voice library {lib}.",
                                   "Choose another voice library folder (CBX_VOICE_DIR).")
        staging.mkdir()
    except OSError as exc:
        raise _storage_error(lib, exc) from exc
    try:
        (staging / meta["clip"]).write_bytes(data)
        taken = {p.name.casefold() for p in lib.iterdir()}
        for i in range(1, 10_000):
            suffix = "" if i == 1 else f"-{i}"
            candidate = base[: MAX_NAME_LEN - len(suffix)].rstrip(" ._-") + suffix
            if candidate.casefold() in taken:
                continue
            folder = lib / candidate
            if not _inside(lib, folder):
                raise InvalidVoiceFile(
                    f"Refusing to write outside the voice library {lib}.",
                    "Choose another voice library folder (CBX_VOICE_DIR).")
            meta["name"] = candidate
            _write_json(staging / META_FILE, meta)
            try:
                os.rename(staging, folder)
            except OSError:
                if folder.exists():   # another kernel took the name a moment ago
                    taken.add(candidate.casefold())
                    continue
                raise
            return folder
        raise InvalidVoiceFile(f"Too many voices named {base!r} in {lib}.",
                               "Give the voice another name, or delete unused ones.")
    except OSError as exc:
        raise _storage_error(lib, exc) from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _storage_error(lib: Path, exc: OSError) -> CbxError:
    return CbxError(
        f"Cannot save the voice in the library {lib}: {exc.strerror or exc}.",
        "Free some disk space and check that the folder is writable, or point "
        "CBX_VOICE_DIR at another folder.",
    )


def _remove_stale_staging(lib: Path) -> None:
    """Staging folders left by a kernel that died while saving (older than a day)."""
    now = time.time()
    for p in lib.glob(f"{_STAGING_PREFIX}*"):
        try:
            if now - p.stat().st_mtime > _STALE_STAGING_SECONDS:
                shutil.rmtree(p)
        except OSError as exc:
            warnings.warn(f"Could not remove the stale staging folder {p}: {exc}",
                          RuntimeWarning, stacklevel=3)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


class _BrokenEntry(Exception):
    pass


def _voice_from_meta(folder: Path, meta: dict) -> Voice:
    try:
        clip = folder / meta["clip"]
        voice = Voice(
            name=folder.name,
            path=clip,
            sha256=str(meta["sha256"]),
            duration=float(meta["duration"]),
            sample_rate=int(meta["sample_rate"]),
            channels=int(meta["channels"]),
            original_name=meta.get("original_name"),
            format=meta.get("format"),
            created=meta.get("created"),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise _BrokenEntry(f"{META_FILE} lacks or garbles {exc}") from exc
    if not (math.isfinite(voice.duration) and voice.duration > 0 and voice.sample_rate > 0
            and voice.channels > 0):
        raise _BrokenEntry(f"{META_FILE} has an impossible duration, rate or channel count")
    if Path(meta["clip"]).name != meta["clip"] or not _inside(folder, clip):
        raise _BrokenEntry(f"{META_FILE} points outside its folder ({meta['clip']!r})")
    if not re.fullmatch(r"[0-9a-f]{64}", voice.sha256):
        raise _BrokenEntry(f"{META_FILE} has an invalid sha256")
    return voice


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number cbx writes")


def _read_entry(folder: Path) -> Voice:
    meta_path = folder / META_FILE
    try:
        meta = json.loads(read_capped(meta_path, MAX_META_BYTES, too_large=lambda size:
                                      ValueError(f"{size} bytes is too large")),
                          parse_constant=_refuse_constant)
    except FileNotFoundError as exc:
        raise _BrokenEntry(f"no {META_FILE}") from exc
    except (OSError, ValueError, RecursionError) as exc:
        raise _BrokenEntry(f"unreadable {META_FILE} ({exc})") from exc
    if not isinstance(meta, dict):
        raise _BrokenEntry(f"{META_FILE} is not a JSON object")
    voice = _voice_from_meta(folder, meta)
    try:
        size = voice.path.stat().st_size
    except OSError as exc:
        raise _BrokenEntry(f"its clip {voice.path.name} is missing") from exc
    if "size" in meta and size != meta["size"]:
        raise _BrokenEntry(f"its clip {voice.path.name} is {size} bytes, "
                           f"{META_FILE} says {meta['size']}")
    return voice


def _iter_entries(lib: Path, *, warn: bool):
    if not lib.is_dir():
        return
    for folder in sorted(lib.iterdir(), key=lambda p: (p.name.casefold(), p.name)):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if _clean_name(folder.name) != folder.name:
            if warn:
                warnings.warn(f"Skipping voice library entry {folder.name!r}: cbx never "
                              "makes such a name (made by hand?). Rename the folder to "
                              f"{_clean_name(folder.name)!r} to use it.", RuntimeWarning,
                              stacklevel=3)
            continue
        if not _inside(lib, folder):
            if warn:
                warnings.warn(f"Skipping voice library entry {folder}: it links outside "
                              f"the library.", RuntimeWarning, stacklevel=3)
            continue
        try:
            yield _read_entry(folder)
        except _BrokenEntry as exc:
            if warn:
                warnings.warn(f"Skipping broken voice {folder.name!r} in {lib}: {exc}. "
                              f"Delete that folder or add the clip again.",
                              RuntimeWarning, stacklevel=3)


def list_voices(library=None, *, variant: str = DEFAULT_VARIANT) -> list[Voice]:
    """Saved voices sorted by name; broken entries are skipped with a RuntimeWarning.

    Each voice's notes are for `variant` (e.g. how much of the clip it reads).
    """
    v = get_variant(variant)
    voices = list(_iter_entries(_library(library), warn=True))
    for voice in voices:
        voice.notes = _notes(voice.duration, voice.sample_rate, voice.channels, v)
    return voices


def get_voice(name: str, library=None, *, variant: str = DEFAULT_VARIANT) -> Voice:
    """A saved voice by its library name (or the built-in voice for "built-in")."""
    if name == BUILTIN_NAME:
        return Voice.builtin_voice()
    lib = _library(library)
    folder = _entry_dir(lib, name)
    if not folder.is_dir():
        raise _not_saved(name, lib)
    try:
        voice = _read_entry(folder)
    except _BrokenEntry as exc:
        raise InvalidVoiceFile(f"The saved voice {name!r} is damaged: {exc}.",
                               f"Delete the folder {folder} and add the clip again.") from exc
    v = get_variant(variant)
    voice.notes = _notes(voice.duration, voice.sample_rate, voice.channels, v)
    return voice


def delete_voice(name: str, library=None) -> None:
    """Remove a saved voice and its cached conditionals from the library."""
    if name == BUILTIN_NAME:
        raise InvalidVoiceFile("The built-in voice is part of the model and cannot be deleted.",
                               "Pick a saved voice to delete.")
    lib = _library(library)
    folder = _entry_dir(lib, name)
    if not folder.is_dir():
        raise _not_saved(name, lib)
    shutil.rmtree(folder)


def _not_saved(name: str, lib: Path) -> VoiceFileNotFound:
    names = [v.name for v in _iter_entries(lib, warn=False)]
    have = f"Saved voices: {', '.join(names)}." if names else "The library is empty."
    return VoiceFileNotFound(f"No saved voice named {name!r} in {lib}.",
                             f"{have} Upload a clip to add one.")


def _for_variant(voice: Voice, variant: Variant, lib: Path) -> Voice:
    """Check a saved voice against a variant's clip rules; refresh its notes."""
    if voice.builtin:
        return replace(voice)
    check_duration(voice.duration, f"The voice {voice.name!r}", variant)
    return replace(voice, notes=_notes(voice.duration, voice.sample_rate, voice.channels,
                                       variant))


def library_folder(voice: Voice, library=None) -> Path:
    """The library folder of a saved voice, where what is derived from its clip is kept;
    the built-in voice and a clip outside the library have none."""
    if voice.builtin or voice.path is None or not voice.sha256:
        raise InvalidVoiceFile("The built-in voice has no folder in the voice library: it "
                               "ships with the model.", "Pass a saved voice.")
    lib = _library(library)
    folder = _entry_dir(lib, voice.name)
    if voice.path.parent.resolve() != folder.resolve():
        raise InvalidVoiceFile(
            f"The voice {voice.name!r} ({voice.path}) is not in the voice library {lib}.",
            "Add it with load_voice(path) first.",
        )
    return folder


def check_unchanged(voice: Voice, variant: Variant) -> None:
    """Before a model uses a saved voice: its clip still fits the variant and is still
    the audio it was saved as (a clip changed on disk would be cached under the old
    clip's key)."""
    check_duration(voice.duration, f"The voice {voice.name!r}", variant)
    try:
        data = voice.path.read_bytes()
    except OSError as exc:
        raise VoiceFileNotFound(f"The clip of voice {voice.name!r} ({voice.path}) cannot be "
                                f"read: {exc.strerror or exc}.",
                                "Add the clip again, or pick another voice.") from exc
    if hashlib.sha256(data).hexdigest() != voice.sha256:
        raise InvalidVoiceFile(
            f"The clip of voice {voice.name!r} changed on disk since it was saved.",
            f"Delete the voice (folder {voice.path.parent}) and add the clip again.",
        )

"""Speaking text of any length with a loaded model: chunking, seeds, progress, cancel.

Each chunk goes through chatterbox's own `generate()` with cbx's token loop
(cbx.engine.decode) in place of upstream's, which makes the same tokens, so the audio is
exactly what upstream makes for the same seed; cbx adds what a long text needs around it.
Layer 4: imports layers 1-3; torch is imported inside functions.
"""
from __future__ import annotations

import html
import itertools
import json
import os
import secrets
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import audio, envsettings
from . import batch, decode, interrupt
from .. import files
from ..files import sidecar_path
from .blocks import AudioBlock, BlockMaker
from .conditionals import prepare_conditionals
from .. import options, subtitles
from .. import text as textmod
from .. import voices as voicemod
from ..errors import (CbxError, CUDA_OOM_SOLUTION, GenerationCancelled, GenerationFailed, InvalidSetting, InvalidText, InvalidVoiceFile, NoVoiceLoaded, OutputExists)
from .fastload import attention_kernels
from .manager import free_cuda_cache, get_manager, is_cuda_oom
from ..settings import ALL_SETTINGS, DTYPES, SETTINGS
from ..variants import MULTILINGUAL_LANGUAGES, get_variant

MIN_ENGLISH_CFG_WEIGHT = 1e-3
PAUSE_SECONDS = 0.3          # silence between chunks: a short breath between sentences
PROGRESS_INTERVAL = 0.25     # seconds between token-level progress callbacks
# A chunk whose generation fails after at most this many speech tokens made (almost) no
# speech: S3Gen cannot decode so few ("Kernel size can't be greater than actual input
# size"). It is retried with the next seeds, this many times.
FEW_TOKENS = 3
NO_SPEECH_RETRIES = 2


class CancelToken:
    """Set from any thread to stop a generation; checked between tokens."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def _guarded(name: str, function):
    """`function`, the caller's own code (a callback, a cancel object's `cancelled`),
    made to end the generation as generation_failed naming it when it raises: the fault
    is the caller's, so it must be neither retried as a chunk without speech nor blamed
    on the text or the model. A CbxError passes as it is (raised on purpose, e.g. to
    cancel). None (no callback) stays None."""
    if function is None:
        return None

    def call(*args):
        try:
            return function(*args)
        except CbxError:
            raise
        except Exception as exc:
            raise GenerationFailed(
                f"Your {name} raised {type(exc).__name__}: {exc}",
                f"Fix the {name} (the traceback shows where it failed); the text and the "
                "model are fine. Any chunks finished before it are kept in .partial.",
                traceback="".join(traceback.format_exception(type(exc), exc,
                                                             exc.__traceback__))) from exc
    return call


class _LinkedToken(CancelToken):
    """The token a generation runs under: cancelled by cbx (Cancel, Unload, a closed
    stream) or when the caller's own cancel object says so. Setting it never touches
    the caller's object, and the caller's `cancelled` is read through `_guarded`.
    `busy_hint` (message, fix) is what the model manager tells a second caller while
    this generation holds the model."""

    def __init__(self, caller=None, busy_hint: tuple[str, str] | None = None):
        super().__init__()
        if caller is not None and not isinstance(
                _guarded("cancel object", getattr)(caller, "cancelled", None), bool):
            raise InvalidSetting(f"cancel={caller!r} is not a cancel token.",
                                 "Pass a cbx.CancelToken() (or None).")
        self._caller = caller
        self.busy_hint = busy_hint

    @property
    def cancelled(self) -> bool:
        return super().cancelled or (self._caller is not None and _guarded(
            "cancel object", getattr)(self._caller, "cancelled"))


@dataclass(frozen=True)
class Progress:
    chunk: int            # 1-based index of the chunk being generated
    total: int            # number of chunks
    tokens: int           # speech tokens sampled so far in this chunk
    elapsed: float        # seconds since speak() started
    eta: float | None     # estimated seconds left (None until one chunk has finished)
    stage: str            # "loading", "voice", "tokens", "chunk_done"


class _Stop(Exception):
    """Raised inside the token loop to abandon the current chunk on cancel."""


@dataclass
class Result:
    wav: "object"                 # float32 numpy array, mono
    sample_rate: int
    text: str
    voice: str
    variant: str
    seed: int
    settings: dict
    chunks: list[str]
    timings: dict
    device: str
    dtype: str
    language: str | None = None
    notes: list[str] = field(default_factory=list)
    voice_sha256: str | None = None
    watermarked: bool = True      # False when Perth's watermarker could not be built
    rate: float = 1.0             # speech rate the audio was time-stretched to
    spans: list = field(default_factory=list)   # each chunk's (start_s, end_s) in wav
    chapters: list = field(default_factory=list)  # (start_s, title): a project's headings
    created: str = field(default_factory=lambda: datetime.now(timezone.utc)
                         .isoformat(timespec="seconds"))

    @property
    def duration(self) -> float:
        return len(self.wav) / float(self.sample_rate)

    def metadata(self) -> dict:
        """Everything needed to reproduce this audio (written next to it by save())."""
        from importlib import metadata

        versions = {}
        for dist in ("chatterbox-tts", "torch", "cbx"):
            try:
                versions[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                versions[dist] = None
        return {
            "text": self.text, "voice": self.voice, "voice_sha256": self.voice_sha256,
            "variant": self.variant, "language": self.language, "seed": self.seed,
            "settings": self.settings, "device": self.device, "dtype": self.dtype,
            "sample_rate": self.sample_rate, "duration_seconds": round(self.duration, 3),
            "chunks": self.chunks, "timings": self.timings, "notes": self.notes,
            "chunk_spans": [[round(start, 3), round(end, 3)] for start, end in self.spans],
            "watermarked": self.watermarked, "speech_rate": self.rate,
            "created": self.created, "versions": versions,
        }

    def to_wav_bytes(self) -> bytes:
        return audio.encode_wav(self.wav, self.sample_rate)

    def save(self, path, *, overwrite: bool = False, unique: bool = False) -> Path:
        """Write the audio in the format its suffix names (.wav, .flac, .mp3, .ogg,
        .opus; no suffix: .wav; see cbx.audio.FORMATS) and its settings sidecar
        (`sidecar_path`: take.mp3 -> take.mp3.json), and return where.

        A name the caller chose is the user's choice: when the audio or its sidecar is
        there, `output_exists`, unless `overwrite=True` replaces both. `unique=True` is
        for names cbx picks itself (the dashboard's takes, `cbx speak` without -o): a
        taken name becomes take-2.mp3, take-3.mp3, ... Both files go to temporaries
        first and are put in place together (cbx.files.write_group), so a full disk or
        any other failure is `output_not_saved` and leaves neither of them."""
        if overwrite and unique:
            raise InvalidSetting("save() was given both overwrite=True and unique=True.",
                                 "Pass one: overwrite replaces the file, unique picks the "
                                 "next free name.")
        path = audio.with_suffix(path)
        if path.suffix.lower() in subtitles.SUBTITLE_SUFFIXES:
            if not (overwrite or unique):
                refuse_existing(path)
            data = self._subtitles(path).encode("utf-8")
            return _write_files(path, {path: data}, overwrite=overwrite, unique=unique)
        fmt = audio.format_for(path)
        if not (overwrite or unique):
            refuse_existing(path)           # before minutes of encoding a long take
        data, written_rate = audio.encode(self.wav, self.sample_rate, fmt)
        meta = self.metadata()
        meta["file"] = {"format": fmt.container, "codec": fmt.codec,
                        "sample_rate": written_rate}
        sidecar = json.dumps(meta, indent=2).encode("utf-8")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise files.not_saved(path, exc) from exc
        return _write_files(path, {path: data, sidecar_path(path): sidecar},
                            overwrite=overwrite, unique=unique)

    def _subtitles(self, path: Path) -> str:
        """The subtitles `path` names: cues (.srt, .vtt), or the chapters track
        (.chapters.vtt, a project's Markdown headings)."""
        if not path.name.lower().endswith(subtitles.CHAPTERS_SUFFIX):
            return subtitles.subtitles_for(path.suffix, self.cues())
        if not self.chapters:
            raise InvalidSetting("This audio has no chapters: they come from a project's "
                                 "Markdown headings (# Title).",
                                 "Export a project made from Markdown, or save .vtt "
                                 "subtitles instead.")
        return subtitles.to_vtt_chapters(self.chapters, self.duration)

    def cues(self) -> list:
        """Subtitle cues timed from this audio (cbx.subtitles): each chunk's speech,
        found in its span of the joined audio, pauses and speech rate included."""
        pieces = [(chunk, start, end) for chunk, (start, end) in zip(self.chunks, self.spans)
                  if textmod.pause_seconds(chunk) is None]
        return subtitles.make_cues(self.wav, self.sample_rate, pieces)

    def _repr_html_(self) -> str:
        from IPython.display import Audio

        player = Audio(self.wav, rate=self.sample_rate)._repr_html_()
        return (f"<div><b>{len(self.text)} characters</b>, voice "
                f"<i>{html.escape(str(self.voice))}</i>, "
                f"seed {html.escape(str(self.seed))}, {self.duration:.1f} s of audio in "
                f"{self.timings.get('total', 0):.1f} s</div>{player}")


def _output_exists(path: Path, existing: Path) -> OutputExists:
    whose = "" if existing == path else f" (the settings file {path.name} would get)"
    return OutputExists(f"{existing} already exists{whose}.",
                        "Choose another file name, or pass overwrite=True to replace it "
                        "and its settings file (cbx speak: --overwrite).")


def refuse_existing(path) -> None:
    """`output_exists` when the audio file `path` or its sidecar is already there: a
    name the user chose is never changed, nor its file replaced unasked."""
    path = Path(path)
    for existing in (path, sidecar_path(path)):
        if os.path.lexists(existing):
            raise _output_exists(path, existing)


def _write_files(path: Path, items: dict, *, overwrite: bool, unique: bool) -> Path:
    """Put `items` ({name: bytes}, named after `path`: the file and its sidecar, if it
    has one) in place, all or none; with `unique`, at the first `name-N` whose names
    are all free. Returns where the file went."""
    for number in itertools.count(1):
        target = (path if number == 1
                  else path.with_name(f"{path.stem}-{number}{path.suffix}"))
        named = {target if name == path else sidecar_path(target): data
                 for name, data in items.items()}
        if unique and any(os.path.lexists(p) for p in named):
            continue
        try:
            files.write_group(named, overwrite=overwrite)
            return target
        except FileExistsError as exc:  # taken since the check: another save got there
            if not unique:
                raise _output_exists(target, Path(exc.filename)) from None
    raise AssertionError("unreachable")   # itertools.count never ends


def _check_settings(variant: str, settings: dict) -> tuple[dict, list[str]]:
    """Fill upstream defaults, range-check, and say which settings the variant ignores."""
    spec = get_variant(variant)
    unknown = set(settings) - set(ALL_SETTINGS)
    if unknown:
        raise InvalidSetting(f"Unknown setting(s): {', '.join(sorted(unknown))}.",
                             f"Use only: {', '.join(ALL_SETTINGS)}.")
    merged = dict(spec.defaults)
    notes = []
    for name, value in settings.items():
        if value is None:
            continue
        value = options.number(name, value, SETTINGS[name].low, SETTINGS[name].high)
        if name in spec.ignored_settings:
            if value != float(spec.defaults[name]):
                notes.append(f"{spec.label} ignores {name}; it was not used.")
            continue
        merged[name] = value
    if variant == "original" and merged["cfg_weight"] == 0.0:
        # chatterbox 0.1.7's English generate() crashes at exactly 0 (it doubles the
        # start token for CFG but not the text); a negligible weight is the same sound.
        merged["cfg_weight"] = MIN_ENGLISH_CFG_WEIGHT
        notes.append(f"cfg_weight 0 was run as {MIN_ENGLISH_CFG_WEIGHT} (chatterbox "
                     "0.1.7 cannot run exactly 0 for the English model).")
    return merged, notes


def check_options(options_: dict) -> dict:
    """speak()'s own checks of the options a caller keeps for later calls (a project's
    settings), before anything loads: the same rules, so a typo'd, NaN or out-of-range
    value is refused at once instead of failing every chunk later. Returns them."""
    kept = {k: v for k, v in options_.items() if v is not None}
    variant = get_variant(kept.get("variant", "original")).name
    if "device" in kept:
        options.device(kept["device"])
    if "dtype" in kept:
        options.choice("dtype", kept["dtype"], DTYPES)
    if "language" in kept:
        _resolve_language(variant, kept["language"])       # its note comes with speak()
    _check_settings(variant, {k: v for k, v in kept.items()
                              if k not in ("variant", "device", "dtype", "language")})
    return kept


def _upstream_kwargs(variant: str, settings: dict, language: str | None) -> dict:
    """The keyword arguments chatterbox's generate() of this variant accepts."""
    kwargs = dict(settings)
    if variant == "multilingual":
        kwargs["language_id"] = language
    return kwargs


def _resolve_language(variant: str, language) -> tuple[str | None, list[str]]:
    """The language to generate in (None: the variant has no choice of language), and
    the notes to add. Nothing given means English. A value that is not a language code
    is refused whatever the variant, so a typo or a list never passes silently; a known
    code given to an English-only variant is not used, and a note says so."""
    spec = get_variant(variant)
    if language is None:
        return ("en" if spec.languages else None), []
    if not isinstance(language, str):
        raise InvalidSetting(f"language={language!r} is not a language code.",
                             "Pass one code as text, such as 'fr', with "
                             "variant='multilingual'; leave it out for English.")
    code = language.lower()
    if spec.languages:
        if code not in spec.languages:
            raise InvalidSetting(f"Language {language!r} is not supported by {spec.label}.",
                                 f"Use one of: {', '.join(spec.languages)}.")
        return code, []
    if code not in MULTILINGUAL_LANGUAGES:
        raise InvalidSetting(f"Language {language!r} is not a language code cbx knows.",
                             f"Leave language out ({spec.label} speaks English only), or "
                             "use variant='multilingual' with one of: "
                             f"{', '.join(MULTILINGUAL_LANGUAGES)}.")
    return None, [f"{spec.label} speaks English only and ignores language={language!r}; "
                  "it was not used."]


def _unknown_characters(tts, text: str) -> set[str]:
    """Characters the model's tokenizer maps to [UNK] (they are not spoken)."""
    inner = getattr(getattr(tts, "tokenizer", None), "tokenizer", None)
    if inner is None or not hasattr(inner, "token_to_id"):
        return set()  # byte-level BPE (Turbo) has no unknown characters
    unk = inner.token_to_id("[UNK]")
    if unk is None:
        return set()
    return {ch for ch in set(text) if not ch.isspace() and unk in inner.encode(ch).ids}


VOICE_TYPES = (str, os.PathLike, bytes, bytearray, memoryview, voicemod.Voice)


def _check_call(voice, progress, on_chunk, on_block=None) -> None:
    """The non-setting arguments of speak(), checked before anything loads."""
    if voice is not None and not isinstance(voice, VOICE_TYPES):
        raise InvalidVoiceFile(
            f"A voice must be a saved voice's name, a file path or the bytes of an audio "
            f"file, not {type(voice).__name__}.",
            "Pass the path of a WAV, FLAC, OGG or MP3 file, a name from "
            "cbx.saved_voices(), or None for the built-in voice.")
    for name, value in (("progress", progress), ("on_chunk", on_chunk),
                        ("on_block", on_block)):
        if value is not None and not callable(value):
            raise InvalidSetting(f"{name}={value!r} is not a function.",
                                 f"Pass a function (or None) as {name}.")


def _resolve_conditionals(loaded, voice, variant: str, exaggeration: float):
    """Return (conditionals, voice name, voice sha) for the requested voice."""
    if voice is None or (isinstance(voice, voicemod.Voice) and voice.builtin):
        if loaded.builtin_conds is None:
            raise NoVoiceLoaded(
                "No voice is loaded and this model has no built-in voice (conds.pt).",
                "Upload a reference clip (5-10 s of clear speech) or pick a saved voice.")
        return loaded.builtin_conds, "built-in", None
    if not isinstance(voice, voicemod.Voice):
        voice = voicemod.resolve_voice(voice, variant)
    key = (voice.sha256, variant)
    conds = loaded.conds_cache.get(key)
    if conds is None:
        conds = prepare_conditionals(loaded.tts, voice, variant, exaggeration=exaggeration)
        loaded.conds_cache[key] = conds
    return conds, voice.name, voice.sha256


def speak(text: str, voice=None, *, variant: str | None = None, device: str | None = None,
          dtype: str | None = None, seed: int | None = None, language: str | None = None,
          max_chunk_chars: int = textmod.DEFAULT_MAX_CHARS,
          first_chunk_chars: int | None = textmod.DEFAULT_FIRST_CHUNK_CHARS,
          progress=None, cancel: CancelToken | None = None, on_chunk=None, model_dir=None,
          rate: float = 1.0, on_block=None, batch_size: int | str | None = None,
          **settings) -> Result:
    """Speak `text` in `voice` (a Voice, a saved voice's name, a clip path or None for
    the built-in voice), loading the model on first use. `variant`, `device` and
    `dtype` default to the loaded model's (else original, auto, float32).

    The text is never truncated: it is split into sentence chunks of at most
    `max_chunk_chars` characters and the audio joined with short pauses. The first
    chunk holds whole sentences only up to `first_chunk_chars` (at least one sentence;
    None packs it like the others), and `on_chunk(index, total, wav, sample_rate)` is
    called as each chunk finishes, before the next one starts, so a caller can play the
    first audio while the rest is made. Chunk i is generated with seed `seed + i`, so
    the same inputs give the same audio and each chunk equals upstream `generate()` of
    that chunk after `torch.manual_seed(seed + i)`. Cancel (token or manager) stops
    at the next T3 token or S3Gen stage (cbx.engine.interrupt) and raises
    `generation_cancelled` carrying the finished chunks as `.partial`. `rate` (0.5-2) speeds the speech up or slows it down at the
    same pitch (cbx.audio.stretch), each chunk before on_chunk sees it; 1 leaves the
    audio exactly as generated. `on_block(AudioBlock)` gets the audio in contiguous
    blocks as soon as each is made, the first after about 0.8 s of speech has been
    decoded (cbx.engine.blocks; `stream()` is the generator form). An exception raised by a
    callback (or by a cancel object's `cancelled`) ends the call as `generation_failed`
    naming it, never retried. `language` is the multilingual variant's; the English
    ones ignore a valid code and say so in the notes. `batch_size` chunks after the
    first are decoded together (cbx.engine.batch; 'auto' by default, or CBX_BATCH):
    reproducible for the same seed, batch size, device and dtype, and 1 is the
    sequential path above exactly.
    """
    try:
        return _speak(text, voice, variant=variant, device=device, dtype=dtype, seed=seed,
                      language=language, max_chunk_chars=max_chunk_chars,
                      first_chunk_chars=first_chunk_chars, progress=progress,
                      cancel=cancel, on_chunk=on_chunk, model_dir=model_dir, rate=rate,
                      on_block=on_block, batch_size=batch_size, **settings)
    except CbxError as exc:
        error = exc
    # Raised again out here, stripped of tracebacks: their frames reference the model,
    # and an error kept on screen must not keep gigabytes alive after Unload.
    error.__traceback__ = error.__context__ = error.__cause__ = None
    raise error


@dataclass
class _Request:
    """A speak() call with every input checked and every default filled in."""

    text: str
    chunks: list[str]
    voice: object
    variant: str
    device: str
    dtype: str
    language: str | None
    settings: dict
    notes: list[str]
    seed: int
    cancel: CancelToken
    model_dir: object
    progress: object
    on_chunk: object
    started: float = field(default_factory=time.perf_counter)
    timings: dict = field(default_factory=dict)
    rate: float = 1.0
    on_block: object = None
    batch_size: int | str = "auto"

    def report(self, chunk: int, tokens: int, stage: str, eta: float | None = None) -> None:
        if self.progress is not None:
            self.progress(Progress(chunk, len(self.chunks), tokens,
                                   time.perf_counter() - self.started, eta, stage))


@dataclass
class _Take:
    """What every Result of one speak() call shares; `result()` joins the pieces."""

    request: _Request
    sample_rate: int
    voice_name: str
    voice_sha: str | None
    device: str
    dtype: str
    watermarked: bool

    def result(self, pieces: list, chunks: list[str]) -> Result:
        import numpy as np

        req = self.request
        pause = np.zeros(int(PAUSE_SECONDS / req.rate * self.sample_rate),
                         dtype=np.float32)
        joined, spans, at = [], [], 0
        for i, piece in enumerate(pieces):
            if _breath_between(chunks, i):
                joined.append(pause)
                at += len(pause)
            joined.append(piece)
            spans.append((at / self.sample_rate, (at + len(piece)) / self.sample_rate))
            at += len(piece)
        req.timings["total"] = round(time.perf_counter() - req.started, 3)
        return Result(wav=np.concatenate(joined).astype(np.float32),
                      sample_rate=self.sample_rate, text=req.text, voice=self.voice_name,
                      variant=req.variant, seed=req.seed, settings=req.settings,
                      chunks=list(chunks), timings=dict(req.timings), device=self.device,
                      dtype=self.dtype, language=req.language, notes=list(req.notes),
                      voice_sha256=self.voice_sha, watermarked=self.watermarked,
                      rate=req.rate, spans=spans)

    def partial(self, pieces: list) -> Result | None:
        """The chunks finished before a cancel or failure (None: none was)."""
        return self.result(pieces, self.request.chunks[:len(pieces)]) if pieces else None


def _resolve(text, voice, *, variant, device, dtype, seed, language, max_chunk_chars,
             first_chunk_chars, progress, cancel, on_chunk, model_dir, rate=1.0,
             on_block=None, batch_size=None, **settings) -> _Request:
    """Check every input before anything loads. Unspecified variant, device and dtype
    mean "what is loaded", so speak() after load(dtype="bfloat16") or load(device="cpu")
    never silently reloads."""
    text = textmod.validate_text(text)
    seed = options.seed(seed)
    rate = audio.check_rate(rate)
    batch_size = envsettings.batch_size() if batch_size is None \
        else options.batch_size(batch_size)
    _check_call(voice, progress, on_chunk, on_block)
    # a caller's cbx.CancelToken is used as it is: Cancel and Unload set it, as before
    cancel = cancel if isinstance(cancel, CancelToken) else _LinkedToken(cancel)
    current = get_manager().loaded
    variant = get_variant(variant or (current.variant if current else "original")).name
    device = options.device(device or (current.device if current else "auto"))
    dtype = options.choice("dtype", dtype or (current.dtype if current else "float32"),
                           DTYPES)
    language, language_notes = _resolve_language(variant, language)
    merged, notes = _check_settings(variant, settings)
    notes += language_notes
    # split_text checks both sizes (InvalidSetting) before anything is loaded
    chunks = textmod.split_text(text, max_chars=max_chunk_chars,
                                first_chunk_chars=first_chunk_chars)
    return _Request(text=text, chunks=chunks, voice=voice, variant=variant, device=device,
                    dtype=dtype, language=language, settings=merged, notes=notes,
                    seed=seed if seed is not None else secrets.randbelow(2**31),
                    cancel=cancel, model_dir=model_dir,
                    progress=_guarded("progress callback", progress),
                    on_chunk=_guarded("on_chunk callback", on_chunk), rate=rate,
                    on_block=_guarded("on_block callback", on_block),
                    batch_size=batch_size)


def _speak(text, voice, **call) -> Result:
    req = _resolve(text, voice, **call)
    manager = get_manager()
    req.report(0, 0, "loading")
    was_loaded = manager.loaded is not None
    manager.load(req.variant, device=req.device, dtype=req.dtype, model_dir=req.model_dir)
    req.timings["load"] = 0.0 if was_loaded else round(time.perf_counter() - req.started, 2)
    with manager.generation(req.cancel) as loaded, \
            interrupt.cancel_points(loaded.tts, _stop_check(lambda: req.cancel)):
        take, conds = _prepare(req, loaded)
        return _chunk_loop(req, take, loaded.tts, conds)


def _stop_check(token):
    """What S3Gen's cancel points call: abandon the chunk once the cancel token that
    `token()` gives (in a batch, that of the row whose S3Gen pass runs) is set."""
    def check():
        if token().cancelled:
            raise _Stop
    return check


def speak_chunks(texts: list, voice=None, *, seeds: list, make: list | None = None,
                 **options) -> list:
    """One Result per text of `texts`, each one chunk (never split) made with its seed
    from `seeds`, their T3 tokens decoded in one batch (cbx.engine.batch). Texts that
    `make` marks False are decoded but not turned into audio (None in their place), so
    a resumed project decodes the very batch an uninterrupted run decoded. Takes
    speak()'s options but not on_block. The first error of any text is raised."""
    if not isinstance(texts, (list, tuple)) or not texts or \
            not isinstance(seeds, (list, tuple)) or len(seeds) != len(texts):
        raise InvalidSetting("speak_chunks() takes a list of texts and one seed for each.",
                             "Pass texts=[...] and seeds=[...] of the same length.")
    make = [True] * len(texts) if make is None else list(make)
    calls = [{"max_chunk_chars": max(len(text) for text in texts), **options,
              "text": text, "voice": voice, "seed": seed, "first_chunk_chars": None}
             for text, seed in zip(texts, seeds)]
    try:
        requests, refused = _resolve_rows(calls)
        for error in refused.values():
            raise error
        out = _make_rows(requests, make)
        for item in out:
            if isinstance(item, CbxError):
                raise item
        return out
    except CbxError as exc:
        exc.__traceback__ = exc.__context__ = exc.__cause__ = None
        raise


def speak_together(calls: list) -> list:
    """Several speak() calls of one chunk each, made as one: their T3 tokens decoded in
    one batch (cbx.engine.batch), each call with its own voice, settings, seed, rate and
    cancel token, then each turned into audio. It is how the server serves requests
    that wait at the same time. `calls` holds speak()'s keyword arguments, `text`
    included. Returns each call's Result, or the CbxError that call met, in order: one
    call's bad input, missing voice or cancel does not stop the others. A call whose
    text speak() would split, or whose model differs from the first call's, is refused
    (to be made alone). Cancel reaches a call at its next S3Gen stage; the batch's T3
    steps end once every call is cancelled."""
    if not isinstance(calls, (list, tuple)) or not calls or \
            not all(isinstance(call, dict) for call in calls):
        raise InvalidSetting("speak_together() takes a list of speak() calls as dicts.",
                             "Pass [{'text': ..., 'voice': ...}, ...].")
    requests, refused = _resolve_rows(list(calls))
    out = _make_rows(requests, [True] * len(calls)) if requests else [None] * len(calls)
    for i, error in refused.items():
        out[i] = error
    return out


def _resolve_rows(calls: list) -> tuple[dict, dict]:
    """Each call checked as speak() checks it: {index: _Request} for those that can be
    made together (one chunk, the first one's model), {index: CbxError} for the rest."""
    requests, refused = {}, {}
    for i, call in enumerate(calls):
        call = dict(call)
        try:
            text, voice = call.pop("text", None), call.pop("voice", None)
            if "on_block" in call or "on_chunk" in call:
                raise InvalidSetting("A call made in a batch gets its audio whole, so it "
                                     "takes no on_block or on_chunk.",
                                     "Use speak() or stream() for audio as it is made.")
            req = _resolve(text, voice, **{**_SPEAK_DEFAULTS, **call})
            if len(req.chunks) != 1:
                raise InvalidText(f"This text makes {len(req.chunks)} chunks, not one, so "
                                  "it cannot share a batch.", "Make it with speak().")
            first = requests[min(requests)] if requests else req
            if (req.variant, req.device, req.dtype) != \
                    (first.variant, first.device, first.dtype):
                raise InvalidSetting(f"This call asks for {req.variant} on {req.device} "
                                     f"({req.dtype}), the batch's model is {first.variant} "
                                     f"on {first.device} ({first.dtype}).",
                                     "Make it with speak() once the batch is done.")
            requests[i] = req
        except CbxError as exc:
            refused[i] = exc
    return requests, refused


_SPEAK_DEFAULTS = {"variant": None, "device": None, "dtype": None, "seed": None,
                   "language": None, "max_chunk_chars": textmod.DEFAULT_MAX_CHARS,
                   "first_chunk_chars": textmod.DEFAULT_FIRST_CHUNK_CHARS, "progress": None,
                   "cancel": None, "on_chunk": None, "model_dir": None}


class _BatchToken(CancelToken):
    """A batch's token, the one the model manager holds: cancelled once every row's own
    token is (one client leaving does not stop the others' rows); its cancel() (an
    Unload) cancels every row."""

    def __init__(self, rows: list):
        super().__init__()
        self._rows = rows

    def cancel(self) -> None:
        super().cancel()
        for token in self._rows:
            token.cancel()

    @property
    def cancelled(self) -> bool:
        return super().cancelled or all(token.cancelled for token in self._rows)


def _make_rows(requests: dict, make: list) -> list:
    """The batch behind speak_chunks() and speak_together(): T3 for every request in
    groups of the first one's batch size, then S3Gen for each under its own cancel.
    Returns a Result, a CbxError or None (not made) per index of `make`."""
    out: list = [None] * len(make)
    first = requests[min(requests)]
    everyone = list(requests.values())
    # one report per callback: a project's group shares one
    reporters = list({id(req.progress): req for req in everyone}.values())

    def progress(tokens):
        for req in reporters:
            req.report(1, tokens, "tokens")

    for req in reporters:
        req.report(0, 0, "loading")
    manager = get_manager()
    manager.load(first.variant, device=first.device, dtype=first.dtype,
                 model_dir=first.model_dir)
    current = {"cancel": first.cancel}      # whose S3Gen pass runs now
    batch_token = _BatchToken([req.cancel for req in everyone])
    with manager.generation(batch_token) as loaded, \
            interrupt.cancel_points(loaded.tts, _stop_check(lambda: current["cancel"])):
        tts, prepared = loaded.tts, {}
        for i, req in requests.items():
            out[i] = _row_outcome(lambda: prepared.__setitem__(i, _prepare(req, loaded)))
        kwargs = {i: _upstream_kwargs(requests[i].variant, requests[i].settings,
                                      requests[i].language) for i in prepared}
        keys, size, decoded, notes = list(prepared), _batch_size(first, tts), {}, []
        spoken = [i for i in keys if textmod.pause_seconds(requests[i].chunks[0]) is None]
        for start in range(0, len(spoken), size):  # fewer rows where memory is short
            group = spoken[start:start + size]
            if len(group) > 1:
                outcome = _row_outcome(lambda: decoded.update(_decode_group(
                    tts, {i: (requests[i].chunks[0], requests[i].seed, prepared[i][1],
                              kwargs[i]) for i in group}, batch_token, progress, notes)))
                for i in group:
                    out[i] = outcome
        for i in keys:
            req, (take, conds) = requests[i], prepared[i]
            req.notes += notes
            if not make[i] or out[i] is not None:
                continue
            current["cancel"] = req.cancel

            def made(req=req, take=take, conds=conds, i=i):
                if req.cancel.cancelled:
                    raise _Stop
                silence = _silence(req.chunks[0], take.sample_rate, req.rate)
                if silence is not None:
                    return take.result([silence], req.chunks)
                wav = _generate_with_retries(
                    tts, conds, req.chunks[0], req.seed, kwargs[i], req.cancel,
                    lambda tokens: req.report(1, tokens, "tokens"), req.notes,
                    "The chunk", None, decoded.get(i))
                return take.result([audio.stretch(wav, take.sample_rate, req.rate)],
                                   req.chunks)
            out[i] = _row_outcome(made)
    return out


def _row_outcome(work):
    """What `work()` returned, or the CbxError it met (a cancel as generation_cancelled,
    a bug as generation_failed), so one row's failure stays that row's."""
    try:
        return work()
    except _Stop:
        return GenerationCancelled("Generation cancelled.",
                                   "Start it again; finished chunks are kept.")
    except CbxError as exc:
        return exc
    except Exception as exc:
        return _as_generation_failed(exc)


def _prepare(req: _Request, loaded) -> tuple[_Take, object]:
    """Check the text against the model's vocabulary and get the voice's conditionals."""
    words = textmod.without_pauses(req.text)
    unknown = _unknown_characters(loaded.tts, words)
    if unknown:
        req.notes.append("Not in the model's vocabulary, so not spoken: "
                         + " ".join(sorted(unknown)))
        if unknown >= {c for c in words if not c.isspace()}:
            raise InvalidText("None of the characters in the text can be spoken by "
                              f"{get_variant(req.variant).label}.",
                              "Write the text in the model's language and script.")
    req.report(0, 0, "voice")
    t0 = time.perf_counter()
    try:
        conds, voice_name, voice_sha = _resolve_conditionals(
            loaded, req.voice, req.variant, req.settings.get("exaggeration", 0.5))
    except CbxError:
        raise
    except Exception as exc:
        raise _as_generation_failed(exc) from None
    req.timings["conditionals"] = round(time.perf_counter() - t0, 3)
    loaded.voice = voice_name
    if loaded.watermark_off:
        req.notes.append("Not watermarked: Perth's watermarker could not be built "
                         f"({loaded.watermark_off}).")
    take = _Take(request=req, sample_rate=loaded.tts.sr, voice_name=voice_name,
                 voice_sha=voice_sha, device=loaded.device, dtype=loaded.dtype,
                 watermarked=not loaded.watermark_off)
    return take, conds


def _silence(chunk: str, sample_rate: int, rate: float):
    """The silence a pause chunk stands for (cbx.text.pause_seconds), at the speech rate
    as a project's pauses are; None for a chunk of words."""
    import numpy as np

    seconds = textmod.pause_seconds(chunk)
    if seconds is None:
        return None
    return np.zeros(round(seconds / rate * sample_rate), dtype=np.float32)


def _breath_between(chunks: list[str], index: int) -> bool:
    """Whether the short breath goes before chunk `index`: between two chunks of words
    only, since a pause chunk is the whole gap the writer asked for."""
    return index > 0 and textmod.pause_seconds(chunks[index]) is None and \
        textmod.pause_seconds(chunks[index - 1]) is None


def _chunk_loop(req: _Request, take: _Take, tts, conds) -> Result:
    """Generate the chunks in order, seed + i each, handing each to on_chunk."""
    chunks, pieces, chunk_seconds = req.chunks, [], []
    kwargs = _upstream_kwargs(req.variant, req.settings, req.language)
    sink = _BlockSink(req, take, tts, conds) if req.on_block is not None else None
    size = _batch_size(req, tts)
    decoded: dict = {}       # chunk index -> its tokens, decoded with its group
    try:
        for index, chunk in enumerate(chunks):
            if req.cancel.cancelled:
                raise _Stop
            chunk_start = time.perf_counter()
            eta = (sum(chunk_seconds) / len(chunk_seconds) * (len(chunks) - index)
                   if chunk_seconds else None)
            progress = (lambda tokens, i=index, e=eta:
                        req.report(i + 1, tokens, "tokens", e))
            group = [i for i in range(index, min(index + size, len(chunks)))
                     if textmod.pause_seconds(chunks[i]) is None]
            silence = _silence(chunk, take.sample_rate, req.rate)
            # the first chunk alone, so the first audio comes as soon as it did
            if silence is None and index and index not in decoded and len(group) > 1:
                decoded = _decode_group(
                    tts, {i: (chunks[i], req.seed + i, conds, kwargs) for i in group},
                    req.cancel, progress, req.notes)
            preset = decoded.pop(index, None)
            maker = sink.maker(index) if sink is not None and preset is None \
                and silence is None else None
            if silence is None:
                wav = _generate_with_retries(
                    tts, conds, chunk, req.seed + index, kwargs, req.cancel, progress,
                    req.notes, f"Chunk {index + 1} of {len(chunks)}",
                    maker.on_tokens if maker is not None else None, preset)
                wav = audio.stretch(wav, take.sample_rate, req.rate)
            else:
                wav = silence
            if sink is not None:
                sink.finish(maker, index, wav)
            chunk_seconds.append(time.perf_counter() - chunk_start)
            if index == 0:
                req.timings["first_audio"] = round(time.perf_counter() - req.started, 3)
            pieces.append(wav)
            req.report(index + 1, 0, "chunk_done",
                       sum(chunk_seconds) / len(chunk_seconds) * (len(chunks) - index - 1))
            if req.on_chunk is not None:
                req.on_chunk(index, len(chunks), wav, take.sample_rate)
    except _Stop:
        error = GenerationCancelled(
            f"Generation cancelled after {len(pieces)} of {len(chunks)} chunks.",
            "Press Generate to start again; finished chunks are kept in .partial.")
        error.partial = take.partial(pieces)
        raise error from None
    except GenerationFailed as error:     # a chunk, or one of the caller's callbacks
        error.partial = take.partial(pieces)
        raise
    except CbxError:
        raise
    except Exception as exc:
        raise _as_generation_failed(exc) from None
    return take.result(pieces, chunks)


class _BlockSink:
    """Turns one speak() call's audio into contiguous AudioBlocks for `on_block`: the
    pause before each chunk after the first leads its first block, and `start_s` counts
    samples sent, so the blocks join into exactly the Result's audio length."""

    def __init__(self, req: _Request, take: _Take, tts, conds):
        import numpy as np

        self.req, self.take, self.tts, self.conds = req, take, tts, conds
        self.sent = 0
        self.begun: set[int] = set()     # chunks whose first block went out
        self.lead_in = np.zeros(int(PAUSE_SECONDS / req.rate * take.sample_rate),
                                dtype=np.float32)

    def maker(self, index: int) -> BlockMaker | None:
        """Blocks from inside the token loop; None where only whole chunks can be sent
        (a speech rate other than 1 stretches whole chunks; upstream's loop has no
        token seam)."""
        if self.req.rate != 1.0 or not decode.decoder_of(self.tts).fast:
            return None
        return BlockMaker(self.tts, self.conds, self.req.variant,
                          lambda wav, last, i=index: self._emit(i, wav, last),
                          self.tts.t3.hp.stop_speech_token, first=index == 0)

    def finish(self, maker: BlockMaker | None, index: int, wav) -> None:
        if maker is None:
            self._emit(index, wav, True)
        else:
            maker.finish(wav)

    def _emit(self, index: int, wav, last_of_chunk: bool) -> None:
        import numpy as np

        if _breath_between(self.req.chunks, index) and index not in self.begun:
            wav = np.concatenate([self.lead_in, wav])
        self.begun.add(index)
        if not len(wav):
            return
        rate = self.take.sample_rate
        block = AudioBlock(wav=np.ascontiguousarray(wav, dtype=np.float32),
                           sample_rate=rate, chunk=index + 1, start_s=self.sent / rate,
                           last=last_of_chunk and index == len(self.req.chunks) - 1)
        self.sent += len(wav)
        self.req.on_block(block)



def prepare_voice(voice, *, exaggeration: float = 0.5) -> None:
    """Compute the loaded model's conditionals for `voice` now (kept for this session),
    so the next speak() with it starts generating at once: the dashboard does this right
    after Load, and the user's first click no longer pays for it. Needs a loaded model;
    the built-in voice has nothing to compute."""
    if voice is None or (isinstance(voice, voicemod.Voice) and voice.builtin):
        return
    setting = SETTINGS["exaggeration"]
    exaggeration = options.number("exaggeration", exaggeration, setting.low, setting.high)
    manager = get_manager()
    if manager.loaded is None:
        raise InvalidSetting("No model is loaded, so there is no voice to prepare for it.",
                             "Load a model first.")
    with manager.generation(None) as loaded:
        try:
            _resolve_conditionals(loaded, voice, loaded.variant, exaggeration)
        except CbxError:
            raise
        except Exception as exc:
            raise _as_generation_failed(exc) from None

# What model_busy says while a stream() holds the model: nothing on screen shows that
# a generator kept in a variable is still generating.
STREAM_BUSY = ("The model is held by a cbx.stream() that is still open: a stream generates "
               "until it is run to its end, closed or deleted.",
               "Close that stream: call .close() on it or del the variable that holds it "
               "(breaking out of `for block in cbx.stream(...)` closes it by itself); "
               "then try again.")


def stream(text: str, voice=None, **options):
    """Speak `text` as a generator of AudioBlocks, each yielded as soon as it is made
    (the first after about 0.8 s of speech is decoded); takes speak()'s options and
    returns speak()'s Result when the generator is exhausted. The generation runs in a
    worker thread and holds the model until the stream ends: closing the generator,
    breaking out of its loop or dropping the last reference to it (its collection
    closes it) cancels the generation and waits until the model is free. The worker
    holds no reference to the generator, so dropping it is enough."""
    import queue

    if "on_block" in options:
        raise InvalidSetting("stream() yields the blocks itself; on_block is speak()'s.",
                             "Iterate over stream(...), or call speak(on_block=...).")
    cancel = _LinkedToken(options.pop("cancel", None), busy_hint=STREAM_BUSY)
    blocks: queue.Queue = queue.Queue()
    outcome: dict = {}

    def work():
        try:
            outcome["result"] = speak(text, voice, cancel=cancel, on_block=blocks.put,
                                      **options)
        except BaseException as exc:          # handed to the consumer's thread below
            outcome["error"] = exc
        finally:
            blocks.put(None)

    worker = threading.Thread(target=work, name="cbx-stream", daemon=True)
    worker.start()
    try:
        while (block := blocks.get()) is not None:
            yield block
    finally:
        cancel.cancel()             # closed or collected before its end (else a no-op)
        # A collection that happens to run on the worker itself cannot wait for it;
        # the cancel still ends it within a token.
        if threading.current_thread() is not worker:
            worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _as_generation_failed(exc: BaseException) -> GenerationFailed:
    if is_cuda_oom(exc):
        import gc

        gc.collect()
        free_cuda_cache()
        return GenerationFailed.from_exception(exc, CUDA_OOM_SOLUTION)
    return GenerationFailed.from_exception(exc)


class _NoSpeech(Exception):
    """The model stopped after so few speech tokens that S3Gen cannot decode them."""

    def __init__(self, tokens: int, cause: BaseException):
        super().__init__(f"{tokens} speech tokens: {cause}")
        self.tokens = tokens


def _batch_size(req: _Request, tts) -> int:
    """How many chunks this call decodes together: 1 where the model cannot batch or
    runs upstream's own token loop. 'auto' is 1 for a live player too (on_block): it
    gets an early window of every chunk while that chunk's tokens come, and a batch's
    chunks come whole; a caller who prefers throughput there asks for a size."""
    if not decode.decoder_of(tts).fast or not batch.supports(tts):
        return 1
    if req.batch_size == "auto":
        return 1 if req.on_block is not None else batch.auto_size(tts)
    return req.batch_size


def _decode_group(tts, chunks: dict, cancel: CancelToken, on_tokens, notes: list) -> dict:
    """T3 tokens for `chunks` (key -> (text, seed, conditionals, upstream kwargs))
    decoded together, each row with its own seed, voice and settings as if alone, from
    exactly the inputs upstream's generate() gives T3. If the batch fails (not a
    cancel, not CUDA memory), nothing is lost: it says so in `notes` and returns
    nothing, so each chunk is then decoded alone."""
    import torch

    rows = []
    for text, seed, conds, kwargs in chunks.values():
        tts.conds = conds
        rows.append(batch.Row(batch.capture(tts, text, kwargs), decode.token_budget(text),
                              seed))
    try:
        with attention_kernels(tts.device):
            results = batch.decode_rows(decode.decoder_of(tts), rows,
                                        _forward_counter(cancel, on_tokens))
    except (_Stop, CbxError, torch.cuda.OutOfMemoryError):
        raise
    except Exception as exc:
        decode.decoder_of(tts).release()
        notes.append(f"Decoding {len(rows)} chunks together failed ({type(exc).__name__}: "
                     f"{exc}), so they were decoded one at a time.")
        return {}
    return dict(zip(chunks, results))


def _forward_counter(cancel: CancelToken, on_tokens):
    """The decoder's on_forward: aborts between tokens when cancelled and reports the
    tokens sampled so far at most every PROGRESS_INTERVAL; `.calls` counts forwards."""
    def on_forward():
        if cancel.cancelled:
            raise _Stop
        on_forward.calls += 1
        now = time.perf_counter()
        if now - on_forward.last >= PROGRESS_INTERVAL:
            on_forward.last = now
            on_tokens(on_forward.calls - 1)  # the first call is the prompt, not a token

    on_forward.calls, on_forward.last = 0, 0.0
    return on_forward


def _generate_with_retries(tts, conds, chunk: str, seed: int, kwargs: dict,
                           cancel: CancelToken, on_tokens, notes: list, label: str,
                           on_new_tokens=None, preset: batch.RowResult | None = None):
    """`_generate_chunk`, retried with the next seeds when the model makes almost no
    speech for the chunk (it can stop at once), so one such chunk does not end a long
    generation. Each retry is named in the result's notes. `preset`: the first
    attempt's tokens, already decoded in a batch (retries decode alone)."""
    for attempt in range(NO_SPEECH_RETRIES + 1):
        try:
            wav = _generate_chunk(tts, conds, chunk, seed + attempt, kwargs, cancel,
                                  on_tokens, notes, label, on_new_tokens,
                                  preset if attempt == 0 else None)
        except _NoSpeech as exc:
            last = exc
            continue
        if attempt:
            notes.append(f"{label} came out with almost no speech with seed {seed}; "
                         f"seed {seed + attempt} was used for it instead.")
        return wav
    snippet = " ".join(chunk.split())
    snippet = snippet if len(snippet) <= 60 else snippet[:57] + "..."
    raise GenerationFailed(
        f"{label} (\"{snippet}\") came out with almost no speech "
        f"{NO_SPEECH_RETRIES + 1} times (seeds {seed} to {seed + NO_SPEECH_RETRIES}), so "
        f"it could not be turned into audio ({last.tokens} speech tokens).",
        "Reword or lengthen that sentence, or try another seed. The chunks finished "
        "before it are kept.")


def _generate_chunk(tts, conds, chunk: str, seed: int, kwargs: dict, cancel: CancelToken,
                    on_tokens, notes: list, label: str, on_new_tokens=None,
                    preset: batch.RowResult | None = None):
    """One upstream generate() call, seeded, whose token loop is cbx's decoder
    (cbx.engine.decode, installed by the manager's load) under this chunk's token budget;
    the decoder reports each transformer forward, which counts sampled tokens for
    progress and aborts between tokens when cancelled. With `preset` (tokens decoded in
    a batch), generate() gets those tokens and the random state the row left."""
    import torch

    on_forward = _forward_counter(cancel, on_tokens)
    decoder = decode.decoder_of(tts)
    try:
        tts.conds = conds
        with attention_kernels(tts.device):
            if preset is not None:
                batch.use_row_rng(tts.t3.device, preset, seed)
                wav = batch.replay(tts, chunk, kwargs, preset)
                ran = preset.decoded
            else:
                torch.manual_seed(seed)
                with decoder.chunk(decode.token_budget(chunk), on_forward, on_new_tokens):
                    wav = tts.generate(chunk, **kwargs)
                    ran = decoder.last
    except RuntimeError as exc:
        tokens = preset.decoded.tokens if preset is not None else on_forward.calls - 1
        if not is_cuda_oom(exc) and ("can't be greater than actual input size" in str(exc)
                                     or tokens <= FEW_TOKENS):
            raise _NoSpeech(tokens, exc) from exc
        raise
    if ran is not None and ran.fallback and ran.fallback not in notes:
        notes.append(ran.fallback)      # once per speak() call, not once per chunk
    if ran is not None and ran.hit_budget:
        notes.append(f"{label} reached its token budget ({ran.budget} speech tokens, "
                     f"{ran.budget / decode.TOKENS_PER_SECOND:.0f} s) before the model "
                     "stopped by itself, so the token budget ended it there. If it ends "
                     "in babble or is cut off, generate it again with another seed.")
    return wav.squeeze(0).detach().cpu().numpy().astype("float32")

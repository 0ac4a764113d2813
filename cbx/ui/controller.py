"""The dashboard's state machine, in plain Python.

Why separate from the widgets: every rule the page follows (Generate disabled while a
generation runs, Cancel only then, errors keep the text, voice and history, the health
panel refreshes after every action) lives here, so tests can drive it without a
browser and without ipywidgets. The view only observes events and re-renders.

Long work (load, unload, generate) runs on a worker thread so the kernel's main thread
stays free to receive the Cancel click. speak()'s AudioBlocks go, as they are made,
to the live feed (`playback.LiveFeed`), which the view connects to the browser's player.
"""
from __future__ import annotations

import functools
import json
import logging
import re
import threading
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from ..errors import (CbxError, GenerationCancelled, GenerationFailed, HealthCheckFailed,
                      InvalidSetting, InvalidVoiceFile, ModelLoadFailed, OutputNotSaved,
                      UnexpectedError)
from ..audio import encode_wav
from ..engine.synth import sidecar_path
from ..state import ModelInfo, ModelState
from ..text import CHARS_PER_SECOND, DEFAULT_FIRST_CHUNK_CHARS, DEFAULT_MAX_CHARS
from ..tags import TURBO, find_tags
from ..variants import DEFAULT_VARIANT, VARIANTS
from .downloads import href
from .playback import LiveFeed, Schedule, thread_timer
from .projects import ProjectActions
from .render import shown_path

log = logging.getLogger(__name__)

# What the busy states mean on the page.
NOT_BUSY = None         # no background action: every button that applies is enabled
LOADING = "loading"
GENERATING = "generating"
CANCELLING = "cancelling"
UNLOADING = "unloading"
EXPORTING = "exporting"

# Texts up to this length are counted on every keystroke (a few milliseconds); longer
# ones once typing pauses for TEXT_COUNT_DELAY seconds.
INSTANT_COUNT_CHARS = 20_000
TEXT_COUNT_DELAY = 0.5

BUILTIN = "__builtin__"        # voice choice meaning "the variant's bundled voice"
DEFAULT_MAX_CHUNK_CHARS = DEFAULT_MAX_CHARS

# The history keeps the audio of this many newest results in memory; older ones are
# read back from their files in the output folder when played.
HISTORY_AUDIO_IN_MEMORY = 20

# Events the view listens to (each names the part of the page to redraw).
EVENTS = ("busy", "progress", "status", "error", "result", "chunk", "history",
          "health", "model", "voices", "text", "settings", "session",
          "project", "projects", "project_source", "export", "chunk_audio")


@dataclass
class HistoryEntry:
    """One finished generation, kept for replay and download for the whole session.
    Its audio stays in memory while it is among the newest results (`wav_bytes`), then
    only on disk (`saved_path`); its downloads are links to its files (`url`)."""

    number: int
    text: str
    voice: str
    seed: int | None
    variant: str
    duration: float
    generation_seconds: float | None
    first_audio_seconds: float | None
    settings: dict
    wav_bytes: bytes | None
    sidecar_json: str
    filename: str
    saved_path: Path | None = None
    url: str | None = None            # downloads the saved WAV
    sidecar_url: str | None = None    # downloads its settings sidecar
    notes: list = field(default_factory=list)      # what the result says about itself
    created: str = field(default_factory=lambda: datetime.now().strftime("%H:%M:%S"))

    @property
    def snippet(self) -> str:
        flat = " ".join(self.text.split())
        return flat if len(flat) <= 70 else flat[:67] + "..."

    @property
    def sidecar_filename(self) -> str:
        return sidecar_path(self.filename).name

    def audio(self) -> bytes | None:
        """The WAV: from memory, else from its file (None when neither has it)."""
        if self.wav_bytes is not None:
            return self.wav_bytes
        try:
            return self.saved_path.read_bytes() if self.saved_path else None
        except OSError:
            return None

    def forget_audio(self) -> None:
        """Keep the audio on disk only (an older result: memory stays bounded)."""
        self.wav_bytes = None


def _safe_stem(text: str, limit: int = 40) -> str:
    """A file-name part that is valid on Windows and Linux."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return (stem or "voice")[:limit]


def parse_seed(text: str) -> int | None:
    """'' means a random seed; anything else must be a non-negative integer."""
    text = (text or "").strip()
    if not text or text.lower() == "random":
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidSetting(f"Seed {text!r} is not a whole number.",
                             "Enter a whole number such as 42, or leave the seed empty "
                             "for a random one.") from None
    if not 0 <= value < 2**32:
        raise InvalidSetting(f"Seed {value} is out of range.",
                             "Use a number from 0 to 4294967295, or leave it empty.")
    return value


class DashboardController(ProjectActions):
    """Holds everything the page shows and performs every action the page offers
    (the Projects section's part lives in projects.ProjectActions)."""

    def __init__(self, backend, *, idle_unload_minutes: float | None = None,
                 threaded: bool = True, exit_process: Callable[[], None] | None = None,
                 schedule: Schedule | None = None):
        """`schedule(delay, callback)` times the text count, the project holder's poll
        and the project's redraws (default: a daemon timer thread); tests pass a fake
        clock to step them."""
        self.backend = backend
        self.threaded = threaded
        self._exit_process = exit_process
        self._observers: list[Callable[[str], None]] = []
        # guards `busy`, `_cancel_token`, `_text_serial` and `_text_timer`: every change
        # of `busy` happens under it, from the state the change applies to. It is never
        # held while calling the backend (which takes the model manager's locks).
        self._lock = threading.RLock()
        self._worker: threading.Thread | None = None
        self._cancel_token = None

        # page state
        self.busy: str | None = NOT_BUSY
        self.status_line = "Ready. Pick a voice, type some text and press Generate."
        self.error: CbxError | None = None
        self.progress: dict | None = None
        self.chunks_done: list[tuple[int, int, bytes]] = []   # live preview while generating
        self.live = LiveFeed()         # AudioBlocks on their way to the browser's player
        self._schedule = schedule or functools.partial(thread_timer, name="cbx-timer")
        self._text_serial = 0
        self._text_timer = None
        self.current: HistoryEntry | None = None
        self.history: list[HistoryEntry] = []
        self.health = None             # the StatusReport of the last refresh
        self.health_error: CbxError | None = None
        self.model = ModelInfo()
        self.model_note = ""           # last unload's memory figures
        self.session_ended = False

        self.voices: list = []
        self.voice_choice: str = BUILTIN
        self.voice_info = None         # the selected Voice object (None for built-in)
        self.voice_message = ""

        self.text = ""
        self.text_info = {"chars": 0, "chunks": 0, "seconds": 0.0}

        self.variant = DEFAULT_VARIANT
        self.language = "en"
        self.device = "auto"
        self.dtype = "float32"
        self.seed_text = ""
        self.max_chunk_chars = DEFAULT_MAX_CHUNK_CHARS
        self.rate = 1.0                # speech rate of one-off generations
        # the same short first chunk speak() uses, so the hint counts what will be made
        self.first_chunk_chars: int | None = DEFAULT_FIRST_CHUNK_CHARS
        self.settings: dict = dict(VARIANTS[self.variant].defaults)
        self.tags: tuple[str, ...] = backend.paralinguistic_tags(self.variant)

        self.idle_unload_minutes = idle_unload_minutes
        self._connect_manager()
        self.refresh_voices(emit=False)
        self.refresh_health(emit=False)
        self._init_projects()
        if self.problems():
            self.status_line = "Setup needed: see 'Needs attention' above for what to do."

    # ------------------------------------------------------------------ observers
    def observe(self, callback: Callable[[str], None]) -> None:
        self._observers.append(callback)

    def _emit(self, *events: str) -> None:
        for event in events:
            for callback in list(self._observers):
                try:
                    callback(event)
                except Exception:   # a broken view must not kill a generation thread
                    log.exception("dashboard view failed to render %r", event)

    # -------------------------------------------------------------- derived flags
    @property
    def can_generate(self) -> bool:
        return self.busy is NOT_BUSY and not self.session_ended

    @property
    def can_cancel(self) -> bool:
        return self.busy == GENERATING

    @property
    def can_load(self) -> bool:
        return self.busy is NOT_BUSY and not self.session_ended

    @property
    def can_unload(self) -> bool:
        return self.busy is NOT_BUSY and self.model.ready \
            and not self.session_ended

    @property
    def model_state(self) -> str:
        return self.busy if self.busy in (LOADING, UNLOADING) else \
            str(self.model.state)

    @property
    def status_text(self) -> str:
        """The status line the page shows: while cancelling, that (it is a state, not a
        message, so it ends when the state does), else the last message."""
        if self.busy == CANCELLING:
            return "Cancelling: stopping within the current chunk..."
        return self.status_line

    # --------------------------------------------------------------- model manager
    def _connect_manager(self) -> None:
        """Listen to the kernel's model manager and start the idle auto-unload."""
        try:
            self.backend.add_model_listener(self._on_model_change)
            self.model = self.backend.describe_model()
            if self.idle_unload_minutes is not None:
                self.backend.start_idle_unload(self.idle_unload_minutes)
                self.model = self.backend.describe_model()
        except CbxError as exc:
            self.health_error = exc
        except Exception as exc:     # e.g. a broken install: explain it on the page
            self.health_error = HealthCheckFailed.from_exception(
                exc, "The model manager could not start. Run `python setup_env.py`, then "
                     "reload the page.")

    def _on_model_change(self, info: ModelInfo) -> None:
        """Called by the manager from any thread; it may hold its lock, so only copy."""
        if isinstance(info, ModelInfo):
            self.model = info
            if info.state is ModelState.LOADING:
                self.model_note = ""        # the previous unload's figures no longer apply
            elif info.state is ModelState.NOT_LOADED and info.last_unload:
                self.model_note = info.last_unload
        self._emit("model")

    # ---------------------------------------------------------------------- health
    def refresh_health(self, emit: bool = True) -> None:
        """Re-read libraries, weight files, device memory and the model's state."""
        try:
            self.model = self.backend.describe_model()
        except CbxError as exc:
            self.health_error = exc
        try:
            self.health = self.backend.status(model_state=self.model.to_dict(),
                                              device=self.device)
            self.health_error = None
        except CbxError as exc:
            self.health_error = exc
        except Exception as exc:     # the health panel must explain, never crash the page
            self.health_error = HealthCheckFailed.from_exception(
                exc, "The health check failed. Run `python -m cbx status` in a terminal for "
                     "details.")
        if emit:
            self._emit("health", "model")

    def problems(self) -> list[CbxError]:
        """Problems that stop the selected variant from working (shown above everything)."""
        found: list[CbxError] = []
        if self.health_error is not None:
            found.append(self.health_error)
        report = self.health
        if report is None:
            return found
        for problem in report.problems():
            if problem.code == "model_files_missing":
                continue     # reported per variant below: other variants may be absent
            found.append(problem)
        weights = report.weights.get(self.variant)
        if weights is not None and not weights.complete:
            error = weights.error()
            if error is not None:
                found.append(error)
        return found

    # ---------------------------------------------------------------------- voices
    def refresh_voices(self, emit: bool = True) -> None:
        try:
            self.voices = list(self.backend.list_voices(self.variant))
        except CbxError as exc:
            self.voices = []
            self.voice_message = f"Saved voices unavailable: {exc.message}"
        names = {v.name for v in self.voices}
        if self.voice_choice != BUILTIN and self.voice_choice not in names:
            self.voice_choice, self.voice_info = BUILTIN, None
        if emit:
            self._emit("voices")

    def has_builtin_voice(self) -> bool:
        try:
            return self.backend.builtin_voice(self.variant) is not None
        except CbxError:
            return False

    def voice_options(self) -> list[tuple[str, str]]:
        """(label, value) pairs for the voice picker."""
        options = []
        if self.has_builtin_voice():
            options.append((f"Built-in voice ({VARIANTS[self.variant].label})", BUILTIN))
        for voice in self.voices:
            duration = voice.duration
            label = f"{voice.name} ({duration:.1f} s)" if duration else voice.name
            options.append((label, voice.name))
        return options

    def select_voice(self, name: str | None) -> None:
        if not name or name == BUILTIN:
            self.voice_choice, self.voice_info = BUILTIN, None
        else:
            match = next((v for v in self.voices if v.name == name), None)
            if match is None:
                self.refresh_voices(emit=False)
                match = next((v for v in self.voices if v.name == name), None)
            self.voice_choice = name if match is not None else BUILTIN
            self.voice_info = match
        self._emit("voices")

    def upload_voice(self, data: bytes, filename: str) -> bool:
        """Validate and save an uploaded clip, then select it. False (with the error
        shown) when the clip is unusable; the previous voice stays selected."""
        self.error = None
        try:
            voice = self.backend.save_voice(bytes(data), filename, self.variant)
        except CbxError as exc:
            self.error = exc
            self.voice_message = ""
            self._emit("error", "voices")
            return False
        except Exception as exc:    # an unexpected decoder failure still gets the taxonomy
            self.error = InvalidVoiceFile(
                f"The clip could not be decoded ({type(exc).__name__}: {exc}).",
                "Convert it to a 16-bit WAV and upload again.",
                details="".join(traceback.format_exception(exc)))
            self._emit("error", "voices")
            return False
        self.refresh_voices(emit=False)
        if all(v.name != voice.name for v in self.voices):
            self.voices.append(voice)
        self.voice_choice, self.voice_info = voice.name, voice
        self.voice_message = f"Saved voice '{voice.name}' ({voice.duration:.1f} s)."
        self.status_line = f"Voice '{voice.name}' is ready to use."
        self._emit("voices", "error", "status")
        return True

    def refuse_upload(self, filename: str, size: int) -> None:
        """The browser found the chosen file over the clip limit and sent only its name
        and size: say so; the previous voice stays selected."""
        from ..voices import too_large_error

        self.error = too_large_error(f"The upload {filename!r}", size,
                                     VARIANTS[self.variant])
        self.voice_message = ""
        self._emit("error", "voices")

    # ------------------------------------------------------------------------ text
    def set_text(self, text: str) -> None:
        """Keep the text at once; count its chunks at once while that is instant, and
        for a long text only once typing pauses, on a timer thread, so pasting a novel
        never holds up the page (each keystroke arrives here)."""
        self.text = text or ""
        with self._lock:
            self._text_serial += 1
            serial = self._text_serial
            pending, self._text_timer = self._text_timer, None
        if pending is not None:
            pending.cancel()
        if len(self.text) <= INSTANT_COUNT_CHARS:
            self._count_text(serial)
            return
        self.text_info = {"chars": len(self.text), "chunks": None,
                          "seconds": len(self.text) / CHARS_PER_SECOND}
        self._emit("text")
        timer = self._schedule(TEXT_COUNT_DELAY, lambda: self._count_text(serial))
        with self._lock:
            if serial == self._text_serial:
                self._text_timer = timer

    def _count_text(self, serial: int) -> None:
        text = self.text
        if not text.strip():
            info = {"chars": len(text), "chunks": 0, "seconds": 0.0}
        else:
            try:
                chunks = len(self.backend.split_text(
                    text, self.max_chunk_chars, first_chunk_chars=self.first_chunk_chars))
                seconds = float(self.backend.estimate_seconds(text))
            except CbxError:
                chunks, seconds = 0, 0.0
            info = {"chars": len(text), "chunks": chunks, "seconds": seconds}
        with self._lock:
            if serial != self._text_serial:
                return                  # the text changed meanwhile: its own count follows
            self.text_info = info
        self._emit("text")

    @property
    def tag_warning(self) -> str:
        """For a variant without paralinguistic tags, a warning when the text holds
        some: that model spells "[laugh]" out instead of laughing."""
        if self.variant == TURBO:
            return ""
        found = list(dict.fromkeys(find_tags(self.text)))
        if not found:
            return ""
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        return (f"{VARIANTS[self.variant].label} reads tags such as {shown} aloud as "
                f"words. Only {VARIANTS[TURBO].label} speaks them: choose it as the "
                "variant, or remove the tags.")

    # -------------------------------------------------------------------- settings
    def set_variant(self, variant: str) -> None:
        if variant not in VARIANTS:
            raise InvalidSetting(f"Unknown variant {variant!r}.",
                                 f"Use one of: {', '.join(VARIANTS)}.")
        self.variant = variant
        self.settings = dict(VARIANTS[variant].defaults)
        self.tags = self.backend.paralinguistic_tags(variant)
        languages = VARIANTS[variant].languages
        if languages and self.language not in languages:
            self.language = "en" if "en" in languages else languages[0]
        if self.voice_choice == BUILTIN and not self.has_builtin_voice() and self.voices:
            self.voice_choice, self.voice_info = self.voices[0].name, self.voices[0]
        self.refresh_health(emit=False)
        self._emit("settings", "voices", "health", "model", "text")

    def ignored_settings(self) -> tuple[str, ...]:
        return VARIANTS[self.variant].ignored_settings

    def set_setting(self, name: str, value: float) -> None:
        self.settings[name] = float(value)

    def set_device(self, device: str) -> None:
        self.device = device
        self.refresh_health()

    def set_max_chunk_chars(self, value: int) -> None:
        self.max_chunk_chars = max(50, int(value))
        self.set_text(self.text)

    # ----------------------------------------------------------------- background
    def _start(self, busy: str, work: Callable[[], None], cancel_token=None) -> bool:
        """Run `work` on the worker thread unless something is already running."""
        with self._lock:
            if self.busy is not NOT_BUSY or self.session_ended:
                return False
            self.busy = busy
            self.error = None
            self._cancel_token = cancel_token
        self._emit("busy", "error")

        def run() -> None:
            try:
                work()
            finally:
                with self._lock:
                    self.busy = NOT_BUSY
                    self._cancel_token = None
                self.refresh_health(emit=False)
                self._emit("busy", "health", "model", "status", "error")

        if self.threaded:
            self._worker = threading.Thread(target=run, name="cbx-dashboard-worker",
                                            daemon=True)
            self._worker.start()
        else:
            run()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background action finishes (tests and notebooks)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    def _fail(self, exc: BaseException, unexpected: type[UnexpectedError]) -> None:
        """Show a failure; one cbx did not foresee is wrapped as `unexpected`, the code
        of the action that failed."""
        self.error = exc if isinstance(exc, CbxError) else unexpected.from_exception(exc)
        self.status_line = f"Failed: {self.error.message}"
        self._emit("error", "status")

    # ------------------------------------------------------------------ model load
    def load(self) -> bool:
        label = VARIANTS[self.variant].label
        variant, device, dtype = self.variant, self.device, self.dtype

        def work() -> None:
            self.status_line = f"Loading {label} on {device} ({dtype})..."
            self._emit("status")
            try:
                info = self.backend.load(variant, device, dtype)
            except BaseException as exc:   # every failure reaches the page
                self._fail(exc, ModelLoadFailed)
                return
            self.model = info
            seconds = self.model.load_seconds
            took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
            voice = self.voice_info
            if voice is not None:    # a saved voice: ready before the first click
                self.status_line = f"{label} is loaded; preparing voice '{voice.name}'..."
                self._emit("status")
                try:
                    self.backend.prepare_voice(
                        voice, exaggeration=self.settings.get("exaggeration", 0.5))
                except BaseException as exc:
                    self._fail(exc, GenerationFailed)
                    return
            self.status_line = f"{label} is loaded on {self.model.device or device}{took}."

        return self._start(LOADING, work)

    def unload(self) -> bool:
        def work() -> None:
            self.live.stop()      # Unload means quiet: nothing buffered keeps playing
            self.status_line = "Unloading the model..."
            self._emit("status")
            try:
                report = self.backend.unload()
            except BaseException as exc:
                self._fail(exc, UnexpectedError)
                return
            self.model_note = report.summary()
            self.status_line = "Model unloaded. " + self.model_note

        return self._start(UNLOADING, work)

    # -------------------------------------------------------------------- generate
    def generate(self) -> bool:
        """Start a generation; False when one is already running (or input is invalid,
        in which case the error is shown and nothing else changes)."""
        if not self.can_generate:
            return False
        try:
            seed = parse_seed(self.seed_text)
        except CbxError as exc:
            self.error = exc
            self._emit("error")
            return False
        text = self.text
        voice, options = self._speech_options()
        max_chars, first_chars = self.max_chunk_chars, self.first_chunk_chars
        rate = self.rate
        token = self.backend.make_cancel_token()
        on_progress = self._progress_handler(options["variant"])

        def on_chunk(index, total, wav, sample_rate) -> None:
            data = encode_wav(wav, sample_rate)
            self.chunks_done.append((index, total, data))
            self._emit("chunk")

        def work() -> None:
            self.chunks_done = []
            self.progress = {"chunk": 0, "total": max(self.text_info.get("chunks") or 0, 1),
                             "tokens": 0, "elapsed": 0.0, "eta": None, "stage": "starting"}
            self.status_line = "Starting..."
            self._emit("progress", "status", "chunk")
            self.live.begin()
            try:
                result = self.backend.speak(
                    text, voice, seed=seed, max_chunk_chars=max_chars,
                    first_chunk_chars=first_chars, progress=on_progress, cancel=token,
                    on_chunk=on_chunk, on_block=self.live.add, rate=rate, **options)
            except GenerationCancelled as exc:
                self.live.stop()
                self.status_line = f"Cancelled. {exc.message}"
                self.progress = None
                self._emit("progress", "status")
                return
            except BaseException as exc:
                self.live.finish()     # the blocks made before the failure still play
                self.progress = None
                self._fail(exc, GenerationFailed)
                self._emit("progress")
                return
            self.live.finish()
            self._finish(result)

        return self._start(GENERATING, work, cancel_token=token)

    def _speech_options(self) -> tuple[object, dict]:
        """(voice, speak() keywords) from the page's current choices: what a one-off
        generation and a new project both use."""
        voice = None if self.voice_choice == BUILTIN else (self.voice_info or self.voice_choice)
        variant = self.variant
        ignored = set(VARIANTS[variant].ignored_settings)
        options = {"variant": variant, "device": self.device, "dtype": self.dtype,
                   "language": self.language if VARIANTS[variant].languages else None,
                   **{k: v for k, v in self.settings.items() if k not in ignored}}
        return voice, options

    def _progress_handler(self, variant: str) -> Callable:
        """speak()'s progress callback: the progress bar's state and the status line."""
        voice_name = "built-in" if self.voice_choice == BUILTIN else self.voice_choice

        def on_progress(p) -> None:
            self.progress = {"chunk": p.chunk, "total": p.total, "tokens": p.tokens,
                             "elapsed": p.elapsed, "eta": p.eta, "stage": p.stage}
            stage = self.progress["stage"]
            if stage == "loading" and not self.model.ready:
                self.status_line = (f"Loading {VARIANTS[variant].label} first (Generate "
                                    "loads the model on first use)...")
            elif stage == "voice":
                self.status_line = f"Preparing voice '{voice_name}'..."
            elif self.busy == GENERATING:
                self.status_line = (f"Generating chunk {max(self.progress['chunk'], 1)} of "
                                    f"{self.progress['total']}...")
            self._emit("progress", "status")

        return on_progress

    def set_rate(self, value: float) -> None:
        """The speech rate of one-off generations (cbx.settings.SPEECH_RATE's range)."""
        from ..audio import check_rate

        self.rate = check_rate(float(value))

    def _finish(self, result) -> None:
        """Save the result with its sidecar, put it in the player and the history."""
        number = len(self.history) + 1
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        filename = f"{stamp}_{number:02d}_{_safe_stem(str(result.voice))}_seed{result.seed}.wav"
        saved_path = url = sidecar_url = None
        wav_bytes = result.to_wav_bytes()
        sidecar = json.dumps(result.metadata(), indent=2)
        note = ""
        output_dir = Path(self.backend.output_dir())
        try:
            saved_path = result.save(output_dir / filename, unique=True)
            sidecar_file = sidecar_path(saved_path)
            if sidecar_file.is_file():
                sidecar = sidecar_file.read_text(encoding="utf-8")
                sidecar_url = href(sidecar_file, output_dir)
            url = href(saved_path, output_dir)
            note = f" Saved as {shown_path(saved_path)}."
        except OutputNotSaved as exc:
            self.error = OutputNotSaved(
                f"The audio was made but could not be saved: {exc.message}",
                f"{exc.solution} Or set CBX_OUTPUT_DIR to a writable folder, and "
                "Generate again; meanwhile the player above still plays it.")
        timings = result.timings
        entry = HistoryEntry(
            number=number, text=result.text, voice=str(result.voice), seed=result.seed,
            variant=result.variant,
            duration=float(result.duration),
            generation_seconds=timings.get("total", timings.get("generation")),
            first_audio_seconds=timings.get("first_audio"),
            settings=dict(result.settings), wav_bytes=wav_bytes,
            sidecar_json=sidecar, filename=(saved_path.name if saved_path else filename),
            saved_path=saved_path, url=url, sidecar_url=sidecar_url,
            notes=list(result.notes))
        self.history.insert(0, entry)
        for older in self.history[HISTORY_AUDIO_IN_MEMORY:]:
            older.forget_audio()
        self.current = entry
        self.progress = None
        self.chunks_done = []
        took = f" in {entry.generation_seconds:.1f} s" if entry.generation_seconds else ""
        self.status_line = f"Done: {entry.duration:.1f} s of audio{took}.{note}"
        self._emit("result", "history", "progress", "chunk", "status", "error")

    def cancel(self) -> bool:
        """Ask the running generation to stop (it ends within the current chunk).

        The check and the change of state happen under the lock, from the one state
        they apply to: a Cancel that arrives as the last chunk finishes finds the page
        idle and does nothing, instead of leaving it "cancelling" for ever."""
        with self._lock:
            token = self._cancel_token
            if self.busy != GENERATING or token is None:
                return False
            self.busy = CANCELLING
        token.cancel()
        self.backend.cancel_running()
        self.live.stop()
        self._emit("busy", "status")
        return True

    def play(self, number: int) -> None:
        """Put a history entry back into the main player (an older one's audio is read
        from its file)."""
        entry = next((e for e in self.history if e.number == number), None)
        if entry is None:
            return
        if entry.audio() is None:
            self.error = OutputNotSaved(
                f"Result #{number}'s audio was never saved, and only the newest "
                f"{HISTORY_AUDIO_IN_MEMORY} results are kept in memory.",
                f"Generate it again: seed {entry.seed}, with the same text and settings.")
            self._emit("error")
            return
        self.current = entry
        self._emit("result")

    def clear_error(self) -> None:
        self.error = None
        self._emit("error")

    def show_error(self, error: CbxError) -> None:
        """Show an error found outside the controller's actions (an upload that did not
        arrive whole); nothing the user did changes."""
        self.error = error
        self._emit("error")

    def close(self) -> None:
        """Stop live playback and the project's polling (the page is going away)."""
        self.live.stop()
        self._stop_watching()

    # ----------------------------------------------------------------- end session
    def end_session(self) -> bool:
        """Unload, then stop this kernel process: the complete deload. The page must be
        reloaded afterwards, which starts a fresh kernel."""
        if self.busy is not NOT_BUSY or self._exit_process is None:
            return False
        self.session_ended = True
        self.live.stop()
        try:
            report = self.backend.unload()
            self.model_note = report.summary()
        except CbxError as exc:
            self.model_note = f"Unload before exit failed ({exc.message}); exiting anyway."
        self.status_line = ("Session ended: this kernel has stopped and given all its memory "
                            "back. Reload the page to start a fresh session.")
        self._emit("session", "busy", "status")
        timer = threading.Timer(1.0, self._exit_process)
        timer.daemon = True
        timer.start()
        return True


__all__ = ["DashboardController", "HistoryEntry", "parse_seed", "BUILTIN",
           "NOT_BUSY", "LOADING", "GENERATING", "CANCELLING", "UNLOADING", "EXPORTING"]

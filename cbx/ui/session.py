"""The page's session: everything the dashboard shows, in one plain-Python object, with
the events that say what changed and the one worker thread that runs long actions.

Why one object: each card's actions (model, voice, text and settings, generation,
projects) read and change the same state (a project and a one-off generation share
the busy state, the voice, the settings), so it lives here and the action classes
share it; none of them imports another's module to reach it. Nothing here touches
widgets or the engine: tests drive it without ipywidgets, and the view only observes
its events and redraws.
"""
from __future__ import annotations

import functools
import logging
import threading
from typing import Callable

from ..errors import CbxError, InvalidSetting, UnexpectedError
from ..state import ModelInfo
from ..text import DEFAULT_FIRST_CHUNK_CHARS, DEFAULT_MAX_CHARS
from ..variants import DEFAULT_VARIANT, VARIANTS
from .playback import LiveFeed, Schedule, thread_timer

log = logging.getLogger(__name__)

# What the busy states mean on the page.
NOT_BUSY = None         # no background action: every button that applies is enabled
LOADING = "loading"
GENERATING = "generating"
CANCELLING = "cancelling"
UNLOADING = "unloading"
EXPORTING = "exporting"

BUILTIN = "__builtin__"        # voice choice meaning "the variant's bundled voice"
DEFAULT_EXPORT_SUFFIX = ".mp3"


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


class Session:
    """The page's state, its events and its worker thread."""

    def __init__(self, *, threaded: bool = True, schedule: Schedule | None = None):
        """`schedule(delay, callback)` times the text count, the project holder's poll
        and the project's redraws (default: a daemon timer thread); tests pass a fake
        clock to step them."""
        self.threaded = threaded
        self.schedule = schedule or functools.partial(thread_timer, name="cbx-timer")
        self._observers: list[Callable[[str], None]] = []
        # guards `busy`, `cancel_token`, and the text count's and project poll's timers:
        # every change of `busy` happens under it, from the state the change applies
        # to. It is never held while calling the backend (which takes the model
        # manager's locks).
        self.lock = threading.RLock()
        self._worker: threading.Thread | None = None
        self.cancel_token = None
        self.after_job: Callable[[], None] | None = None   # run as every job ends

        # what is going on
        self.busy: str | None = NOT_BUSY
        self.status_line = "Ready. Pick a voice, type some text and press Generate."
        self.error: CbxError | None = None
        self.progress: dict | None = None
        self.session_ended = False
        # the model and the health panel
        self.model = ModelInfo()
        self.model_note = ""           # last unload's memory figures
        self.health = None             # the StatusReport of the last refresh
        self.health_error: CbxError | None = None
        # the voice card
        self.voices: list = []
        self.voice_choice: str = BUILTIN
        self.voice_info = None         # the selected Voice object (None for built-in)
        self.voice_message = ""
        # the text and settings cards
        self.text = ""
        self.text_info = {"chars": 0, "chunks": 0, "seconds": 0.0}
        self.tags: tuple[str, ...] = ()
        self.variant = DEFAULT_VARIANT
        self.language = "en"
        self.device = "auto"
        self.dtype = "float32"
        self.seed_text = ""
        self.max_chunk_chars = DEFAULT_MAX_CHARS
        self.rate = 1.0                # speech rate of one-off generations
        # the same short first chunk speak() uses, so the hint counts what will be made
        self.first_chunk_chars: int | None = DEFAULT_FIRST_CHUNK_CHARS
        self.settings: dict = dict(VARIANTS[self.variant].defaults)
        # the generate and output cards
        self.chunks_done: list[tuple[int, int, bytes]] = []   # live preview while generating
        self.live = LiveFeed()         # AudioBlocks on their way to the browser's player
        self.current = None            # the HistoryEntry in the main player
        self.history: list = []        # HistoryEntry, newest first
        # the projects card: immutable views, replaced whole (see projects.py)
        self.project = None            # ProjectView of the project shown
        self.projects: list[dict] = []       # every project on disk (for Resume)
        self.project_name = ""               # empty: derived from the source
        self.project_source: tuple[str, str, str] | None = None   # (filename, text, format)
        self.project_running = False         # the worker is busy with a project
        self.chunk_audio = None              # ChunkAudio in the card's player
        self.export_suffix = DEFAULT_EXPORT_SUFFIX
        self.export_rate = 1.0
        self.export = None                   # ExportView of the last export

    # ------------------------------------------------------------------ events
    def observe(self, callback: Callable[[str], None]) -> None:
        self._observers.append(callback)

    def emit(self, *events: str) -> None:
        """Tell the observers what changed; each event names a part of the page ("busy",
        "progress", "status", "error", "result", "chunk", "history", "health",
        "model", "voices", "text", "settings", "session", "project", "projects",
        "project_source", "export", "chunk_audio")."""
        for event in events:
            for callback in list(self._observers):
                try:
                    callback(event)
                except Exception:   # a broken view must not kill a generation thread
                    log.exception("dashboard view failed to render %r", event)

    def show_error(self, error: CbxError) -> None:
        """Show an error found outside the actions (an upload that did not arrive
        whole); nothing the user did changes."""
        self.error = error
        self.emit("error")

    def clear_error(self) -> None:
        self.error = None
        self.emit("error")

    def fail(self, exc: BaseException, unexpected: type[UnexpectedError]) -> None:
        """Show a failure; one cbx did not foresee is wrapped as `unexpected`, the code
        of the action that failed."""
        self.error = exc if isinstance(exc, CbxError) else unexpected.from_exception(exc)
        self.status_line = f"Failed: {self.error.message}"
        self.emit("error", "status")

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
        return self.busy is NOT_BUSY and self.model.ready and not self.session_ended

    @property
    def model_state(self) -> str:
        return self.busy if self.busy in (LOADING, UNLOADING) else str(self.model.state)

    @property
    def status_text(self) -> str:
        """The status line the page shows: while cancelling, that (it is a state, not a
        message, so it ends when the state does), else the last message."""
        if self.busy == CANCELLING:
            return "Cancelling: stopping within the current chunk..."
        return self.status_line

    # --------------------------------------------------------------- background
    def start(self, busy: str, work: Callable[[], None], cancel_token=None) -> bool:
        """Run `work` on the worker thread unless something is already running; one
        worker for every card, so a project and a one-off generation never overlap."""
        with self.lock:
            if self.busy is not NOT_BUSY or self.session_ended:
                return False
            self.busy = busy
            self.error = None
            self.cancel_token = cancel_token
        self.emit("busy", "error")

        def run() -> None:
            try:
                work()
            finally:
                with self.lock:
                    self.busy = NOT_BUSY
                    self.cancel_token = None
                if self.after_job is not None:
                    self.after_job()
                self.emit("busy", "health", "model", "status", "error")

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


__all__ = ["Session", "parse_seed", "BUILTIN", "NOT_BUSY", "LOADING",
           "GENERATING", "CANCELLING", "UNLOADING", "EXPORTING"]

"""The dashboard's Projects section, in plain Python: long-form projects on disk
(cbx.longform) made, resumed, reviewed chunk by chunk, re-rolled, edited and exported.

Why a part of the controller of its own: a project is a second kind of job beside a
one-off generation, with its own state (which project, its chunks, its export), but it
shares the controller's one worker thread and busy state, so a project and a one-off
generation never run at once. `ProjectActions` is mixed into DashboardController and
uses its `_start`, `_fail`, `_emit` and `backend`; like the rest of the controller it
talks only to the Backend seam.

Threading: `project`, `projects` and `export` are replaced whole (immutable values),
never changed in place, so the view reads a consistent snapshot from any thread.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..audio import FORMATS, check_rate
from ..errors import (CbxError, GenerationCancelled, GenerationFailed, InvalidSetting,
                      ProjectLocked)

DEFAULT_EXPORT_SUFFIX = ".mp3"
PROJECT_LOCK_POLL_SECONDS = 2.0   # how often a Resume looks whether another kernel is done


@dataclass(frozen=True)
class ChunkView:
    """One row of the chunk list."""

    index: int
    text: str
    seed: int                   # the seed its audio was made with (or will be)
    duration: float | None      # None while the chunk is not made
    flags: tuple[str, ...]
    wav: Path | None            # its audio file once made
    key: str                    # changes whenever its audio does (the WAV's sha256)

    @property
    def done(self) -> bool:
        return self.wav is not None


@dataclass(frozen=True)
class ProjectView:
    name: str
    chunks: tuple[ChunkView, ...]
    rate: float
    note: str = ""              # what a reopen with new text changed

    @property
    def done(self) -> int:
        return sum(c.done for c in self.chunks)

    @property
    def finished(self) -> bool:
        return self.done == len(self.chunks)

    @property
    def flagged(self) -> list[int]:
        return [c.index for c in self.chunks if c.flags]


@dataclass(frozen=True)
class ExportView:
    filename: str
    data: bytes
    mime: str
    path: Path


def project_view(overview: dict, note: str = "") -> ProjectView:
    """The page's view of Backend.project_overview()."""
    chunks = []
    for row in overview["chunks"]:
        record = row["record"]
        chunks.append(ChunkView(
            index=row["index"], text=row["text"],
            seed=record["seed_used"] if record else row["seed"],
            duration=record["duration"] if record else None,
            flags=tuple(record["flags"]) if record else (),
            wav=Path(row["wav"]) if record else None,
            key=record.get("wav_sha256", "") if record else ""))
    return ProjectView(overview["name"], tuple(chunks), overview["rate"], note)


def default_project_name(source_name: str | None, text: str) -> str:
    """An uploaded file's stem, else the text's first words, else the date."""
    if source_name:
        return Path(source_name).stem
    words = re.findall(r"\w+", text)[:4]
    return "-".join(words) or datetime.now().strftime("project-%Y%m%d-%H%M")


def _sleep_unless_cancelled(token, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not token.cancelled and time.monotonic() < deadline:
        time.sleep(0.1)


class ProjectActions:
    """Project state and actions of DashboardController (see the module's docstring)."""

    def _init_projects(self) -> None:
        self.project: ProjectView | None = None
        self.projects: list[dict] = []      # every project on disk (for Resume)
        self.project_name = ""               # empty: derived from the source
        self.project_source: tuple[str, str, str] | None = None   # (filename, text, format)
        self.project_running = False         # the worker is busy with a project
        self.export_suffix = DEFAULT_EXPORT_SUFFIX
        self.export_rate = 1.0
        self.export: ExportView | None = None
        self.refresh_projects(emit=False)

    # ---------------------------------------------------------------- reading
    def refresh_projects(self, emit: bool = True) -> None:
        try:
            self.projects = list(self.backend.list_projects())
        except CbxError as exc:
            self.projects = []
            self.error = exc
        if emit:
            self._emit("projects")

    @property
    def unfinished_projects(self) -> list[str]:
        return [p["name"] for p in self.projects if p.get("missing")]

    def _show_project(self, name: str, note: str = "") -> None:
        self.project = project_view(self.backend.project_overview(name), note)
        self._emit("project")

    def open_project(self, name: str) -> bool:
        """Show a project on disk (its chunks, Resume if unfinished) without running it."""
        try:
            self._show_project(name)
        except CbxError as exc:
            self._fail(exc, GenerationFailed)
            return False
        self.export, self.export_rate = None, self.project.rate
        self.status_line = (f"Project '{self.project.name}': {self.project.done} of "
                            f"{len(self.project.chunks)} chunks made.")
        self._emit("export", "status")
        return True

    # ----------------------------------------------------------------- source
    def upload_project_text(self, data: bytes, filename: str) -> bool:
        """Use an uploaded .txt/.md/.srt file as the next project's text."""
        try:
            text, fmt = self.backend.read_text_upload(data, filename)
        except CbxError as exc:
            self.error = exc
            self._emit("error")
            return False
        self.error = None
        self.project_source = (filename, text, fmt)
        self.status_line = (f"{filename}: {len(text)} characters of {fmt} text. Press "
                            "'Generate as project' to make it chunk by chunk.")
        self._emit("project_source", "status", "error")
        return True

    def refuse_project_upload(self, filename: str, size: int) -> None:
        """The browser found the chosen text file too large and sent only its size."""
        from ..longform.sources import check_size

        try:
            check_size(size, filename)
        except CbxError as exc:
            self.error = exc
            self._emit("error")

    def clear_project_source(self) -> None:
        """Back to the text box as the project's text."""
        self.project_source = None
        self._emit("project_source")

    # ------------------------------------------------------------------ jobs
    def generate_project(self) -> bool:
        """Create the project from the uploaded file (or the text box) and make it."""
        if not self.can_generate:
            return False
        from .controller import parse_seed

        try:
            seed = parse_seed(self.seed_text)
        except CbxError as exc:
            self.error = exc
            self._emit("error")
            return False
        filename, text, fmt = self.project_source or (None, self.text, "plain")
        name = self.project_name.strip() or default_project_name(filename, text)
        voice, options = self._speech_options()
        max_chars = self.max_chunk_chars

        def create() -> str:
            made = self.backend.create_project(name, text, voice, text_format=fmt,
                                               seed=seed, max_chunk_chars=max_chars,
                                               **options)
            self.project = project_view(made, made["changes"])
            self.export, self.export_rate = None, self.project.rate
            self._emit("project", "export")
            return made["name"]

        return self._start_project(create, options["variant"])

    def resume_project(self, name: str | None = None) -> bool:
        """Make what an unfinished project (this one, or `name`) is missing."""
        name = name or (self.project.name if self.project else None)
        if name is None or not self.can_generate:
            return False

        def reopen() -> str:
            self._show_project(name)
            return name

        return self._start_project(reopen, self.variant)

    def _start_project(self, prepare, variant: str) -> bool:
        """Run `prepare()` (which names the project) then the project's missing chunks
        on the worker thread, as a cancellable generation."""
        token = self.backend.make_cancel_token()
        on_progress = self._progress_handler(variant)

        def on_chunk(index, total, wav, sample_rate) -> None:
            self._show_project(self.project.name, self.project.note)

        def work() -> None:
            self.project_running = True
            self.progress = {"chunk": 0, "total": 0, "tokens": 0, "elapsed": 0.0,
                             "eta": None, "stage": "starting"}
            self.status_line = "Starting the project..."
            self._emit("progress", "status", "project")
            try:
                name = prepare()
                self.progress["total"] = len(self.project.chunks)
                status = self._run_when_free(name, token, on_progress, on_chunk)
                # re-read: chunks another kernel made while we waited never passed
                # through on_chunk here
                self._show_project(name, self.project.note)
            except BaseException as exc:
                self._project_failed(exc)
                return
            finally:
                self.project_running = False
                self.progress = None
                self.refresh_projects(emit=False)
                self._emit("progress", "projects", "project")
            if status["missing"]:
                self.status_line = (f"Stopped with {status['done']} of {status['chunks']} "
                                    "chunks made; press Resume to make the rest.")
            else:
                flagged = (f" {len(status['flagged'])} flagged for review."
                           if status["flagged"] else "")
                self.status_line = (f"Project '{self.project.name}' is complete: "
                                    f"{status['chunks']} chunks, {status['seconds']:.1f} s."
                                    f"{flagged}")
            self._emit("status")

        from .controller import GENERATING

        return self._start(GENERATING, work, cancel_token=token)

    def _run_when_free(self, name: str, token, on_progress, on_chunk) -> dict:
        """Run the project; while another kernel holds it (the page before a reload
        whose kernel is still making it), follow its chunks on disk and take over
        when it ends. Cancel stops the waiting too."""
        while True:
            try:
                return self.backend.run_project(name, progress=on_progress, cancel=token,
                                                on_chunk=on_chunk)
            except ProjectLocked:
                if token.cancelled:
                    raise GenerationCancelled("Stopped waiting for the other kernel.",
                                              "Press Resume to wait again.") from None
                self._show_project(name, self.project.note if self.project else "")
                self.status_line = (
                    f"Another kernel (this page before a reload?) is still making "
                    f"'{name}': {self.project.done} of {len(self.project.chunks)} chunks "
                    "so far. Resume takes over when it stops.")
                self._emit("status")
                _sleep_unless_cancelled(token, PROJECT_LOCK_POLL_SECONDS)

    def _project_failed(self, exc: BaseException) -> None:
        if isinstance(exc, GenerationCancelled):
            self.status_line = ("Cancelled. The finished chunks are kept on disk; press "
                                "Resume to make the rest.")
            self._emit("status")
        else:
            self._fail(exc, GenerationFailed)

    def regenerate_chunk(self, index: int, text: str | None = None) -> bool:
        """Make chunk `index` of the open project again (its next seed), or with new
        `text` ("Edit text"); no other chunk changes."""
        if self.project is None or not self.can_generate:
            return False
        name = self.project.name
        if text is not None and not text.strip():
            self.error = InvalidSetting(f"Chunk {index + 1}'s new text is empty.",
                                        "Type the words this chunk should say.")
            self._emit("error")
            return False

        def work() -> None:
            what = "with the new text" if text is not None else "with its next seed"
            self.status_line = f"Making chunk {index + 1} again {what}..."
            self.project_running = True
            self._emit("status", "project")
            try:
                self.backend.regenerate_chunk(name, index, text=text)
                self._show_project(name)
            except BaseException as exc:
                self._fail(exc, GenerationFailed)
                return
            finally:
                self.project_running = False
                self.refresh_projects(emit=False)
                self._emit("projects", "project")
            chunk = self.project.chunks[index]
            self.export = None
            self.status_line = (f"Chunk {index + 1} made again (seed {chunk.seed}, "
                                f"{chunk.duration:.1f} s).")
            self._emit("status", "export")

        from .controller import GENERATING

        return self._start(GENERATING, work)

    # ----------------------------------------------------------------- export
    def set_export(self, suffix: str | None = None, rate: float | None = None) -> None:
        if suffix is not None:
            if suffix not in FORMATS:
                raise InvalidSetting(f"No export format {suffix!r}.",
                                     f"Use one of: {', '.join(FORMATS)}.")
            self.export_suffix = suffix
        if rate is not None:
            self.export_rate = check_rate(float(rate))

    def export_project(self) -> bool:
        """Join the open project's chunks into one file of the chosen format and rate,
        saved beside the project and offered for download."""
        if self.project is None or not self.can_generate:
            return False
        name, suffix, rate = self.project.name, self.export_suffix, self.export_rate

        def work() -> None:
            self.status_line = f"Exporting {FORMATS[suffix].label} at {rate:g}x..."
            self._emit("status")
            try:
                path = Path(self.backend.export_project(name, suffix, rate))
                data = path.read_bytes()
            except BaseException as exc:
                self._fail(exc, GenerationFailed)
                return
            self.export = ExportView(path.name, data, FORMATS[suffix].mime, path)
            self.status_line = f"Exported to {path}."
            self._emit("export", "status")

        from .controller import EXPORTING

        return self._start(EXPORTING, work)

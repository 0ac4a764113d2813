"""The dashboard's Projects section, in plain Python: long-form projects on disk
(cbx.longform) made, resumed, reviewed a page of chunks at a time, re-rolled, edited
and exported.

Why actions of their own: a project is a second kind of job beside a one-off
generation, with its own state (which project, which page of its chunks, its export,
kept in the session), but it shares the session's one worker thread and busy state, so
a project and a one-off generation never run at once, and it starts from the same
choices (`generation.speech_job`). Like every card's actions it talks only to the
Backend seam.

A book has thousands of chunks, so the page holds one page of them (PAGE_SIZE) and
no audio: a chunk's take is read when its Play is pressed. While a project is shown,
its holder is polled (HOLDER_POLL_SECONDS): when another tab or process changes it, the
page says who and follows its chunks; the store still refuses a racing click with
project_busy.

Threading: the session's `project`, `projects`, `export` and `chunk_audio` are
replaced whole (immutable values), never changed in place, so the view reads a consistent snapshot
from any thread; `_view_lock` makes each read-and-replace of `project` one step, so a
page turn and a redraw from the worker never interleave.
"""
from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..audio import FORMATS, check_rate
from ..errors import CbxError, GenerationCancelled, GenerationFailed, InvalidSetting
from .downloads import href
from .generation import progress_handler, speech_job
from .playback import Throttle
from .session import EXPORTING, GENERATING, Session

PAGE_SIZE = 50                    # chunks drawn at once, however long the project
HOLDER_POLL_SECONDS = 2.0         # how often a shown project's holder is read
PROJECT_REDRAWS_PER_SECOND = 3    # while chunks are made; the final state always drawn
JUMPS = ("missing", "flagged", "damaged")


@dataclass(frozen=True)
class ChunkView:
    """One row of the chunk list."""

    index: int
    text: str
    seed: int                   # the seed its audio was made with (or will be)
    state: str                  # "done", "missing" or "damaged"
    why: str | None             # what is wrong with a damaged take
    duration: float | None      # None while the chunk has no sound take
    flags: tuple[str, ...]
    wav: Path | None            # its audio file when done
    key: str                    # changes whenever its audio does (the WAV's sha256)

    @property
    def done(self) -> bool:
        return self.state == "done"


@dataclass(frozen=True)
class ProjectView:
    """A project's counts and one page of its chunks, [start, start + len(chunks))."""

    name: str
    rate: float
    total: int
    done: int
    seconds: float
    missing: tuple[int, ...]    # missing or damaged: what Resume makes
    flagged: tuple[int, ...]
    damaged: tuple[int, ...]
    start: int
    chunks: tuple[ChunkView, ...]
    holder: dict | None         # another tab or process changing it now, else None
    note: str = ""              # what a reopen with new text changed

    @property
    def finished(self) -> bool:
        return not self.missing

    @property
    def stop(self) -> int:
        return self.start + len(self.chunks)

    def chunk(self, index: int) -> ChunkView | None:
        """Chunk `index` when it is on the page shown."""
        offset = index - self.start
        return self.chunks[offset] if 0 <= offset < len(self.chunks) else None


@dataclass(frozen=True)
class ExportView:
    filename: str
    url: str | None             # the download link (None: the server cannot serve it)


@dataclass(frozen=True)
class ChunkAudio:
    """The one chunk in the Projects card's player."""

    index: int
    data: bytes


def chunk_view(row: dict) -> ChunkView:
    record = row["record"]
    return ChunkView(
        index=row["index"], text=row["text"],
        seed=record["seed_used"] if record else row["seed"], state=row["state"],
        why=row["why"], duration=record["duration"] if record else None,
        flags=tuple(record["flags"]) if record else (),
        wav=Path(row["wav"]) if row["wav"] else None,
        key=record.get("wav_sha256", "") if record else "")


def project_view(overview: dict, start: int, note: str) -> ProjectView:
    """The page's view of Backend.project_overview()."""
    status = overview["status"]
    return ProjectView(
        name=overview["name"], rate=overview["rate"], total=status["chunks"],
        done=status["done"], seconds=status["seconds"], missing=tuple(status["missing"]),
        flagged=tuple(status["flagged"]), damaged=tuple(status["damaged"]), start=start,
        chunks=tuple(chunk_view(row) for row in overview["chunks"]),
        holder=elsewhere(status["holder"]), note=note)


def elsewhere(holder: dict | None) -> dict | None:
    """The holder when it is another process (another tab's kernel, JupyterLab, a
    script); None when nobody holds the project or this kernel does."""
    if holder is None:
        return None
    mine = holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()
    return None if mine else holder


def default_project_name(source_name: str | None, text: str) -> str:
    """An uploaded file's stem, else the text's first words, else the date."""
    if source_name:
        return Path(source_name).stem
    words = re.findall(r"\w+", text)[:4]
    return "-".join(words) or datetime.now().strftime("project-%Y%m%d-%H%M")


def page_start(index: int, total: int) -> int:
    """The first chunk of the page that holds chunk `index` (clamped to the project)."""
    return max(0, min(index, total - 1)) // PAGE_SIZE * PAGE_SIZE


class ProjectActions:
    """Project actions on the session (see the module's docstring)."""

    def __init__(self, session: Session, backend):
        self.session = session
        self.backend = backend
        self._view_lock = threading.Lock()   # one read-and-replace of `project` at a time
        self._poll_timer = None              # the holder poll's next run (under session.lock)
        self._page_closed = False            # no more polls (under session.lock)
        self._project_redraw = Throttle(self._reread_project,
                                        1.0 / PROJECT_REDRAWS_PER_SECOND, session.schedule)

    # ---------------------------------------------------------------- reading
    def refresh_projects(self, emit: bool = True) -> None:
        s = self.session
        try:
            s.projects = list(self.backend.list_projects())
        except CbxError as exc:
            s.projects = []
            s.error = exc
        if emit:
            s.emit("projects")

    @property
    def unfinished_projects(self) -> list[str]:
        return [p["name"] for p in self.session.projects if p.get("missing")]

    def _show_project(self, name: str, *, start: int | None = None,
                      note: str | None = None, replace: bool = False) -> None:
        """Read a page of project `name` (`start`, else the page shown) and show it.
        Without `replace`, only while `name` is still the project shown: a redraw or a
        poll never brings back a project the user has left."""
        s = self.session
        with self._view_lock:
            shown = s.project if s.project and s.project.name == name else None
            if shown is None and not replace:
                return
            start = start if start is not None else shown.start if shown else 0
            note = note if note is not None else shown.note if shown else ""
            overview = self.backend.project_overview(name, start, start + PAGE_SIZE)
            total = overview["status"]["chunks"]
            if start and start >= total:             # the text got shorter: its last page
                start = page_start(total - 1, total)
                overview = self.backend.project_overview(name, start, start + PAGE_SIZE)
            view = project_view(overview, start, note)
            changed = view != s.project
            s.project = view
        if changed:
            s.emit("project")
        self._watch_project()

    def _reread_project(self, start: int | None = None) -> None:
        """Read the shown project again (another page: `start`). A failed read is
        shown, never raised: it comes from a page turn, a poll or a redraw during a
        run, and stops none of them."""
        project = self.session.project
        if project is None:
            return
        try:
            self._show_project(project.name, start=start)
        except CbxError as exc:
            self.session.show_error(exc)

    def open_project(self, name: str) -> bool:
        """Show a project on disk (its first page, Resume if unfinished) without running it."""
        s = self.session
        try:
            self._show_project(name, start=0, note="", replace=True)
        except CbxError as exc:
            s.fail(exc, GenerationFailed)
            return False
        s.export, s.export_rate, s.chunk_audio = None, s.project.rate, None
        s.status_line = (f"Project '{s.project.name}': {s.project.done:,} of "
                         f"{s.project.total:,} chunks made.")
        s.emit("export", "chunk_audio", "status")
        return True

    # ----------------------------------------------------------------- paging
    def show_chunks(self, index: int) -> None:
        """Show the page of chunks that holds chunk `index`."""
        project = self.session.project
        if project is not None:
            self._reread_project(page_start(index, project.total))

    def turn_page(self, pages: int) -> None:
        """The next (1) or previous (-1) page of chunks."""
        project = self.session.project
        if project is not None:
            self.show_chunks(project.start + pages * PAGE_SIZE)

    def jump_to(self, kind: str) -> None:
        """The page of the next chunk of `kind` ("missing", "flagged" or "damaged")
        after the page shown, else of the first one."""
        project = self.session.project
        indices = getattr(project, kind) if project and kind in JUMPS else ()
        if indices:
            later = [i for i in indices if i >= project.stop]
            self.show_chunks((later or indices)[0])

    def play_chunk(self, index: int) -> None:
        """Put chunk `index`'s take in the card's player: a chunk's audio reaches the
        browser only when asked for."""
        s = self.session
        chunk = s.project.chunk(index) if s.project else None
        if chunk is None or chunk.wav is None:
            return
        try:
            s.chunk_audio = ChunkAudio(index, chunk.wav.read_bytes())
        except OSError as exc:
            s.show_error(GenerationFailed(f"Chunk {index + 1}'s audio cannot be read: {exc}",
                                          "Press Resume: it checks every take and makes "
                                          "a damaged one again."))
            return
        s.emit("chunk_audio")

    # ------------------------------------------------------------ the holder
    def _watch_project(self) -> None:
        """Poll the shown project's holder from now on (one timer chain at a time)."""
        s = self.session
        with s.lock:
            if self._poll_timer is not None or self._page_closed or s.session_ended:
                return
            self._poll_timer = s.schedule(HOLDER_POLL_SECONDS, self._poll_holder)

    def _poll_holder(self) -> None:
        """While another tab or process holds the project, follow its chunks (page
        redrawn only when it changed); when it lets go, enable the buttons again. Cheap
        when nobody holds it: one read of the store, nothing sent to the browser."""
        s = self.session
        with s.lock:
            self._poll_timer = None
            closed = self._page_closed or s.session_ended
        project = s.project
        if project is None or closed:
            return
        if not s.project_running:          # this page's own job redraws it already
            try:
                held = elsewhere(self.backend.project_holder(project.name))
            except CbxError as exc:        # the project is gone or unreadable: say so
                s.show_error(exc)
                return
            if held is not None or project.holder is not None:
                self._reread_project()
        self._watch_project()

    def stop_watching(self) -> None:
        """No more polls: the page is going away."""
        with self.session.lock:
            self._page_closed = True
            timer, self._poll_timer = self._poll_timer, None
        if timer is not None:
            timer.cancel()

    # ----------------------------------------------------------------- source
    def upload_project_text(self, data: bytes, filename: str) -> bool:
        """Use an uploaded .txt/.md/.srt file as the next project's text."""
        s = self.session
        try:
            text, fmt = self.backend.read_text_upload(data, filename)
        except CbxError as exc:
            s.show_error(exc)
            return False
        s.error = None
        s.project_source = (filename, text, fmt)
        s.status_line = (f"{filename}: {len(text)} characters of {fmt} text. Press "
                         "'Generate as project' to make it chunk by chunk.")
        s.emit("project_source", "status", "error")
        return True

    def refuse_project_upload(self, filename: str, size: int) -> None:
        """The browser found the chosen text file too large and sent only its size."""
        from ..longform.sources import check_size

        try:
            check_size(size, filename)
        except CbxError as exc:
            self.session.show_error(exc)

    def clear_project_source(self) -> None:
        """Back to the text box as the project's text."""
        self.session.project_source = None
        self.session.emit("project_source")

    # ------------------------------------------------------------------ jobs
    def generate_project(self) -> bool:
        """Create the project from the uploaded file (or the text box) and make it."""
        s = self.session
        job = speech_job(s, self.backend)
        if job is None:
            return False
        filename, text, fmt = s.project_source or (None, s.text, "plain")
        name = s.project_name.strip() or default_project_name(filename, text)

        def create() -> str:
            made = self.backend.create_project(name, text, job.voice, text_format=fmt,
                                               seed=job.seed,
                                               max_chunk_chars=job.max_chunk_chars,
                                               **job.options)
            self._show_project(made["name"], start=0, note=made["changes"], replace=True)
            s.export, s.export_rate, s.chunk_audio = None, s.project.rate, None
            s.emit("export", "chunk_audio")
            return made["name"]

        return self._start_project(create, job.token, job.on_progress)

    def resume_project(self, name: str | None = None) -> bool:
        """Make what an unfinished project (this one, or `name`) is missing. Another
        tab or process making it refuses with project_busy, shown like any error."""
        s = self.session
        name = name or (s.project.name if s.project else None)
        if name is None or not s.can_generate:
            return False

        def reopen() -> str:
            self._show_project(name, replace=True)
            return name

        return self._start_project(reopen, self.backend.make_cancel_token(),
                                   progress_handler(s, s.variant))

    def _project_job(self, token, on_progress, job, *, starting: str, finished,
                     cancelled: str) -> bool:
        """Run `job(on_progress)` on the worker thread as a generation that `token`
        cancels and that changes the shown project: the page redraws it as chunks are
        made (throttled) and always once more at the end; then `finished(job's value)`
        says how it went, or `cancelled` what a cancel kept."""
        s = self.session

        def work() -> None:
            s.project_running = True
            s.progress = {"chunk": 0, "total": 0, "tokens": 0, "elapsed": 0.0,
                          "eta": None, "stage": "starting"}
            s.status_line = starting
            s.emit("progress", "status", "project")
            try:
                outcome = job(on_progress)
            except GenerationCancelled:
                s.status_line = f"Cancelled. {cancelled}"
                return
            except BaseException as exc:
                s.fail(exc, GenerationFailed)
                return
            finally:
                s.project_running = False
                s.progress = None
                self._project_redraw.cancel()
                self._reread_project()
                self.refresh_projects(emit=False)
                s.emit("progress", "projects", "status")
            s.export = None
            finished(outcome)
            s.emit("status", "export")

        return s.start(GENERATING, work, cancel_token=token)

    def _start_project(self, prepare, token, on_progress) -> bool:
        """Run `prepare()` (which shows the project and names it) then the project's
        missing chunks."""
        s = self.session

        def run(on_progress) -> dict:
            name = prepare()
            s.progress["total"] = s.project.total
            return self.backend.run_project(
                name, progress=on_progress, cancel=token,
                on_chunk=lambda *_chunk: self._project_redraw())

        def finished(status: dict) -> None:
            if status["missing"]:
                s.status_line = (f"Stopped with {status['done']:,} of "
                                 f"{status['chunks']:,} chunks made; press Resume to "
                                 "make the rest.")
                return
            flagged = (f" {len(status['flagged'])} flagged for review."
                       if status["flagged"] else "")
            s.status_line = (f"Project '{s.project.name}' is complete: "
                             f"{status['chunks']:,} chunks, {status['seconds']:.1f} s."
                             f"{flagged}")

        return self._project_job(token, on_progress, run,
                                 starting="Starting the project...", finished=finished,
                                 cancelled="The finished chunks are kept on disk; press "
                                           "Resume to make the rest.")

    def regenerate_chunk(self, index: int, text: str | None = None) -> bool:
        """Make chunk `index` of the open project again (its next seed), or with new
        `text` ("Edit text"); no other chunk changes. Cancel keeps the earlier take."""
        s = self.session
        if s.project is None or not s.can_generate:
            return False
        name = s.project.name
        if text is not None and not text.strip():
            s.show_error(InvalidSetting(f"Chunk {index + 1}'s new text is empty.",
                                        "Type the words this chunk should say."))
            return False
        token = self.backend.make_cancel_token()
        what = "with the new text" if text is not None else "with its next seed"

        def remake(on_progress) -> dict | None:
            return self.backend.regenerate_chunk(name, index, text=text,
                                                 progress=on_progress, cancel=token)

        def finished(record: dict | None) -> None:
            made = (f" (seed {record['seed_used']}, {record['duration']:.1f} s)"
                    if record else "")
            s.status_line = f"Chunk {index + 1} made again{made}."

        return self._project_job(token, progress_handler(s, s.variant), remake,
                                 starting=f"Making chunk {index + 1} again {what}...",
                                 finished=finished,
                                 cancelled=f"Chunk {index + 1} keeps its earlier take.")

    # ----------------------------------------------------------------- export
    def set_export(self, suffix: str | None = None, rate: float | None = None) -> None:
        s = self.session
        if suffix is not None:
            if suffix not in FORMATS:
                raise InvalidSetting(f"No export format {suffix!r}.",
                                     f"Use one of: {', '.join(FORMATS)}.")
            s.export_suffix = suffix
        if rate is not None:
            s.export_rate = check_rate(float(rate))

    def export_project(self) -> bool:
        """Join the open project's chunks into one file of the chosen format and rate,
        saved in the project's exports/ folder and offered for download by URL."""
        s = self.session
        if s.project is None or not s.can_generate:
            return False
        name, suffix, rate = s.project.name, s.export_suffix, s.export_rate

        def work() -> None:
            s.status_line = f"Exporting {FORMATS[suffix].label} at {rate:g}x..."
            s.emit("status")
            try:
                path = Path(self.backend.export_project(name, suffix, rate))
            except BaseException as exc:
                s.fail(exc, GenerationFailed)
                return
            s.export = ExportView(path.name, href(path, self.backend.output_dir()))
            s.status_line = (f"Exported {path.name}; it is also kept in the project's "
                             "exports/ folder.")
            s.emit("export", "status")

        return s.start(EXPORTING, work)


__all__ = ["ProjectActions", "ProjectView", "ChunkView", "ExportView", "ChunkAudio",
           "PAGE_SIZE", "HOLDER_POLL_SECONDS", "JUMPS"]

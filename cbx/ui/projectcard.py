"""The Projects card: the widgets of the dashboard's Projects section (the state is
the session's, the actions projects.ProjectActions).

Small parts: `ChunkRow` is one chunk of the page shown (text, state, duration, seed,
flag, Play, Regenerate, Edit text); `UnderRow` is a box shown under one row at a time:
the one text editor (`ChunkEditor`) and the one chunk player; `PageBar` turns the
pages and jumps to the next missing, flagged or damaged chunk; `ProjectsCard` holds
them with the source, the saved projects with Resume, the progress over chunks and
the export.

Why so: a book has thousands of chunks. The card draws one page (projects.PAGE_SIZE
rows, made once and reused from page to page, so turning a page sends only new text)
and no audio until a Play asks for one chunk's take.
"""
from __future__ import annotations

from ..audio import FORMATS
from ..errors import InvalidText
from ..longform.sources import MAX_FILE_BYTES
from . import render
from .projects import JUMPS
from .widgets import DESCRIPTION_STYLE, button, rate_slider

ACCEPTED_TEXT = ".txt,.md,.srt"


class RowParts:
    """The layouts and styles every chunk row shares. Each is a widget model of its
    own, sent to the browser: shared, a page of 50 rows is 300 models, not 800. No
    row or button is ever hidden on its own, so sharing a Layout changes nothing else."""

    def __init__(self, w):
        # text, then the buttons; what opens under the row (100% wide) wraps below
        self.row = w.Layout(width="100%", flex_flow="row wrap", align_items="center")
        self.info = w.Layout(flex="1 1 50%")
        self.text = w.widgets.widget_string.HTMLStyle()
        self.button = w.ButtonStyle()
        self.widths = {name: w.Layout(width=width) for name, width in
                       (("play", "80px"), ("regenerate", "120px"), ("edit", "110px"))}


class ChunkRow:
    """One row of the page; `show(chunk)` puts another chunk in it."""

    def __init__(self, w, actions, editor: "ChunkEditor", parts: RowParts):
        c = actions
        self.chunk = None
        self.info = w.HTML(layout=parts.info, style=parts.text)
        self.play = button(w, "Play", "play", "cbx-chunk-play",
                           lambda: c.play_chunk(self.chunk.index), parts.widths["play"],
                           style=parts.button)
        self.regenerate = button(w, "Regenerate", "refresh", "cbx-chunk-regenerate",
                                 lambda: c.regenerate_chunk(self.chunk.index),
                                 parts.widths["regenerate"], style=parts.button,
                                 tooltip="Make this chunk again with its next seed")
        self.edit = button(w, "Edit text", "pencil", "cbx-chunk-edit",
                           lambda: editor.open(self), parts.widths["edit"],
                           style=parts.button)
        self.box = w.Box([self.info, self.play, self.regenerate, self.edit],
                         layout=parts.row)
        self.box.add_class("cbx-chunk-row")

    def show(self, chunk, can_change: bool) -> None:
        """The buttons change before the text: each is its own message to the browser,
        so the other order would show, for a moment, a new chunk beside old buttons."""
        changed = chunk != self.chunk
        self.chunk = chunk
        self.enable(can_change)
        if not changed:
            return
        self.info.value = _chunk_html(chunk)
        for css, wanted in (("cbx-chunk-flagged", bool(chunk.flags)),
                            ("cbx-chunk-damaged", chunk.state == "damaged")):
            if wanted:
                self.box.add_class(css)
            else:
                self.box.remove_class(css)

    def enable(self, can_change: bool) -> None:
        """`can_change`: this page is idle and no other tab or process holds the project."""
        done = self.chunk is not None and self.chunk.done
        self.play.disabled = not done
        self.regenerate.disabled = not (can_change and done)
        self.edit.disabled = not can_change


def _chunk_html(chunk) -> str:
    e = render.e
    if chunk.done:
        facts = f"{chunk.duration:.1f} s &middot; seed {chunk.seed}"
    elif chunk.state == "damaged":
        facts = (f"<span class='cbx-bad cbx-chunk-state'>damaged: {e(chunk.why or '')}"
                 f"</span> &middot; Resume makes it again &middot; seed {chunk.seed}")
    else:
        facts = f"not made yet &middot; seed {chunk.seed}"
    flag = (f"<div class='cbx-warn cbx-chunk-flag'>Flagged: {e(' '.join(chunk.flags))}</div>"
            if chunk.flags else "")
    return (f"<div class='cbx-chunk-info'><b>{chunk.index + 1}.</b> {e(chunk.text)}"
            f"<br><span class='cbx-hint'>{facts}</span>{flag}</div>")


class UnderRow:
    """A box shown under one chunk's row at a time (the text editor, the chunk
    player): one set of widgets for the whole list, whatever the page."""

    def __init__(self, box):
        self.box = box
        self.row: ChunkRow | None = None

    def attach(self, row: ChunkRow | None) -> None:
        """Under `row`; None: under no row (an element taken out of the page stops)."""
        if row is self.row:
            return
        if self.row is not None:
            self.row.box.children = tuple(child for child in self.row.box.children
                                          if child is not self.box)
        self.row = row
        if row is not None:
            row.box.children = (*row.box.children, self.box)


class ChunkEditor(UnderRow):
    """The one "Edit text" box: opened under a row, it remakes that row's chunk."""

    def __init__(self, w, actions):
        self.index: int | None = None       # the chunk being edited
        self.text = w.Textarea(layout=w.Layout(width="100%", height="60px"))
        self.save = button(w, "Save and remake", "check", "cbx-chunk-save",
                           lambda: actions.regenerate_chunk(self.index,
                                                            text=self.text.value),
                           "160px", button_style="primary")
        self.close_button = button(w, "Close", "times", "cbx-chunk-edit-close",
                                   self.close, "90px")
        super().__init__(w.VBox([self.text, w.HBox([self.save, self.close_button])],
                                layout=w.Layout(width="100%")))

    def open(self, row: ChunkRow) -> None:
        self.index = row.chunk.index
        self.text.value = row.chunk.text
        self.attach(row)

    def close(self) -> None:
        self.index = None
        self.attach(None)


class PageBar:
    """Previous / next page, where the page is, and jumps to chunks that need a look."""

    def __init__(self, w, actions):
        c = actions
        self.previous = button(w, "", "chevron-left", "cbx-page-previous",
                               lambda: c.turn_page(-1), "44px", tooltip="Previous page")
        self.next = button(w, "", "chevron-right", "cbx-page-next",
                           lambda: c.turn_page(1), "44px", tooltip="Next page")
        self.where = w.HTML()
        self.where.add_class("cbx-page-where")
        self.jumps = {kind: button(w, f"Next {kind}", "arrow-down", f"cbx-jump-{kind}",
                                   lambda kind=kind: c.jump_to(kind), "140px")
                      for kind in JUMPS}
        self.box = w.HBox([self.previous, self.where, self.next, *self.jumps.values()],
                          layout=w.Layout(width="100%", align_items="center",
                                          flex_flow="row wrap"))
        self.box.add_class("cbx-page-bar")

    def show(self, project) -> None:
        self.previous.disabled = project.start == 0
        self.next.disabled = project.stop >= project.total
        self.where.value = (f"<span class='cbx-hint'>&nbsp;chunks {project.start + 1:,}"
                            f"&ndash;{project.stop:,} of {project.total:,}&nbsp;</span>")
        for kind, jump in self.jumps.items():
            count = len(getattr(project, kind))
            jump.layout.display = None if count else "none"
            jump.description = f"Next {kind} ({count:,})"


class ProjectsCard:
    """The Projects section; `player` is the AudioSlot that plays one chunk at a time.
    `renders` says which session events redraw which part."""

    def __init__(self, w, controller, upload_factory, player):
        self.w, self.session = w, controller.session
        self.actions = c = controller.project_actions
        self.player = player
        self.rows: list[ChunkRow] = []
        self._row_parts = RowParts(w)
        s = self.session
        self.upload = upload_factory(on_file=c.upload_project_text,
                                     on_too_large=c.refuse_project_upload,
                                     on_invalid=s.show_error, invalid=InvalidText,
                                     accept=ACCEPTED_TEXT, max_bytes=MAX_FILE_BYTES,
                                     label="Upload text file",
                                     layout=w.Layout(width="170px"))
        self.upload.add_class("cbx-text-upload")
        self.source = w.HTML()
        self.source.add_class("cbx-project-source")
        self.clear_source = button(w, "Use the text box", "times", "cbx-clear-source",
                                   c.clear_project_source, "150px")
        self.name = w.Text(description="Project name", placeholder="from the file or text",
                           style=DESCRIPTION_STYLE, layout=w.Layout(width="100%"))
        self.name.observe(lambda ch: setattr(s, "project_name", ch["new"]), names="value")
        self.generate = button(w, "Generate as project", "book", "cbx-project-generate",
                               c.generate_project, "190px", button_style="primary")
        self.saved = w.Dropdown(description="Saved", style=DESCRIPTION_STYLE,
                                layout=w.Layout(width="100%"))
        self.saved.add_class("cbx-project-pick")
        self.saved.observe(self._on_pick, names="value")
        self.resume = button(w, "Resume", "play", "cbx-project-resume", c.resume_project,
                             "120px", button_style="warning")
        self.cancel = button(w, "Cancel", "stop", "cbx-project-cancel",
                             controller.generation_actions.cancel, "120px")
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0,
                                        layout=w.Layout(width="100%"))
        self.progress.add_class("cbx-project-progress")
        self.summary = w.HTML()
        self.summary.add_class("cbx-project-summary")
        self.editor = ChunkEditor(w, c)
        self.player_spot = UnderRow(player.box)
        self.pages = PageBar(w, c)
        self.chunks = w.VBox(layout=w.Layout(width="100%"))
        self.chunks.add_class("cbx-project-chunks")
        self.format = w.Dropdown(description="Format", style=DESCRIPTION_STYLE,
                                 options=[(f.label, suffix) for suffix, f in FORMATS.items()],
                                 value=s.export_suffix, layout=w.Layout(width="100%"))
        self.format.add_class("cbx-export-format")
        self.format.observe(lambda ch: c.set_export(suffix=ch["new"]), names="value")
        self.rate = rate_slider(w, s.export_rate, "cbx-export-rate")
        self.rate.observe(lambda ch: c.set_export(rate=ch["new"]), names="value")
        self.export = button(w, "Export", "file-audio-o", "cbx-project-export",
                             c.export_project, "120px")
        self.download = w.HTML()
        self.download.add_class("cbx-export-download")
        self.export_box = w.VBox([self.format, self.rate, w.HBox([self.export,
                                                                 self.download])],
                                 layout=w.Layout(width="100%"))
        hint = w.HTML("<p class='cbx-hint'>A project is saved chunk by chunk under "
                      "outputs/projects/, so nothing finished is lost to a reload, a "
                      "restart or a crash: Resume makes only what is missing. Markdown "
                      "headings start chapters; each subtitle of an .srt is a chunk.</p>")
        self.box = w.VBox([hint, w.HBox([self.upload, self.clear_source]), self.source,
                           self.name, self.generate,
                           w.HBox([self.saved, self.resume, self.cancel]),
                           self.progress, self.summary, self.pages.box, self.chunks,
                           self.export_box],
                          layout=w.Layout(width="100%"))
        self.renders = {"busy": self._render_busy, "progress": self._render_progress,
                        "project": self._render_project, "projects": self._render_projects,
                        "project_source": self._render_project_source,
                        "export": self._render_export,
                        "chunk_audio": self._render_chunk_audio}

    # ------------------------------------------------------------------ events
    def _on_pick(self, change) -> None:
        name = change["new"]
        project = self.session.project
        if name and (project is None or project.name != name):
            self.actions.open_project(name)

    def _render_project_source(self) -> None:
        source = self.session.project_source
        self.clear_source.layout.display = None if source else "none"
        self.source.value = (
            f"<span class='cbx-hint'>Text from <b>{render.e(source[0])}</b> "
            f"({render.e(source[2])}, {len(source[1])} characters).</span>" if source else
            "<span class='cbx-hint'>The project's text is the text box above, or upload a "
            ".txt, .md or .srt file.</span>")

    def _render_projects(self) -> None:
        s = self.session
        options = [("(choose a saved project)", "")] + [
            (f"{p['name']} ({p.get('done', 0):,}/{p.get('chunks', 0):,} chunks"
             + (", unfinished)" if p.get("missing") else ")"), p["name"])
            for p in s.projects if "error" not in p]
        self.saved.options = options
        current = s.project.name if s.project else ""
        self.saved.value = current if current in dict(options).values() else ""
        self._render_busy()

    def _can_change(self) -> bool:
        """This page is idle and no other tab or process holds the project."""
        project = self.session.project
        return self.session.can_generate and not (project is not None
                                                  and project.holder is not None)

    def _render_busy(self) -> None:
        s = self.session
        idle = s.can_generate
        project = s.project
        held = project is not None and project.holder is not None
        unfinished = project is not None and not project.finished
        self.generate.disabled = not idle
        self.upload.disabled = not idle
        self.saved.disabled = not idle
        self.resume.disabled = not (idle and unfinished and not held)
        self.resume.layout.display = None if unfinished else "none"
        self.cancel.layout.display = None if s.project_running else "none"
        self.cancel.disabled = not s.can_cancel
        self.export.disabled = not (idle and project is not None and project.finished)
        self.export_box.layout.display = None if project else "none"
        for row in self.rows:
            row.enable(self._can_change())
        self.editor.save.disabled = not self._can_change()
        self._render_progress()

    def _render_progress(self) -> None:
        s, project = self.session, self.session.project
        running = s.project_running and s.progress
        self.progress.layout.visibility = "visible" if project or running else "hidden"
        if running:
            self.progress.value = render.progress_fraction(s.progress)
        elif project is not None:
            self.progress.value = project.done / max(project.total, 1)

    def _render_project(self) -> None:
        project = self.session.project
        self.pages.box.layout.display = None if project else "none"
        if project is None:
            self.summary.value = ""
            self._render_busy()
            return
        self.summary.value = _summary_html(project)
        while len(self.rows) < len(project.chunks):
            self.rows.append(ChunkRow(self.w, self.actions, self.editor, self._row_parts))
        for row, chunk in zip(self.rows, project.chunks):
            row.show(chunk, self._can_change())
        boxes = tuple(row.box for row in self.rows[:len(project.chunks)])
        if self.chunks.children != boxes:
            self.chunks.children = boxes
        self.pages.show(project)    # after the rows: "chunks 301-350" means they are there
        if self.editor.index is not None and self._row_of(self.editor.index) is None:
            self.editor.close()                 # its chunk left the page
        self._place_player()
        self.rate.value = self.session.export_rate
        self._render_busy()

    def _row_of(self, index: int) -> ChunkRow | None:
        """The row that shows chunk `index`, when it is on the page."""
        project = self.session.project
        if project is None or project.chunk(index) is None:
            return None
        return self.rows[index - project.start]

    def _place_player(self) -> None:
        """The chunk player sits under its chunk's row, and leaves with its page."""
        audio = self.session.chunk_audio
        self.player_spot.attach(self._row_of(audio.index) if audio else None)

    def _render_chunk_audio(self) -> None:
        audio = self.session.chunk_audio
        if audio is None:
            self.player.clear()
        else:
            self.player.show(audio.data)
        self._place_player()

    def _render_export(self) -> None:
        export = self.session.export
        self.download.value = "" if export is None else (
            render.download_link(export.url, export.filename,
                                 f"Download {export.filename}", "cbx-export-link")
            if export.url else f"<span class='cbx-hint'>Saved as {render.e(export.filename)}"
                               "</span>")


def _summary_html(project) -> str:
    e = render.e
    counts = [f"{project.done:,} of {project.total:,} chunks made"]
    if project.flagged:
        counts.append(f"{len(project.flagged):,} flagged")
    if project.damaged:
        counts.append(f"<span class='cbx-bad'>{len(project.damaged):,} damaged</span>")
    note = (f"<br><span class='cbx-warn'>{e(project.note)}</span>" if project.note else "")
    held = project.holder
    holder = "" if held is None else (
        f"<br><span class='cbx-warn cbx-project-holder'>Being made by another tab or "
        f"process (pid {e(str(held.get('pid')))}, {e(str(held.get('action')))} since "
        f"{e(str(held.get('since')))}): Regenerate, Edit and Resume wait until it is "
        "done.</span>")
    return f"<b>{e(project.name)}</b>: {', '.join(counts)}{note}{holder}"

"""The Projects card: the widgets of the dashboard's Projects section (the state and
actions are projects.ProjectActions in the controller).

Small parts: `ChunkRow` is one chunk (text, player, duration, seed, flag, Regenerate,
Edit text); `ProjectsCard` holds the source, the saved projects with Resume, the
progress over chunks, the chunk list and the export. A chunk's row is rebuilt only when
its chunk changes (audio, text, seed or flags), so a long project does not redraw every player per chunk.
"""
from __future__ import annotations

from ..audio import FORMATS
from ..settings import SPEECH_RATE
from ..longform.sources import MAX_FILE_BYTES
from . import render

ACCEPTED_TEXT = ".txt,.md,.srt"


def rate_slider(w, value: float, css_class: str, description: str = SPEECH_RATE.label):
    """A speech-rate slider from the one SPEECH_RATE row (one-off and export alike)."""
    slider = w.FloatSlider(description=description, min=SPEECH_RATE.low,
                           max=SPEECH_RATE.high, step=SPEECH_RATE.step, value=value,
                           readout_format=".2f", continuous_update=False,
                           tooltip=SPEECH_RATE.help, style={"description_width": "110px"},
                           layout=w.Layout(width="100%"))
    slider.add_class(css_class)
    return slider


class ChunkRow:
    """One chunk of the open project. Its player exists only once the chunk has audio."""

    def __init__(self, w, controller, chunk, slot_factory):
        self.chunk = chunk
        c = controller
        info = w.HTML(_chunk_html(chunk), layout=w.Layout(width="100%"))
        self.slot = slot_factory()
        if chunk.wav is not None:
            self.slot.show(chunk.wav.read_bytes())
        regenerate = w.Button(description="Regenerate", icon="refresh",
                              layout=w.Layout(width="120px"),
                              tooltip="Make this chunk again with its next seed")
        regenerate.add_class("cbx-chunk-regenerate")
        regenerate.on_click(lambda _b: c.regenerate_chunk(chunk.index))
        edit = w.Button(description="Edit text", icon="pencil",
                        layout=w.Layout(width="110px"))
        edit.add_class("cbx-chunk-edit")
        self.editor = w.Textarea(value=chunk.text, layout=w.Layout(width="100%",
                                                                     height="60px"))
        save = w.Button(description="Save and remake", icon="check",
                        layout=w.Layout(width="160px"), button_style="primary")
        save.add_class("cbx-chunk-save")
        save.on_click(lambda _b: c.regenerate_chunk(chunk.index, text=self.editor.value))
        self.edit_box = w.VBox([self.editor, save], layout=w.Layout(width="100%",
                                                                    display="none"))
        edit.on_click(lambda _b: self._toggle_edit())
        self.buttons = (regenerate, edit, save)
        self.box = w.VBox([info, self.slot.box, w.HBox([regenerate, edit]), self.edit_box],
                          layout=w.Layout(width="100%"))
        self.box.add_class("cbx-chunk-row")
        if chunk.flags:
            self.box.add_class("cbx-chunk-flagged")

    def _toggle_edit(self) -> None:
        layout = self.edit_box.layout
        layout.display = None if layout.display == "none" else "none"

    def enable(self, enabled: bool, done: bool) -> None:
        regenerate, edit, save = self.buttons
        regenerate.disabled = not (enabled and done)
        edit.disabled = save.disabled = not enabled

    def close(self) -> None:
        self.slot.clear()
        self.box.close()


def _chunk_html(chunk) -> str:
    e = render.e
    if chunk.done:
        facts = f"{chunk.duration:.1f} s &middot; seed {chunk.seed}"
    else:
        facts = f"not made yet &middot; seed {chunk.seed}"
    flag = (f"<div class='cbx-warn cbx-chunk-flag'>Flagged: {e(' '.join(chunk.flags))}</div>"
            if chunk.flags else "")
    return (f"<div class='cbx-chunk-info'><b>{chunk.index + 1}.</b> {e(chunk.text)}"
            f"<br><span class='cbx-hint'>{facts}</span>{flag}</div>")


class ProjectsCard:
    """The Projects section; `slot_factory()` makes an AudioSlot for a chunk's player."""

    def __init__(self, w, controller, upload_factory, slot_factory):
        self.w, self.c = w, controller
        self._slot_factory = slot_factory
        self._rows: dict[int, ChunkRow] = {}
        self._shown_project = None
        c = controller
        self.upload = upload_factory(on_file=c.upload_project_text,
                                     on_too_large=c.refuse_project_upload,
                                     accept=ACCEPTED_TEXT, max_bytes=MAX_FILE_BYTES,
                                     label="Upload text file",
                                     layout=w.Layout(width="170px"))
        self.upload.add_class("cbx-text-upload")
        self.source = w.HTML()
        self.source.add_class("cbx-project-source")
        self.clear_source = w.Button(description="Use the text box", icon="times",
                                     layout=w.Layout(width="150px"))
        self.clear_source.on_click(lambda _b: c.clear_project_source())
        self.name = w.Text(description="Project name", placeholder="from the file or text",
                           style={"description_width": "110px"},
                           layout=w.Layout(width="100%"))
        self.name.observe(lambda ch: setattr(c, "project_name", ch["new"]), names="value")
        self.generate = w.Button(description="Generate as project", icon="book",
                                 layout=w.Layout(width="190px", height="36px"),
                                 button_style="primary")
        self.generate.add_class("cbx-project-generate")
        self.generate.on_click(lambda _b: c.generate_project())
        self.saved = w.Dropdown(description="Saved", style={"description_width": "110px"},
                                layout=w.Layout(width="100%"))
        self.saved.add_class("cbx-project-pick")
        self.saved.observe(self._on_pick, names="value")
        self.resume = w.Button(description="Resume", icon="play",
                               layout=w.Layout(width="120px"), button_style="warning")
        self.resume.add_class("cbx-project-resume")
        self.resume.on_click(lambda _b: c.resume_project())
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0,
                                        layout=w.Layout(width="100%"))
        self.progress.add_class("cbx-project-progress")
        self.summary = w.HTML()
        self.summary.add_class("cbx-project-summary")
        self.chunks = w.VBox(layout=w.Layout(width="100%"))
        self.chunks.add_class("cbx-project-chunks")
        self.format = w.Dropdown(description="Format", style={"description_width": "110px"},
                                 options=[(f.label, s) for s, f in FORMATS.items()],
                                 value=c.export_suffix, layout=w.Layout(width="100%"))
        self.format.add_class("cbx-export-format")
        self.format.observe(lambda ch: c.set_export(suffix=ch["new"]), names="value")
        self.rate = rate_slider(w, c.export_rate, "cbx-export-rate")
        self.rate.observe(lambda ch: c.set_export(rate=ch["new"]), names="value")
        self.export = w.Button(description="Export", icon="file-audio-o",
                               layout=w.Layout(width="120px"))
        self.export.add_class("cbx-project-export")
        self.export.on_click(lambda _b: c.export_project())
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
                           self.name, self.generate, w.HBox([self.saved, self.resume]),
                           self.progress, self.summary, self.chunks, self.export_box],
                          layout=w.Layout(width="100%"))

    # ------------------------------------------------------------------ events
    def _on_pick(self, change) -> None:
        name = change["new"]
        if name and (self.c.project is None or self.c.project.name != name):
            self.c.open_project(name)

    def render(self, event: str) -> None:
        handler = getattr(self, f"_render_{event}", None)
        if handler is not None:
            handler()

    def _render_project_source(self) -> None:
        source = self.c.project_source
        self.clear_source.layout.display = None if source else "none"
        self.source.value = (
            f"<span class='cbx-hint'>Text from <b>{render.e(source[0])}</b> "
            f"({render.e(source[2])}, {len(source[1])} characters).</span>" if source else
            "<span class='cbx-hint'>The project's text is the text box above, or upload a "
            ".txt, .md or .srt file.</span>")

    def _render_projects(self) -> None:
        c = self.c
        options = [("(choose a saved project)", "")] + [
            (f"{p['name']} ({p.get('done', 0)}/{p.get('chunks', 0)} chunks"
             + (", unfinished)" if p.get("missing") else ")"), p["name"])
            for p in c.projects if "error" not in p]
        self.saved.options = options
        current = c.project.name if c.project else ""
        self.saved.value = current if current in dict(options).values() else ""
        self._render_busy()

    def _render_busy(self) -> None:
        c = self.c
        idle = c.can_generate
        project = c.project
        self.generate.disabled = not idle
        self.upload.disabled = not idle
        self.saved.disabled = not idle
        self.resume.disabled = not (idle and project is not None and not project.finished)
        self.resume.layout.display = None if project and not project.finished else "none"
        self.export.disabled = not (idle and project is not None and project.finished)
        self.export_box.layout.display = None if project else "none"
        for row, chunk in zip(self._rows.values(), project.chunks if project else ()):
            row.enable(idle, chunk.done)
        self._render_progress()

    def _render_progress(self) -> None:
        c, project = self.c, self.c.project
        running = c.project_running and c.progress
        self.progress.layout.visibility = "visible" if project or running else "hidden"
        if running:
            self.progress.value = render.progress_fraction(c.progress)
        elif project is not None:
            self.progress.value = project.done / max(len(project.chunks), 1)

    def _render_project(self) -> None:
        c, w = self.c, self.w
        project = c.project
        if project is None:
            self.summary.value = ""
            self._render_busy()
            return
        if self._shown_project != project.name:          # another project: new rows
            for row in self._rows.values():
                row.close()
            self._rows = {}
            self._shown_project = project.name
        flagged = f", {len(project.flagged)} flagged" if project.flagged else ""
        note = (f"<br><span class='cbx-warn'>{render.e(project.note)}</span>"
                if project.note else "")
        self.summary.value = (f"<b>{render.e(project.name)}</b>: {project.done} of "
                              f"{len(project.chunks)} chunks made{flagged}{note}")
        for chunk in project.chunks:
            row = self._rows.get(chunk.index)
            if row is None or row.chunk != chunk:
                if row is not None:
                    row.close()
                self._rows[chunk.index] = ChunkRow(w, c, chunk, self._slot_factory)
        for index in [i for i in self._rows if i >= len(project.chunks)]:
            self._rows.pop(index).close()
        self.chunks.children = tuple(self._rows[i].box for i in range(len(project.chunks)))
        self.rate.value = c.export_rate
        self._render_busy()

    def _render_export(self) -> None:
        export = self.c.export
        self.download.value = "" if export is None else (
            f"<a class='cbx-export-link' download='{render.e(export.filename)}' "
            f"title='Download {render.e(export.filename)}' "
            f"href='{render.data_url(export.data, export.mime)}'>Download "
            f"{render.e(export.filename)}</a>")

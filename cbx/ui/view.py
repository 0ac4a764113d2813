"""The ipywidgets view of the dashboard: lays out the page and mirrors the controller.

Every widget event calls one controller method; every controller event redraws the
part of the page it names. No model logic lives here.
"""
from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path

from ..errors import InvalidVoiceFile
from ..settings import ALL_SETTINGS, DEVICES, DTYPES, SETTINGS
from ..variants import VARIANTS
from ..voices import MAX_VOICE_BYTES
from . import render
from .closing import ShutdownOnClose
from .controller import BUILTIN, CANCELLING, GENERATING, DashboardController
from .playback import Throttle
from .player import LivePlayer
from .projectcard import ProjectsCard, rate_slider
from .tagbar import TagBar
from .upload import ClipUpload

BASIC_SETTINGS = ("exaggeration", "cfg_weight", "temperature")
ADVANCED_SETTINGS = ("min_p", "top_p", "repetition_penalty")
ACCEPTED_UPLOADS = ".wav,.flac,.ogg,.mp3"
# While a generation runs, progress and status lines change faster than anyone reads
# them; each change is a websocket message and a re-layout in the browser.
PAGE_UPDATES_PER_SECOND = 4
THROTTLED_EVENTS = ("progress", "status")
DESCRIPTION_STYLE = {"description_width": "110px"}


def _full_width(w):
    """A Layout of its own for each widget: hiding one hides every widget sharing it."""
    return w.Layout(width="100%")


AUDIO_FORMATS = {".wav": "wav", ".flac": "flac", ".ogg": "ogg", ".mp3": "mpeg"}


class AudioSlot:
    """The place of one player on the page: an `<audio>` element exists there only while
    it holds real audio.

    Why: an element without audio still costs the browser. ipywidgets' `Audio` loops by
    default, a looping zero-length source restarts for ever, and an empty value is a
    source the browser rejects; so nothing stands in the slot until there is something
    to play, and nothing loops. Each new sound gets a new widget, so identical bytes
    load again too."""

    def __init__(self, w, css_class: str, height: str, autoplay: bool = False):
        """`autoplay`: a player filled by a Play click starts at once."""
        self._w = w
        self._css_class = css_class
        self._height = height
        self._autoplay = autoplay
        self.player = None
        self.box = w.Box(layout=w.Layout(width="100%"))

    @property
    def value(self) -> bytes:
        return self.player.value if self.player is not None else b""

    def show(self, data: bytes, fmt: str = "wav") -> None:
        if not data:
            self.clear()
            return
        w = self._w
        player = w.Audio(value=data, format=fmt, autoplay=self._autoplay, loop=False,
                         controls=True, layout=w.Layout(width="100%", height=self._height))
        player.add_class(self._css_class)
        old, self.player = self.player, player
        self.box.children = (player,)
        if old is not None:
            old.close()

    def clear(self) -> None:
        """Remove the player: a media element taken out of the page stops playing."""
        old, self.player = self.player, None
        if old is not None:
            self.box.children = ()
            old.close()


class Dashboard:
    """Builds the widgets for one controller and keeps them in sync with it."""

    def __init__(self, controller: DashboardController):
        import ipywidgets as w

        self.w = w
        self.c = controller
        self._local = threading.local()      # "syncing" flag: ignore our own updates
        self._history_rows: dict[int, object] = {}
        self._throttles = {event: Throttle(lambda e=event: self._render(e),
                                           1.0 / PAGE_UPDATES_PER_SECOND)
                           for event in THROTTLED_EVENTS}
        self._build()
        controller.observe(self._on_event)
        for event in ("health", "voices", "text", "settings", "busy", "status", "error",
                      "result", "history", "progress", "chunk", "project_source",
                      "projects", "project", "export", "chunk_audio"):
            self._on_event(event)

    # ----------------------------------------------------------------- helpers
    @property
    def _syncing(self) -> bool:
        return getattr(self._local, "syncing", False)

    def _sync(self, fn, *args) -> None:
        self._local.syncing = True
        try:
            fn(*args)
        finally:
            self._local.syncing = False

    def _card(self, title: str, *children, cls: str = ""):
        w = self.w
        box = w.VBox([w.HTML(f"<h3>{title}</h3>"), *children],
                     layout=w.Layout(width="100%"))
        box.add_class("cbx-card")
        if cls:
            box.add_class(cls)
        return box

    # ------------------------------------------------------------------- build
    def _button(self, description: str, icon: str, css_class: str, on_click,
                width: str = "110px", height: str | None = None, **style):
        w = self.w
        button = w.Button(description=description, icon=icon, **style,
                          layout=w.Layout(width=width, **({"height": height} if height else {})))
        if css_class:
            button.add_class(css_class)
        button.on_click(lambda _b: on_click())
        return button

    def _html(self, css_class: str = "", value: str = ""):
        widget = self.w.HTML(value)
        if css_class:
            widget.add_class(css_class)
        return widget

    def _build(self) -> None:
        """The page: a header and message lines over two columns of cards."""
        w = self.w
        self.header = w.HTML(render.CSS + render.header_html())
        self.problems = self._html("cbx-problems")
        self.status = self._html("cbx-status-line")
        self.error = self._html("cbx-error-box")
        main = w.VBox([self._voice_card(), self._text_card(), self._settings_card(),
                       self._run_card(), self._output_card(), self._history_card(),
                       self._projects_card()],
                      layout=w.Layout(width="62%", padding="0 12px 0 0"))
        side = w.VBox([self._model_card(), self._health_card()],
                      layout=w.Layout(width="38%"))
        self.root = w.VBox([self.header, self.problems, self.status, self.error,
                            w.HBox([main, side], layout=w.Layout(width="100%")),
                            ShutdownOnClose()])
        self.root.add_class("cbx-app")

    def _voice_card(self):
        w = self.w
        self.upload = ClipUpload(on_file=lambda data, name: self.c.upload_voice(data, name),
                                 on_too_large=self.c.refuse_upload,
                                 on_invalid=self.c.show_error, invalid=InvalidVoiceFile,
                                 accept=ACCEPTED_UPLOADS,
                                 max_bytes=MAX_VOICE_BYTES, layout=w.Layout(width="160px"))
        self.voice_hint = w.HTML()
        self.voice_pick = w.Dropdown(description="Voice", style=DESCRIPTION_STYLE,
                                     layout=w.Layout(width="100%"))
        self.voice_pick.observe(self._on_voice_pick, names="value")
        self.voice_info = w.HTML()
        self.voice_audio = AudioSlot(w, "cbx-voice-player", height="40px")
        return self._card("1 &middot; Voice", w.HBox([self.upload, self.voice_hint]),
                          self.voice_pick, self.voice_info, self.voice_audio.box)

    def _text_card(self):
        w = self.w
        self.text = w.Textarea(placeholder="Type or paste the text to speak. Long text is "
                                           "split into sentence chunks automatically.",
                               continuous_update=True,
                               layout=w.Layout(width="100%", height="140px"))
        self.text.add_class("cbx-text")
        self.text.observe(self._on_text, names="value")
        self.text_info = w.HTML()
        # Turbo's paralinguistic tags: buttons that insert one at the cursor
        self.tag_hint = w.HTML("<span class='cbx-hint'>Turbo's sound tags (click to "
                               "insert at the cursor):</span>")
        self.tag_bar = TagBar(target="cbx-text")
        self.tag_box = w.VBox([self.tag_hint, self.tag_bar], layout=_full_width(w))
        self.tag_box.add_class("cbx-tags")
        # other variants: a warning when the text holds tags they would read aloud
        self.tag_warning = self._html("cbx-tag-warning")
        return self._card("2 &middot; Text", self.text, self.tag_box, self.text_info,
                          self.tag_warning)

    def _settings_card(self):
        w, c = self.w, self.c
        desc = DESCRIPTION_STYLE
        self.variant = w.Dropdown(description="Variant",
                                  options=[(v.label, k) for k, v in VARIANTS.items()],
                                  value=c.variant, style=desc, layout=_full_width(w))
        self.variant.observe(self._on_variant, names="value")
        self.language = w.Dropdown(description="Language", style=desc, layout=_full_width(w),
                                   options=list(VARIANTS["multilingual"].languages),
                                   value="en")
        self.language.observe(self._on_language, names="value")
        self.device = w.ToggleButtons(description="Device", options=list(DEVICES),
                                      value=c.device, style={**desc, "button_width": "70px"},
                                      tooltips=["GPU if available, else CPU",
                                                "NVIDIA GPU", "CPU (slow, always works)"])
        self.device.observe(self._on_device, names="value")
        self.sliders = {name: self._slider(name) for name in ALL_SETTINGS}
        self.seed = w.Text(description="Seed", placeholder="random", style=desc,
                           layout=w.Layout(width="260px"),
                           tooltip="Same seed + same settings + same voice = same audio.")
        self.seed.add_class("cbx-seed")
        self.seed.observe(self._on_seed, names="value")
        self.chunk_chars = w.IntSlider(description="Chunk size", min=50, max=600, step=10,
                                       value=c.max_chunk_chars, style=desc,
                                       layout=_full_width(w), continuous_update=False,
                                       tooltip="Longest chunk in characters; smaller chunks "
                                               "give the first audio sooner.")
        self.chunk_chars.add_class("cbx-chunk-chars")
        self.chunk_chars.observe(self._on_chunk_chars, names="value")
        self.dtype = w.Dropdown(description="Precision", options=list(DTYPES), value=c.dtype,
                                style=desc, layout=w.Layout(width="260px"),
                                tooltip="float16 halves GPU memory for the token model.")
        self.dtype.observe(self._on_dtype, names="value")
        self.rate = rate_slider(w, c.rate, "cbx-rate")
        self.rate.observe(self._on_rate, names="value")
        self.reset = self._button("Reset to defaults", "undo", "",
                                  lambda: self.c.set_variant(self.c.variant), width="160px")
        self.settings_hint = w.HTML()
        advanced = w.VBox([*(self.sliders[n] for n in ADVANCED_SETTINGS), self.chunk_chars,
                           self.dtype])
        self.advanced = w.Accordion(children=[advanced], titles=("Advanced settings",),
                                    selected_index=None, layout=_full_width(w))
        return self._card(
            "3 &middot; Settings", self.variant, self.language, self.device,
            *(self.sliders[n] for n in BASIC_SETTINGS), self.rate,
            w.HBox([self.seed, self.reset]),
            self.settings_hint, self.advanced)

    def _slider(self, name: str):
        spec = SETTINGS[name]
        slider = self.w.FloatSlider(description=spec.label, min=spec.low, max=spec.high,
                                    step=spec.step, value=self.c.settings.get(name, spec.low),
                                    style=DESCRIPTION_STYLE, layout=_full_width(self.w),
                                    readout_format=".2f", continuous_update=False)
        slider.observe(lambda change: self._on_slider(name, change), names="value")
        return slider

    def _run_card(self):
        w = self.w
        self.generate = self._button("Generate", "play", "cbx-generate", self.c.generate,
                                     width="160px", height="40px", button_style="primary")
        self.cancel = self._button("Cancel", "stop", "cbx-cancel", self.c.cancel,
                                   width="120px", height="40px", button_style="warning")
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0,
                                        layout=w.Layout(width="100%"))
        self.progress.add_class("cbx-progress")
        self.progress_text = self._html("cbx-progress-text")
        # Live: the browser plays speak()'s blocks back to back as they are made
        self.live_player = LivePlayer(layout=_full_width(w))
        self.c.live.connect(self.live_player)
        self.preview = w.VBox()
        self.preview.add_class("cbx-preview")
        return self._card("4 &middot; Generate", w.HBox([self.generate, self.cancel]),
                          self.progress, self.progress_text, self.live_player, self.preview)

    def _output_card(self):
        self.result_info = self._html("cbx-result-info")
        self.result_audio = AudioSlot(self.w, "cbx-player", height="48px")
        self.downloads = self._html("cbx-download")
        return self._card("5 &middot; Output", self.result_info, self.result_audio.box,
                          self.downloads)

    def _history_card(self):
        self.history = self.w.VBox()
        self.history_hint = self.w.HTML()
        return self._card("History (this session)", self.history_hint, self.history)

    def _projects_card(self):
        self.projects = ProjectsCard(
            self.w, self.c, upload_factory=ClipUpload,
            player=AudioSlot(self.w, "cbx-chunk-player", height="36px", autoplay=True))
        return self._card("Projects (long texts, saved chunk by chunk)", self.projects.box,
                          cls="cbx-projects")

    def _model_card(self):
        w = self.w
        self.load = self._button("Load", "download", "cbx-load", self.c.load)
        self.unload = self._button("Unload", "eject", "cbx-unload", self.c.unload)
        self.model_note = self._html("cbx-model-note")
        self.end = self._button("End session...", "power-off", "", self._toggle_end_confirm,
                                width="150px")
        self.end_confirm = self._button("Yes, stop this kernel", "", "", self.c.end_session,
                                        width="190px", button_style="danger")
        self.end_confirm.layout.display = "none"
        lifecycle = w.HTML(
            "<p class='cbx-hint'>Load is optional: Generate loads the model on first use. "
            "Unload frees the model and shows the memory it gave back. The complete deload "
            "is ending the session (this stops the kernel process); reload the page "
            "afterwards for a fresh one. An idle model unloads itself automatically.</p>")
        return self._card("Model", w.HBox([self.load, self.unload]), self.model_note,
                          lifecycle, w.HBox([self.end, self.end_confirm]))

    def _health_card(self):
        self.health = self._html("cbx-health-panel")
        self.refresh = self._button("Refresh", "refresh", "", self.c.refresh_health)
        return self._card("Health", self.health, self.refresh)

    # ----------------------------------------------------------- widget events
    def _on_voice_pick(self, change) -> None:
        if not self._syncing:
            self.c.select_voice(change["new"])

    def _on_text(self, change) -> None:
        if not self._syncing:
            self.c.set_text(change["new"])

    def _on_variant(self, change) -> None:
        if not self._syncing:
            self.c.set_variant(change["new"])

    def _on_language(self, change) -> None:
        if not self._syncing:
            self.c.language = change["new"]

    def _on_device(self, change) -> None:
        if not self._syncing:
            self.c.set_device(change["new"])

    def _on_dtype(self, change) -> None:
        if not self._syncing:
            self.c.dtype = change["new"]

    def _on_slider(self, name: str, change) -> None:
        if not self._syncing:
            self.c.set_setting(name, change["new"])

    def _on_rate(self, change) -> None:
        if not self._syncing:
            self.c.set_rate(change["new"])

    def _on_seed(self, change) -> None:
        if not self._syncing:
            self.c.seed_text = change["new"]

    def _on_chunk_chars(self, change) -> None:
        if not self._syncing:
            self.c.set_max_chunk_chars(change["new"])

    def _toggle_end_confirm(self) -> None:
        self.end_confirm.layout.display = None if self.end_confirm.layout.display == "none" \
            else "none"

    # ------------------------------------------------------- controller events
    def _on_event(self, event: str) -> None:
        generating = self.c.busy in (GENERATING, CANCELLING)
        if event in self._throttles and generating:
            self._throttles[event]()
            return
        if event == "busy" and not generating:
            for throttle in self._throttles.values():
                throttle.flush()
        self._render(event)

    def _render(self, event: str) -> None:
        handler = getattr(self, f"_render_{event}", None)
        if handler is not None:
            self._sync(handler)
        if event in ("busy", "progress", "project", "projects", "project_source",
                     "export", "chunk_audio"):
            self._sync(self.projects.render, event)

    def _render_busy(self) -> None:
        c = self.c
        self.generate.disabled = not c.can_generate
        self.generate.description = "Generating..." if c.busy in (GENERATING, CANCELLING) \
            else "Generate"
        self.cancel.disabled = not c.can_cancel
        self.load.disabled = not c.can_load
        self.unload.disabled = not c.can_unload
        self.end.disabled = c.busy is not None or c.session_ended
        self.end_confirm.disabled = self.end.disabled
        editable = c.busy is None and not c.session_ended
        for widget in (self.variant, self.device, self.dtype, self.upload, self.voice_pick):
            widget.disabled = not editable
        self.text.disabled = c.session_ended
        running = c.busy in (GENERATING, CANCELLING)
        self.progress.layout.visibility = "visible" if running else "hidden"
        self._render_settings_enabled()

    def _render_status(self) -> None:
        self.status.value = f"<div class='cbx-status'>{render.e(self.c.status_text)}</div>"

    def _render_error(self) -> None:
        self.error.value = render.error_card(self.c.error)

    def _render_progress(self) -> None:
        p = self.c.progress
        self.progress.value = render.progress_fraction(p)
        self.progress.bar_style = "info" if p else ""
        self.progress_text.value = (f"<span class='cbx-hint'>{render.e(render.progress_text(p))}"
                                    "</span>" if p else "")

    def _render_chunk(self) -> None:
        w = self.w
        done = list(self.c.chunks_done)
        if not done:
            self.preview.children = ()
            return
        have = len(self.preview.children) - 1 if self.preview.children else 0
        children = list(self.preview.children) or [
            w.HTML("<span class='cbx-hint'>Finished chunks (play while the rest is made):"
                   "</span>")]
        for index, total, data in done[have:]:
            children.append(w.HBox([
                w.HTML(f"<span class='cbx-hint'>Chunk {index + 1} of {total}</span>",
                       layout=w.Layout(width="110px")),
                w.Audio(value=data, format="wav", autoplay=False, loop=False,
                        layout=w.Layout(width="80%", height="36px"))]))
        self.preview.children = tuple(children)

    def close(self) -> None:
        """Stop live playback and close the widgets (the page is going away)."""
        self.c.close()
        self.root.close()

    def _render_result(self) -> None:
        entry = self.c.current
        self.result_info.value = render.result_summary(entry)
        audio = entry.audio() if entry is not None else None
        if audio is None:
            self.result_audio.clear()
        else:
            self.result_audio.show(audio)
        self.downloads.value = render.download_links(entry)

    def _render_history(self) -> None:
        w = self.w
        rows = []
        for entry in self.c.history:
            row = self._history_rows.get(entry.number)
            if row is None:
                play = w.Button(description="Play", icon="play", layout=w.Layout(width="80px"))
                play.on_click(lambda _b, n=entry.number: self.c.play(n))
                row = w.HBox([w.HTML(render.history_row_html(entry),
                                     layout=w.Layout(width="62%")),
                              play, w.HTML(render.download_links(entry, compact=True))],
                             layout=w.Layout(width="100%", align_items="center"))
                row.add_class("cbx-history-row")
                self._history_rows[entry.number] = row
            rows.append(row)
        self.history.children = tuple(rows)
        self.history_hint.value = "" if rows else \
            "<span class='cbx-hint'>Results you make appear here, newest first.</span>"

    def _render_health(self) -> None:
        c = self.c
        self.health.value = render.health_html(c.health, c.model, c.model_state,
                                               self._voice_label(), c.health_error)
        problems = c.problems()
        self.problems.value = "" if not problems else (
            "<div class='cbx-card'><h3>Needs attention</h3>"
            + render.errors_html(problems) + "</div>")
        self._render_model()

    def _render_model(self) -> None:
        c = self.c
        # the manager's listener can fire mid-action, so only the cheap parts here
        self.unload.disabled = not c.can_unload
        note = render.e(c.model_note) if c.model_note else ""
        state = render.state_pill(c.model_state)
        self.model_note.value = f"<div>{state}</div><p class='cbx-hint'>{note}</p>"
        if c.health is not None:
            self.health.value = render.health_html(c.health, c.model, c.model_state,
                                                   self._voice_label(), c.health_error)

    def _voice_label(self) -> str:
        c = self.c
        if c.voice_choice == BUILTIN:
            return "built-in" if c.has_builtin_voice() else "none selected"
        return c.voice_choice

    def _render_voices(self) -> None:
        c = self.c
        options = c.voice_options()
        if not options:
            options = [("No voice yet: upload a clip", BUILTIN)]
        self.voice_pick.options = options
        values = [value for _label, value in options]
        self.voice_pick.value = c.voice_choice if c.voice_choice in values else values[0]
        variant = VARIANTS[c.variant]
        self.voice_hint.value = (
            f"<span class='cbx-hint'>WAV, FLAC, OGG or MP3, up to "
            f"{MAX_VOICE_BYTES // 2**20} MB. Best: "
            f"{max(variant.min_voice_seconds, 5):g}-{variant.voice_seconds_used:g} s of one "
            f"person speaking clearly, no music (at least {variant.min_voice_seconds:g} s)."
            "</span>")
        voice = c.voice_info
        if voice is not None:
            extra = "".join(f"<br><span class='cbx-hint'>{render.e(note)}</span>"
                            for note in voice.notes)
            self.voice_info.value = (f"<b>{render.e(voice.name)}</b> &middot; "
                                     f"{voice.duration:.1f} s &middot; "
                                     f"{voice.sample_rate} Hz{extra}")
            path = Path(voice.path)
            if path.is_file():
                self.voice_audio.show(path.read_bytes(),
                                      AUDIO_FORMATS.get(path.suffix.lower(), "wav"))
            else:
                self.voice_audio.clear()
        else:
            self.voice_info.value = (
                "<span class='cbx-hint'>Using the model's built-in voice. Upload a clip to "
                "clone a voice.</span>" if c.has_builtin_voice() else
                "<span class='cbx-hint'>No voice selected: upload a clip of the voice to "
                "clone.</span>")
            self.voice_audio.clear()
        if c.voice_message:
            self.voice_info.value += f"<br><span class='cbx-ok'>{render.e(c.voice_message)}</span>"
        if c.health is not None:
            self._render_model()

    def _render_text(self) -> None:
        if self.text.value != self.c.text:
            self.text.value = self.c.text
        self.text_info.value = render.text_info_html(self.c.text_info)
        self.tag_bar.tags = list(self.c.tags)
        self.tag_bar.disabled = self.c.session_ended
        self.tag_box.layout.display = None if self.c.tags else "none"
        warning = self.c.tag_warning
        self.tag_warning.value = (f"<div class='cbx-warn'>{render.e(warning)}</div>"
                                  if warning else "")

    def _render_settings(self) -> None:
        c = self.c
        self.variant.value = c.variant
        self.language.layout.display = None if VARIANTS[c.variant].languages else "none"
        if VARIANTS[c.variant].languages:
            self.language.value = c.language
        for name, slider in self.sliders.items():
            slider.value = float(c.settings.get(name, slider.min))
        self.dtype.value = c.dtype
        self.device.value = c.device
        self.chunk_chars.value = c.max_chunk_chars
        self.rate.value = c.rate
        self._render_settings_enabled()

    def _render_settings_enabled(self) -> None:
        c = self.c
        ignored = set(c.ignored_settings())
        label = VARIANTS[c.variant].label
        for name, slider in self.sliders.items():
            help_text = SETTINGS[name].help
            if name in ignored:
                slider.disabled = True
                slider.tooltip = f"{label} ignores {name}; it has no effect with this model."
            else:
                slider.disabled = c.session_ended
                slider.tooltip = help_text
        self.settings_hint.value = (
            f"<span class='cbx-hint'>{render.e(label)} ignores: "
            f"{render.e(', '.join(sorted(ignored)))} (greyed out).</span>" if ignored else "")

    def _render_session(self) -> None:
        self._render_busy()
        self.model_note.value = (
            "<div class='cbx-error' data-code='session_ended'><b>Session ended.</b> This "
            "kernel has stopped and returned all its memory. <a href=''>Reload the page</a> "
            "to start a fresh session.</div>")

    # ------------------------------------------------------------------ display
    def _repr_mimebundle_(self, **kwargs):
        return self.root._repr_mimebundle_(**kwargs)


def _exit_kernel() -> None:
    """Stop this kernel process (the complete deload)."""
    os._exit(0)


def dashboard(model_dir=None, backend=None) -> Dashboard:
    """Build the Chatterbox Studio page; the notebook's single cell displays it."""
    from ..errors import CbxError
    from ..envsettings import DEFAULT_IDLE_UNLOAD_MINUTES, idle_unload_minutes
    from .backend import CbxBackend

    config_error = None
    try:
        minutes = idle_unload_minutes()
    except CbxError as exc:          # a bad setting is shown on the page, not a crash
        minutes, config_error = DEFAULT_IDLE_UNLOAD_MINUTES, exc
    controller = DashboardController(backend or CbxBackend(model_dir),
                                     idle_unload_minutes=minutes, exit_process=_exit_kernel)
    if config_error is not None:
        controller.error = config_error
    # kernel shutdown: the browser's live player is told to stop before the kernel goes
    atexit.register(controller.close)
    return Dashboard(controller)

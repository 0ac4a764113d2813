"""The page's cards, one component each: Voice, Text, Settings, Generate, Output,
History, Model and Health (the Projects card is projectcard.py).

Each builds its widgets from the controller (`c`: the session and the actions of the
cards), binds the user's changes to one action each (`Sync.bind`), and says which
session events redraw it (`renders`: event -> draw). No model logic lives here.
"""
from __future__ import annotations

import functools
from pathlib import Path

from .. import tags as tagsmod
from ..errors import InvalidVoiceFile
from ..settings import ALL_SETTINGS, DEVICES, DTYPES, SETTINGS
from ..variants import VARIANTS
from ..voices import MAX_VOICE_BYTES
from . import render
from .player import LivePlayer
from .session import BUILTIN, CANCELLING, GENERATING
from .tagbar import TagBar
from .upload import ClipUpload
from .widgets import (DESCRIPTION_STYLE, AudioSlot, Sync, button, card, full_width, html,
                      rate_slider)

BASIC_SETTINGS = ("exaggeration", "cfg_weight", "temperature")
ADVANCED_SETTINGS = ("min_p", "top_p", "repetition_penalty")
ACCEPTED_UPLOADS = ".wav,.flac,.ogg,.mp3"
AUDIO_FORMATS = {".wav": "wav", ".flac": "flac", ".ogg": "ogg", ".mp3": "mpeg"}


def _editable(session) -> bool:
    """Choices that a running job reads stay still until it ends."""
    return session.busy is None and not session.session_ended


class VoiceCard:
    """Upload a clip, pick a voice, hear it."""

    def __init__(self, w, c, sync: Sync):
        self.session, self.actions = c.session, c.voice_actions
        self.upload = ClipUpload(on_file=self.actions.upload_voice,
                                 on_too_large=self.actions.refuse_upload,
                                 on_invalid=c.session.show_error, invalid=InvalidVoiceFile,
                                 accept=ACCEPTED_UPLOADS, max_bytes=MAX_VOICE_BYTES,
                                 layout=w.Layout(width="160px"))
        self.voice_hint = w.HTML()
        self.voice_pick = w.Dropdown(description="Voice", style=DESCRIPTION_STYLE,
                                     layout=w.Layout(width="100%"))
        sync.bind(self.voice_pick, self.actions.select_voice)
        self.voice_info = w.HTML()
        self.voice_audio = AudioSlot(w, "cbx-voice-player", height="40px")
        self.box = card(w, "1 &middot; Voice", w.HBox([self.upload, self.voice_hint]),
                        self.voice_pick, self.voice_info, self.voice_audio.box)
        self.renders = {"voices": self.render_voices, "busy": self.render_busy,
                        "session": self.render_busy}

    def render_busy(self) -> None:
        for widget in (self.upload, self.voice_pick):
            widget.disabled = not _editable(self.session)

    def render_voices(self) -> None:
        s = self.session
        options = self.actions.voice_options() or [("No voice yet: upload a clip", BUILTIN)]
        self.voice_pick.options = options
        values = [value for _label, value in options]
        self.voice_pick.value = s.voice_choice if s.voice_choice in values else values[0]
        variant = VARIANTS[s.variant]
        self.voice_hint.value = (
            f"<span class='cbx-hint'>WAV, FLAC, OGG or MP3, up to "
            f"{MAX_VOICE_BYTES // 2**20} MB. Best: "
            f"{max(variant.min_voice_seconds, 5):g}-{variant.voice_seconds_used:g} s of one "
            f"person speaking clearly, no music (at least {variant.min_voice_seconds:g} s)."
            "</span>")
        voice = s.voice_info
        if voice is not None:
            self._show_voice(voice)
        else:
            self.voice_info.value = (
                "<span class='cbx-hint'>Using the model's built-in voice. Upload a clip to "
                "clone a voice.</span>" if self.actions.has_builtin_voice() else
                "<span class='cbx-hint'>No voice selected: upload a clip of the voice to "
                "clone.</span>")
            self.voice_audio.clear()
        if s.voice_message:
            self.voice_info.value += (f"<br><span class='cbx-ok'>"
                                      f"{render.e(s.voice_message)}</span>")

    def _show_voice(self, voice) -> None:
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


class TextCard:
    """The text box, its chunk count, Turbo's tag buttons or the tag warning."""

    def __init__(self, w, c, sync: Sync):
        self.session, self.actions = c.session, c.text_actions
        self.text = w.Textarea(placeholder="Type or paste the text to speak. Long text is "
                                           "split into sentence chunks automatically.",
                               continuous_update=True,
                               layout=w.Layout(width="100%", height="140px"))
        self.text.add_class("cbx-text")
        sync.bind(self.text, self.actions.set_text)
        self.text_info = w.HTML()
        # Turbo's paralinguistic tags: buttons that insert one at the cursor
        self.tag_hint = w.HTML("<span class='cbx-hint'>Turbo's sound tags (click to "
                               "insert at the cursor):</span>")
        self.tag_bar = TagBar(target="cbx-text")
        self.tag_box = w.VBox([self.tag_hint, self.tag_bar], layout=full_width(w))
        self.tag_box.add_class("cbx-tags")
        # other variants: a warning when the text holds tags they would read aloud
        self.tag_warning = html(w, "cbx-tag-warning")
        self.box = card(w, "2 &middot; Text", self.text, self.tag_box, self.text_info,
                        self.tag_warning)
        self.renders = {"text": self.render_text, "busy": self.render_busy,
                        "session": self.render_busy}

    def render_busy(self) -> None:
        self.text.disabled = self.session.session_ended

    def render_text(self) -> None:
        s = self.session
        if self.text.value != s.text:
            self.text.value = s.text
        self.text_info.value = render.text_info_html(s.text_info)
        self.tag_bar.groups = tagsmod.tag_groups(s.tags)
        self.tag_bar.disabled = s.session_ended
        self.tag_box.layout.display = None if s.tags else "none"
        warning = self.actions.tag_warning
        self.tag_warning.value = (f"<div class='cbx-warn'>{render.e(warning)}</div>"
                                  if warning else "")


class SettingsCard:
    """Variant, language, device, the generation settings, seed, chunk size, rate."""

    def __init__(self, w, c, sync: Sync):
        s, actions = c.session, c.text_actions
        self.session, self.actions = s, actions
        self.variant = w.Dropdown(description="Variant",
                                  options=[(v.label, k) for k, v in VARIANTS.items()],
                                  value=s.variant, style=DESCRIPTION_STYLE,
                                  layout=full_width(w))
        sync.bind(self.variant, actions.set_variant)
        self.language = w.Dropdown(description="Language", style=DESCRIPTION_STYLE,
                                   layout=full_width(w),
                                   options=list(VARIANTS["multilingual"].languages),
                                   value="en")
        sync.bind(self.language, functools.partial(setattr, s, "language"))
        self.device = w.ToggleButtons(description="Device", options=list(DEVICES),
                                      value=s.device,
                                      style={**DESCRIPTION_STYLE, "button_width": "70px"},
                                      tooltips=["GPU if available, else CPU",
                                                "NVIDIA GPU", "CPU (slow, always works)"])
        sync.bind(self.device, actions.set_device)
        self.sliders = {name: self._slider(w, name) for name in ALL_SETTINGS}
        for name, slider in self.sliders.items():
            sync.bind(slider, functools.partial(actions.set_setting, name))
        self.seed = w.Text(description="Seed", placeholder="random", style=DESCRIPTION_STYLE,
                           layout=w.Layout(width="260px"),
                           tooltip="Same seed + same settings + same voice = same audio.")
        self.seed.add_class("cbx-seed")
        sync.bind(self.seed, functools.partial(setattr, s, "seed_text"))
        self.chunk_chars = w.IntSlider(description="Chunk size", min=50, max=600, step=10,
                                       value=s.max_chunk_chars, style=DESCRIPTION_STYLE,
                                       layout=full_width(w), continuous_update=False,
                                       tooltip="Longest chunk in characters; smaller chunks "
                                               "give the first audio sooner.")
        self.chunk_chars.add_class("cbx-chunk-chars")
        sync.bind(self.chunk_chars, actions.set_max_chunk_chars)
        self.dtype = w.Dropdown(description="Precision", options=list(DTYPES), value=s.dtype,
                                style=DESCRIPTION_STYLE, layout=w.Layout(width="260px"),
                                tooltip="float16 halves GPU memory for the token model.")
        sync.bind(self.dtype, functools.partial(setattr, s, "dtype"))
        self.rate = rate_slider(w, s.rate, "cbx-rate")
        sync.bind(self.rate, actions.set_rate)
        self.reset = button(w, "Reset to defaults", "undo", "",
                            lambda: actions.set_variant(s.variant), "160px")
        self.settings_hint = w.HTML()
        advanced = w.VBox([*(self.sliders[n] for n in ADVANCED_SETTINGS), self.chunk_chars,
                           self.dtype])
        self.advanced = w.Accordion(children=[advanced], titles=("Advanced settings",),
                                    selected_index=None, layout=full_width(w))
        self.box = card(w, "3 &middot; Settings", self.variant, self.language, self.device,
                        *(self.sliders[n] for n in BASIC_SETTINGS), self.rate,
                        w.HBox([self.seed, self.reset]), self.settings_hint, self.advanced)
        self.renders = {"settings": self.render_settings, "busy": self.render_busy,
                        "session": self.render_busy}

    def _slider(self, w, name: str):
        spec = SETTINGS[name]
        return w.FloatSlider(description=spec.label, min=spec.low, max=spec.high,
                             step=spec.step, value=self.session.settings.get(name, spec.low),
                             style=DESCRIPTION_STYLE, layout=full_width(w),
                             readout_format=".2f", continuous_update=False)

    def render_busy(self) -> None:
        for widget in (self.variant, self.device, self.dtype):
            widget.disabled = not _editable(self.session)
        self._render_enabled()

    def render_settings(self) -> None:
        s = self.session
        self.variant.value = s.variant
        self.language.layout.display = None if VARIANTS[s.variant].languages else "none"
        if VARIANTS[s.variant].languages:
            self.language.value = s.language
        for name, slider in self.sliders.items():
            slider.value = float(s.settings.get(name, slider.min))
        self.dtype.value = s.dtype
        self.device.value = s.device
        self.chunk_chars.value = s.max_chunk_chars
        self.rate.value = s.rate
        self._render_enabled()

    def _render_enabled(self) -> None:
        """A setting the variant ignores is greyed out, and says so."""
        ignored = set(self.actions.ignored_settings())
        label = VARIANTS[self.session.variant].label
        for name, slider in self.sliders.items():
            if name in ignored:
                slider.disabled = True
                slider.tooltip = f"{label} ignores {name}; it has no effect with this model."
            else:
                slider.disabled = self.session.session_ended
                slider.tooltip = SETTINGS[name].help
        self.settings_hint.value = (
            f"<span class='cbx-hint'>{render.e(label)} ignores: "
            f"{render.e(', '.join(sorted(ignored)))} (greyed out).</span>" if ignored else "")


class GenerateCard:
    """Generate and Cancel, the progress, the live player and the finished chunks."""

    def __init__(self, w, c):
        self.w, self.session = w, c.session
        actions = c.generation_actions
        self.generate = button(w, "Generate", "play", "cbx-generate", actions.generate,
                               w.Layout(width="160px", height="40px"),
                               button_style="primary")
        self.cancel = button(w, "Cancel", "stop", "cbx-cancel", actions.cancel,
                             w.Layout(width="120px", height="40px"), button_style="warning")
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0,
                                        layout=w.Layout(width="100%"))
        self.progress.add_class("cbx-progress")
        self.progress_text = html(w, "cbx-progress-text")
        # Live: the browser plays speak()'s blocks back to back as they are made
        self.live_player = LivePlayer(layout=full_width(w))
        c.session.live.connect(self.live_player)
        self.preview = w.VBox()
        self.preview.add_class("cbx-preview")
        self.box = card(w, "4 &middot; Generate", w.HBox([self.generate, self.cancel]),
                        self.progress, self.progress_text, self.live_player, self.preview)
        self.renders = {"busy": self.render_busy, "session": self.render_busy,
                        "progress": self.render_progress, "chunk": self.render_chunk}

    def render_busy(self) -> None:
        s = self.session
        running = s.busy in (GENERATING, CANCELLING)
        self.generate.disabled = not s.can_generate
        self.generate.description = "Generating..." if running else "Generate"
        self.cancel.disabled = not s.can_cancel
        self.progress.layout.visibility = "visible" if running else "hidden"

    def render_progress(self) -> None:
        p = self.session.progress
        self.progress.value = render.progress_fraction(p)
        self.progress.bar_style = "info" if p else ""
        self.progress_text.value = (f"<span class='cbx-hint'>{render.e(render.progress_text(p))}"
                                    "</span>" if p else "")

    def render_chunk(self) -> None:
        """Each finished chunk gets a player while the rest is made (rows added, never
        redrawn)."""
        w = self.w
        done = list(self.session.chunks_done)
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


class OutputCard:
    """The result in its player, with its download links."""

    def __init__(self, w, c):
        self.session = c.session
        self.result_info = html(w, "cbx-result-info")
        self.result_audio = AudioSlot(w, "cbx-player", height="48px")
        self.downloads = html(w, "cbx-download")
        self.box = card(w, "5 &middot; Output", self.result_info, self.result_audio.box,
                        self.downloads)
        self.renders = {"result": self.render_result}

    def render_result(self) -> None:
        entry = self.session.current
        self.result_info.value = render.result_summary(entry)
        audio = entry.audio() if entry is not None else None
        if audio is None:
            self.result_audio.clear()
        else:
            self.result_audio.show(audio)
        self.downloads.value = render.download_links(entry)


class HistoryCard:
    """This session's results, newest first, each with Play and its downloads."""

    def __init__(self, w, c):
        self.w, self.session, self.actions = w, c.session, c.generation_actions
        self._rows: dict[int, object] = {}      # made once per result, then reused
        self.history = w.VBox()
        self.history_hint = w.HTML()
        self.box = card(w, "History (this session)", self.history_hint, self.history)
        self.renders = {"history": self.render_history}

    def render_history(self) -> None:
        rows = [self._row(entry) for entry in self.session.history]
        self.history.children = tuple(rows)
        self.history_hint.value = "" if rows else \
            "<span class='cbx-hint'>Results you make appear here, newest first.</span>"

    def _row(self, entry):
        row = self._rows.get(entry.number)
        if row is None:
            w = self.w
            play = button(w, "Play", "play", "",
                          functools.partial(self.actions.play, entry.number), "80px")
            row = w.HBox([w.HTML(render.history_row_html(entry),
                                 layout=w.Layout(width="62%")),
                          play, w.HTML(render.download_links(entry, compact=True))],
                         layout=w.Layout(width="100%", align_items="center"))
            row.add_class("cbx-history-row")
            self._rows[entry.number] = row
        return row


class ModelCard:
    """Load, Unload, the memory an unload gave back, and ending the session."""

    def __init__(self, w, c):
        self.session, actions = c.session, c.model_actions
        self.load = button(w, "Load", "download", "cbx-load", actions.load)
        self.unload = button(w, "Unload", "eject", "cbx-unload", actions.unload)
        self.model_note = html(w, "cbx-model-note")
        self.end = button(w, "End session...", "power-off", "", self._toggle_end_confirm,
                          "150px")
        self.end_confirm = button(w, "Yes, stop this kernel", "", "", actions.end_session,
                                  "190px", button_style="danger")
        self.end_confirm.layout.display = "none"
        lifecycle = w.HTML(
            "<p class='cbx-hint'>Load is optional: Generate loads the model on first use. "
            "Unload frees the model and shows the memory it gave back. The complete deload "
            "is ending the session (this stops the kernel process); reload the page "
            "afterwards for a fresh one. An idle model unloads itself automatically.</p>")
        self.box = card(w, "Model", w.HBox([self.load, self.unload]), self.model_note,
                        lifecycle, w.HBox([self.end, self.end_confirm]))
        self.renders = {"busy": self.render_busy, "model": self.render_model,
                        "health": self.render_model, "session": self.render_session}

    def _toggle_end_confirm(self) -> None:
        self.end_confirm.layout.display = None if self.end_confirm.layout.display == "none" \
            else "none"

    def render_busy(self) -> None:
        s = self.session
        self.load.disabled = not s.can_load
        self.unload.disabled = not s.can_unload
        self.end.disabled = s.busy is not None or s.session_ended
        self.end_confirm.disabled = self.end.disabled

    def render_model(self) -> None:
        """Only the cheap parts: the manager's listener can fire mid-action."""
        s = self.session
        self.unload.disabled = not s.can_unload
        note = render.e(s.model_note) if s.model_note else ""
        self.model_note.value = (f"<div>{render.state_pill(s.model_state)}</div>"
                                 f"<p class='cbx-hint'>{note}</p>")

    def render_session(self) -> None:
        self.render_busy()
        self.model_note.value = (
            "<div class='cbx-error' data-code='session_ended'><b>Session ended.</b> This "
            "kernel has stopped and returned all its memory. <a href=''>Reload the page</a> "
            "to start a fresh session.</div>")


class HealthCard:
    """Libraries, weight files, device and memory, and the model's state."""

    def __init__(self, w, c):
        self.session, self.voices = c.session, c.voice_actions
        self.health = html(w, "cbx-health-panel")
        self.refresh = button(w, "Refresh", "refresh", "", c.model_actions.refresh_health)
        self.box = card(w, "Health", self.health, self.refresh)
        self.renders = {"health": self.render_health, "model": self.render_health,
                        "voices": self.render_health}

    def render_health(self) -> None:
        s = self.session
        self.health.value = render.health_html(s.health, s.model, s.model_state,
                                               self.voices.voice_label(), s.health_error)


__all__ = ["VoiceCard", "TextCard", "SettingsCard", "GenerateCard", "OutputCard",
           "HistoryCard", "ModelCard", "HealthCard"]

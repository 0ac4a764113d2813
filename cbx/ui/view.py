"""The ipywidgets view of the dashboard: the page's layout, made of one component per
card (cards.py, projectcard.py), kept in sync with the controller.

Every widget event calls one action; every session event redraws the cards that
subscribed to it. No model logic lives here.
"""
from __future__ import annotations

import atexit
import os
from collections import defaultdict

from . import render
from .cards import (GenerateCard, HealthCard, HistoryCard, ModelCard, OutputCard,
                    SettingsCard, TextCard, VoiceCard)
from .closing import ShutdownOnClose
from .compose import Composed
from .controller import DashboardController
from .playback import Throttle
from .projectcard import ProjectsCard
from .session import CANCELLING, GENERATING
from .upload import ClipUpload
from .widgets import AudioSlot, Sync, card, html

# While a generation runs, progress and status lines change faster than anyone reads
# them; each change is a websocket message and a re-layout in the browser.
PAGE_UPDATES_PER_SECOND = 4
THROTTLED_EVENTS = ("progress", "status")
# What a new page draws, in this order.
FIRST_DRAW = ("health", "voices", "text", "settings", "busy", "status", "error", "result",
              "history", "progress", "chunk", "project_source", "projects", "project",
              "export", "chunk_audio")


class Dashboard(Composed):
    """The page for one controller. Its cards' widgets answer by name (`view.text`,
    `view.generate`); the Projects card is `view.projects`."""

    def __init__(self, controller: DashboardController):
        import ipywidgets as w

        self.w = w
        self.c = controller
        sync = Sync()
        self.voice_card = VoiceCard(w, controller, sync)
        self.text_card = TextCard(w, controller, sync)
        self.settings_card = SettingsCard(w, controller, sync)
        self.generate_card = GenerateCard(w, controller)
        self.output_card = OutputCard(w, controller)
        self.history_card = HistoryCard(w, controller)
        self.model_card = ModelCard(w, controller)
        self.health_card = HealthCard(w, controller)
        self.projects = ProjectsCard(
            w, controller, upload_factory=ClipUpload,
            player=AudioSlot(w, "cbx-chunk-player", height="36px", autoplay=True))
        cards = (self.voice_card, self.text_card, self.settings_card, self.generate_card,
                 self.output_card, self.history_card, self.model_card, self.health_card)
        self._layout()
        self._renders = defaultdict(list)       # event -> draws, in page order
        for renders in (*(part.renders for part in cards), self.projects.renders,
                        {"status": self._render_status, "error": self._render_error,
                         "health": self._render_problems}):
            for event, draw in renders.items():
                self._renders[event].append(lambda draw=draw: sync.redraw(draw))
        self._throttles = {event: Throttle(lambda e=event: self._render(e),
                                           1.0 / PAGE_UPDATES_PER_SECOND)
                           for event in THROTTLED_EVENTS}
        controller.observe(self._on_event)
        for event in FIRST_DRAW:
            self._on_event(event)
        self.compose(*cards)

    def _layout(self) -> None:
        """The page: a header and message lines over two columns of cards."""
        w = self.w
        self.header = w.HTML(render.CSS + render.header_html())
        self.problems = html(w, "cbx-problems")
        self.status = html(w, "cbx-status-line")
        self.error = html(w, "cbx-error-box")
        projects = card(w, "Projects (long texts, saved chunk by chunk)", self.projects.box,
                        css_class="cbx-projects")
        main = w.VBox([self.voice_card.box, self.text_card.box, self.settings_card.box,
                       self.generate_card.box, self.output_card.box, self.history_card.box,
                       projects],
                      layout=w.Layout(width="62%", padding="0 12px 0 0"))
        side = w.VBox([self.model_card.box, self.health_card.box],
                      layout=w.Layout(width="38%"))
        self.root = w.VBox([self.header, self.problems, self.status, self.error,
                            w.HBox([main, side], layout=w.Layout(width="100%")),
                            ShutdownOnClose()])
        self.root.add_class("cbx-app")

    # ------------------------------------------------------- controller events
    def _on_event(self, event: str) -> None:
        generating = self.c.session.busy in (GENERATING, CANCELLING)
        if event in self._throttles and generating:
            self._throttles[event]()
            return
        if event == "busy" and not generating:
            for throttle in self._throttles.values():
                throttle.flush()
        self._render(event)

    def _render(self, event: str) -> None:
        for draw in self._renders.get(event, ()):
            draw()

    def _render_status(self) -> None:
        self.status.value = (f"<div class='cbx-status'>"
                             f"{render.e(self.c.session.status_text)}</div>")

    def _render_error(self) -> None:
        self.error.value = render.error_card(self.c.session.error)

    def _render_problems(self) -> None:
        problems = self.c.model_actions.problems()
        self.problems.value = "" if not problems else (
            "<div class='cbx-card'><h3>Needs attention</h3>"
            + render.errors_html(problems) + "</div>")

    def close(self) -> None:
        """Stop live playback and close the widgets (the page is going away)."""
        self.c.close()
        self.root.close()

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
        controller.session.error = config_error
    # kernel shutdown: the browser's live player is told to stop before the kernel goes
    atexit.register(controller.close)
    return Dashboard(controller)

"""The dashboard in plain Python: the session and each card's actions, composed.

Why separate from the widgets: every rule the page follows (Generate disabled while a
generation runs, Cancel only then, errors keep the text, voice and history, the health
panel refreshes after every action) lives in the session and the actions, so tests can
drive it without a browser and without ipywidgets. The view only observes events and
re-renders.

The controller itself only builds the parts and answers for them (`Composed`):
`c.generate()`, `c.upload_voice(...)`, `c.voice_choice` and `c.busy` reach the one
part that has each name, so notebooks and tests need not know which card owns what.
"""
from __future__ import annotations

from typing import Callable

from .compose import Composed
from .generation import GenerationActions
from .modelactions import ModelActions
from .playback import Schedule
from .projects import ProjectActions
from .session import Session
from .textactions import TextActions
from .voiceactions import VoiceActions


class DashboardController(Composed):
    """The page's session and the actions of its cards (model and health, voice, text
    and settings, generation, projects), all on one Backend."""

    def __init__(self, backend, *, idle_unload_minutes: float | None = None,
                 threaded: bool = True, exit_process: Callable[[], None] | None = None,
                 schedule: Schedule | None = None):
        """`schedule(delay, callback)` times the text count, the project holder's poll
        and the project's redraws (default: a daemon timer thread); tests pass a fake
        clock to step them."""
        self.backend = backend
        self.session = session = Session(threaded=threaded, schedule=schedule)
        self.model_actions = ModelActions(session, backend, exit_process=exit_process)
        self.voice_actions = VoiceActions(session, backend)
        self.text_actions = TextActions(session, backend, voices=self.voice_actions,
                                        health=self.model_actions)
        self.generation_actions = GenerationActions(session, backend)
        self.project_actions = ProjectActions(session, backend)
        session.after_job = lambda: self.model_actions.refresh_health(emit=False)

        self.model_actions.connect(idle_unload_minutes)
        self.voice_actions.refresh_voices(emit=False)
        self.model_actions.refresh_health(emit=False)
        self.project_actions.refresh_projects(emit=False)
        if self.model_actions.problems():
            session.status_line = "Setup needed: see 'Needs attention' above for what to do."
        self.compose(session, self.model_actions, self.voice_actions, self.text_actions,
                     self.generation_actions, self.project_actions)

    def close(self) -> None:
        """Stop live playback and the project's polling (the page is going away)."""
        self.session.live.stop()
        self.project_actions.stop_watching()


__all__ = ["DashboardController"]

"""The one seam between the dashboard and the rest of cbx.

The controller talks only to an object with this shape, so widget tests can drive the
dashboard with a fake backend (fast, no model) and with this real one (random-weight
checkpoint) through the same code. Everything here is a thin call into layers 2-4;
imports stay inside methods so building the page never needs torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Protocol

from ..state import ModelInfo                   # standard library only
from ..text import DEFAULT_FIRST_CHUNK_CHARS


class Backend(Protocol):
    """What the dashboard's controller may ask of cbx: nothing else crosses the seam.
    The real `CbxBackend` and the tests' fake both implement it (tests/test_ui_seam.py
    checks that their methods match)."""

    def status(self, model_state: dict | None = None, device: str = "auto"):
        """The environment report (libraries, weight files, device, memory)."""
    def describe_model(self) -> ModelInfo:
        """The model manager's state, one consistent snapshot."""
    def load(self, variant: str, device: str, dtype: str) -> ModelInfo:
        """Load (or keep) the model; returns describe_model()."""
    def unload(self):
        """Free the model; returns a report with .summary()."""
    def add_model_listener(self, callback: Callable[..., Any]) -> None:
        """Call `callback(describe_model())` whenever the model's state changes."""
    def start_idle_unload(self, minutes: float) -> None:
        """Unload after `minutes` without use (0: never)."""
    def list_voices(self, variant: str = "original") -> list:
        """The saved voices, with notes for `variant`."""
    def save_voice(self, data: bytes, filename: str, variant: str):
        """Validate an uploaded clip and save it in the voice library."""
    def builtin_voice(self, variant: str):
        """The variant's bundled voice, or None when it has none on disk."""
    def split_text(self, text: str, max_chars: int, *,
                   first_chunk_chars: int | None = DEFAULT_FIRST_CHUNK_CHARS) -> list[str]:
        """The chunks speak() will make."""
    def estimate_seconds(self, text: str) -> float:
        """About how long `text` takes to say."""
    def paralinguistic_tags(self, variant: str) -> tuple[str, ...]:
        """The tags (`[laugh]`, ...) `variant` speaks; () for one that reads them aloud."""
    def make_cancel_token(self):
        """A token speak() checks between tokens."""
    def prepare_voice(self, voice, *, exaggeration: float) -> None:
        """Compute the loaded model's conditionals for a saved voice ahead of speak()."""
    def speak(self, text: str, voice, **kwargs):
        """Generate (see cbx.speak)."""
    def cancel_running(self) -> bool:
        """Ask a running generation to stop."""
    def output_dir(self) -> Path:
        """Where results are saved."""
    def read_text_upload(self, data: bytes, filename: str) -> tuple[str, str]:
        """(text, format) of an uploaded .txt/.md/.srt file; `invalid_text` if bad."""
    def list_projects(self) -> list[dict]:
        """The projects on disk (cbx.projects(), read from rows alone): name, chunks,
        done, missing, flagged, damaged, seconds, holder; or name and error."""
    def create_project(self, name: str, text: str, voice, *, text_format: str,
                       seed: int | None, max_chunk_chars: int, **options) -> dict:
        """Create (or reopen with new text) project `name`; returns {"name", "changes"}:
        its exact name and what a reopen changed ("" for nothing)."""
    def project_overview(self, name: str, start: int = 0, stop: int | None = None) -> dict:
        """{"name", "rate", "status": Project.status(), "chunks": Project.overview()
        rows of chunks [start, stop)}: one page of a project, however long it is."""
    def project_holder(self, name: str) -> dict | None:
        """Who is changing the project now ({"pid", "host", "action", "since"}), or None."""
    def run_project(self, name: str, *, progress, cancel, on_chunk) -> dict:
        """Make the project's missing chunks (Project.run); returns its status."""
    def regenerate_chunk(self, name: str, index: int, text: str | None = None, *,
                         progress=None, cancel=None) -> dict:
        """Chunk `index` again with its next seed, or with new `text`; cancellable (the
        old take stays current until the new one is stored)."""
    def export_project(self, name: str, suffix: str, rate: float) -> Path:
        """The joined audio in the format of `suffix` (cbx.audio.FORMATS), saved under a
        free name in the project's exports/ folder; its path."""


class ProjectsOnDisk:
    """The project half of the backend: cbx.longform, each chunk made by the backend's
    own `speak` (groups of them by its `_speak_chunks`; None: one at a time). Shared by
    the real backend and the tests' fake, so the fake replaces only the model and the
    page's project logic is the real one."""

    _speak_chunks = None

    def read_text_upload(self, data: bytes, filename: str) -> tuple[str, str]:
        from ..longform.sources import read_upload

        return read_upload(data, filename)

    def list_projects(self) -> list[dict]:
        from ..longform import projects

        return projects()

    def _open(self, name: str, text=None, **kwargs):
        """A handle on the project's store; close it (`with`) when done, since the page
        asks often (a page of chunks, the holder every few seconds)."""
        from ..longform import project

        return project(name, text, speak=self.speak, speak_chunks=self._speak_chunks,
                       **kwargs)

    def create_project(self, name: str, text: str, voice, *, text_format: str,
                       seed: int | None, max_chunk_chars: int, **options) -> dict:
        with self._open(name, text, voice=voice, seed=seed, text_format=text_format,
                        max_chunk_chars=max_chunk_chars, **options) as job:
            changes = job.changes
            note = "" if not changes else (
                f"{changes.reason}: chunks {_numbers(changes.changed)} will be made again "
                "(their old takes stay in the project's history)"
                if changes.changed else changes.reason)
            return {"name": job.name, "changes": note}

    def project_overview(self, name: str, start: int = 0, stop: int | None = None) -> dict:
        with self._open(name) as job:
            return {"name": job.name, "rate": job.rate, "status": job.status(),
                    "chunks": job.overview(start, stop)}

    def project_holder(self, name: str) -> dict | None:
        with self._open(name) as job:
            return job.holder()

    def run_project(self, name: str, *, progress, cancel, on_chunk) -> dict:
        with self._open(name) as job:
            return job.run(progress=progress, cancel=cancel, on_chunk=on_chunk)

    def regenerate_chunk(self, name: str, index: int, text: str | None = None, *,
                         progress=None, cancel=None) -> dict:
        with self._open(name) as job:
            return job.regenerate(index, text=text, progress=progress, cancel=cancel)

    def export_project(self, name: str, suffix: str, rate: float) -> Path:
        from ..audio import format_for

        format_for(f"export{suffix}")         # an unknown suffix fails before any work
        from ..longform.names import slug

        with self._open(name) as job:
            return job.export(job.folder / "exports" / f"{slug(job.name)}{suffix}",
                              rate=rate, unique=True)


def _numbers(indices) -> str:
    """Chunk numbers as people count them, the first few of a long list."""
    shown = ", ".join(str(i + 1) for i in indices[:10])
    return shown + (f" and {len(indices) - 10} more" if len(indices) > 10 else "")


class CbxBackend(ProjectsOnDisk, Backend):
    """The real backend: status, model manager, voice library, text helpers and speak()."""

    def __init__(self, model_dir: str | os.PathLike | None = None):
        self.model_dir = model_dir

    # -- layer 2: environment -------------------------------------------------------
    def status(self, model_state: dict | None = None, device: str = "auto"):
        from ..envcheck import status

        return status(model_dir=self.model_dir, model_state=model_state,
                               device=device)

    # -- layer 3: model manager ------------------------------------------------------
    def _manager(self):
        from ..engine.manager import get_manager

        return get_manager()

    def describe_model(self) -> ModelInfo:
        return self._manager().describe()

    def load(self, variant: str, device: str, dtype: str) -> ModelInfo:
        return self._manager().load(variant=variant, device=device, dtype=dtype,
                                    model_dir=self.model_dir)

    def unload(self):
        return self._manager().unload()

    def add_model_listener(self, callback: Callable[..., Any]) -> None:
        self._manager().add_listener(callback)

    def start_idle_unload(self, minutes: float) -> None:
        self._manager().start_idle_unload(minutes)

    # -- layer 4: voices, text, synthesis ------------------------------------------
    def list_voices(self, variant: str = "original") -> list:
        from ..voices import list_voices

        return list_voices(variant=variant)

    def save_voice(self, data: bytes, filename: str, variant: str):
        from ..voices import load_voice

        return load_voice(data, name=filename, variant=variant)

    def builtin_voice(self, variant: str):
        """The variant's bundled voice (conds.pt) or None when it has none on disk."""
        from ..paths import variant_dir
        from ..variants import BUILTIN_VOICE_FILE

        if not (variant_dir(variant, self.model_dir) / BUILTIN_VOICE_FILE).is_file():
            return None
        from ..voices import Voice

        return Voice.builtin_voice()

    def split_text(self, text: str, max_chars: int, *,
                   first_chunk_chars: int | None = DEFAULT_FIRST_CHUNK_CHARS) -> list[str]:
        """The chunks speak() will make (pass the same first_chunk_chars as to speak)."""
        from ..text import split_text

        return split_text(text, max_chars=max_chars, first_chunk_chars=first_chunk_chars)

    def estimate_seconds(self, text: str) -> float:
        from ..text import estimate_seconds

        return estimate_seconds(text)

    def paralinguistic_tags(self, variant: str) -> tuple[str, ...]:
        from ..tags import variant_tags

        return variant_tags(variant, self.model_dir)

    def make_cancel_token(self):
        from ..engine.synth import CancelToken

        return CancelToken()

    def prepare_voice(self, voice, *, exaggeration: float) -> None:
        from ..engine.synth import prepare_voice

        prepare_voice(voice, exaggeration=exaggeration)

    def speak(self, text: str, voice, **kwargs):
        from ..engine.synth import speak

        if self.model_dir is not None:
            kwargs.setdefault("model_dir", self.model_dir)
        return speak(text, voice, **kwargs)

    def _speak_chunks(self, texts: list, voice, **kwargs):
        """A project's group of chunks decoded together (engine.synth.speak_chunks)."""
        from ..engine.synth import speak_chunks

        if self.model_dir is not None:
            kwargs.setdefault("model_dir", self.model_dir)
        return speak_chunks(texts, voice, **kwargs)

    def cancel_running(self) -> bool:
        """Cancel through the manager too, in case speak() swapped in its own token."""
        return self._manager().cancel()

    def output_dir(self) -> Path:
        from ..paths import output_dir

        return output_dir()


"""The error taxonomy (docs/DESIGN.md): every failure a user can meet has a stable code,
a one-line message and the one command or click that fixes it.

Layer 1: no heavy imports.
"""
from __future__ import annotations

import traceback as _traceback


class CbxError(Exception):
    """Base of every error cbx raises on purpose; the dashboard renders all three fields."""

    code = "cbx_error"

    def __init__(self, message: str, solution: str, *, details: str | None = None):
        super().__init__(message)
        self.message = message
        self.solution = solution
        self.details = details

    def to_dict(self) -> dict:
        data = {"error": self.code, "message": self.message, "solution": self.solution}
        if self.details:
            data["details"] = self.details
        return data

    def __str__(self) -> str:
        return f"[{self.code}] {self.message} -> {self.solution}"


SETUP_COMMAND = "python setup_env.py"


class EnvironmentNotSetup(CbxError):
    code = "environment_not_setup"


class ModelFilesMissing(CbxError):
    code = "model_files_missing"


class NoVoiceLoaded(CbxError):
    code = "no_voice_loaded"


class VoiceFileNotFound(CbxError):
    code = "voice_file_not_found"


class InvalidVoiceFile(CbxError):
    code = "invalid_voice_file"


class InvalidText(CbxError):
    code = "invalid_text"


class InvalidSetting(CbxError):
    code = "invalid_setting"


class ModelBusy(CbxError):
    """A generation is running in this kernel; a second one would only queue behind it."""

    code = "model_busy"


class ProjectLocked(ModelBusy):
    """Another kernel or process is changing this long-form project (its writer lock is
    held; the message names the holder). The page turns its project buttons off while
    that lasts, and a click that races it gets this error and changes nothing."""

    code = "project_busy"


class GpuInUse(CbxError):
    """Another kernel holds a model on the GPU; loading a second would run out of VRAM."""

    code = "gpu_in_use"


class GenerationCancelled(CbxError):
    """The user pressed Cancel (or unloaded): not a failure, but the caller must stop."""

    code = "generation_cancelled"


class UnexpectedError(CbxError):
    """Something cbx did not foresee; the full traceback is kept for the page's toggle.
    Each subclass names the action that failed."""

    code = "unexpected_error"

    def __init__(self, message: str, solution: str, *, details: str | None = None,
                 traceback: str | None = None):
        super().__init__(message, solution, details=details)
        self.traceback = traceback

    @classmethod
    def from_exception(cls, exc: BaseException, solution: str | None = None):
        """Wrap an unexpected exception, keeping its full traceback for the toggle."""
        tb = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(
            f"{type(exc).__name__}: {exc}",
            solution or "Try again; if it keeps failing, unload the model, restart the kernel "
                        "and report the traceback.",
            traceback=tb,
        )

    def to_dict(self) -> dict:
        data = super().to_dict()
        if self.traceback:
            data["traceback"] = self.traceback
        return data


class GenerationFailed(UnexpectedError):
    """Generating audio failed (CUDA out of memory included)."""

    code = "generation_failed"


class ModelLoadFailed(UnexpectedError):
    """The weights are there but building the model from them failed."""

    code = "model_load_failed"


class HealthCheckFailed(UnexpectedError):
    """Checking libraries, files or the device failed (the page still shows the rest)."""

    code = "health_check_failed"


class OutputNotSaved(UnexpectedError):
    """The audio was made but could not be written to the output folder."""

    code = "output_not_saved"


class ProjectIncomplete(CbxError):
    """A long-form project's export was asked for while chunks are still missing or
    damaged."""

    code = "project_incomplete"


class VoiceChanged(CbxError):
    """The saved voice a project was planned with now holds another clip: making more
    chunks with it would mix two voices in one project."""

    code = "voice_changed"


class OutputExists(CbxError):
    """An explicit output path names a file that is already there (the user's own
    choice of name is never silently changed or overwritten)."""

    code = "output_exists"


CUDA_OOM_SOLUTION = (
    "The GPU ran out of memory. Unload other models or close other GPU programs, then try "
    "again with dtype='float16' (half precision), shorter chunks (max_chunk_chars=150), "
    "or device='cpu'."
)


# Exit statuses of the `cbx` command, one per error class, so a script can tell a bad
# clip from a missing install without parsing text. 0 = success, 1 = a check failed
# (`cbx status`), 2 = bad arguments (argparse); 130 = interrupted (Ctrl+C).
EXIT_STATUS: dict[type[CbxError], int] = {
    CbxError: 3,
    EnvironmentNotSetup: 10,
    ModelFilesMissing: 11,
    NoVoiceLoaded: 12,
    VoiceFileNotFound: 13,
    InvalidVoiceFile: 14,
    InvalidText: 15,
    InvalidSetting: 16,
    ModelBusy: 17,
    GpuInUse: 18,
    GenerationCancelled: 19,
    UnexpectedError: 20,
    GenerationFailed: 21,
    ModelLoadFailed: 22,
    HealthCheckFailed: 23,
    OutputNotSaved: 24,
    ProjectIncomplete: 25,
    ProjectLocked: 26,
    VoiceChanged: 27,
    OutputExists: 28,
}
EXIT_INTERRUPTED = 130


def exit_status(error: CbxError) -> int:
    """The exit status for an error: its class's, else its nearest listed ancestor's."""
    for cls in type(error).__mro__:
        if cls in EXIT_STATUS:
            return EXIT_STATUS[cls]
    return EXIT_STATUS[CbxError]

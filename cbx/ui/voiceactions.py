"""The Voice card's actions: the saved voices, the one selected, a clip uploaded.

Why apart: a voice is chosen once and read by every generation and project, so the
choice lives in the session and only these actions change it.
"""
from __future__ import annotations

import traceback

from ..errors import CbxError, InvalidVoiceFile
from ..variants import VARIANTS
from .session import BUILTIN, Session


class VoiceActions:
    """List, select and upload voices."""

    def __init__(self, session: Session, backend):
        self.session = session
        self.backend = backend

    def refresh_voices(self, emit: bool = True) -> None:
        s = self.session
        try:
            s.voices = list(self.backend.list_voices(s.variant))
        except CbxError as exc:
            s.voices = []
            s.voice_message = f"Saved voices unavailable: {exc.message}"
        names = {v.name for v in s.voices}
        if s.voice_choice != BUILTIN and s.voice_choice not in names:
            s.voice_choice, s.voice_info = BUILTIN, None
        if emit:
            s.emit("voices")

    def has_builtin_voice(self) -> bool:
        try:
            return self.backend.builtin_voice(self.session.variant) is not None
        except CbxError:
            return False

    def voice_options(self) -> list[tuple[str, str]]:
        """(label, value) pairs for the voice picker."""
        s = self.session
        options = []
        if self.has_builtin_voice():
            options.append((f"Built-in voice ({VARIANTS[s.variant].label})", BUILTIN))
        for voice in s.voices:
            duration = voice.duration
            label = f"{voice.name} ({duration:.1f} s)" if duration else voice.name
            options.append((label, voice.name))
        return options

    def voice_label(self) -> str:
        """The voice as the health panel names it."""
        choice = self.session.voice_choice
        if choice == BUILTIN:
            return "built-in" if self.has_builtin_voice() else "none selected"
        return choice

    def select_voice(self, name: str | None) -> None:
        s = self.session
        if not name or name == BUILTIN:
            s.voice_choice, s.voice_info = BUILTIN, None
        else:
            match = next((v for v in s.voices if v.name == name), None)
            if match is None:
                self.refresh_voices(emit=False)
                match = next((v for v in s.voices if v.name == name), None)
            s.voice_choice = name if match is not None else BUILTIN
            s.voice_info = match
        s.emit("voices")

    def choose_default_voice(self) -> None:
        """After a variant change: a saved voice when the variant has no built-in one."""
        s = self.session
        if s.voice_choice == BUILTIN and not self.has_builtin_voice() and s.voices:
            s.voice_choice, s.voice_info = s.voices[0].name, s.voices[0]

    def upload_voice(self, data: bytes, filename: str) -> bool:
        """Validate and save an uploaded clip, then select it. False (with the error
        shown) when the clip is unusable; the previous voice stays selected."""
        s = self.session
        s.error = None
        try:
            voice = self.backend.save_voice(bytes(data), filename, s.variant)
        except CbxError as exc:
            s.error = exc
            s.voice_message = ""
            s.emit("error", "voices")
            return False
        except Exception as exc:    # an unexpected decoder failure still gets the taxonomy
            s.error = InvalidVoiceFile(
                f"The clip could not be decoded ({type(exc).__name__}: {exc}).",
                "Convert it to a 16-bit WAV and upload again.",
                details="".join(traceback.format_exception(exc)))
            s.emit("error", "voices")
            return False
        self.refresh_voices(emit=False)
        if all(v.name != voice.name for v in s.voices):
            s.voices.append(voice)
        s.voice_choice, s.voice_info = voice.name, voice
        s.voice_message = f"Saved voice '{voice.name}' ({voice.duration:.1f} s)."
        s.status_line = f"Voice '{voice.name}' is ready to use."
        s.emit("voices", "error", "status")
        return True

    def refuse_upload(self, filename: str, size: int) -> None:
        """The browser found the chosen file over the clip limit and sent only its name
        and size: say so; the previous voice stays selected."""
        from ..voices import too_large_error

        s = self.session
        s.error = too_large_error(f"The upload {filename!r}", size, VARIANTS[s.variant])
        s.voice_message = ""
        s.emit("error", "voices")


__all__ = ["VoiceActions"]

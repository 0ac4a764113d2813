"""The Text and Settings cards' actions: the text and its chunk count, Turbo's tags,
the variant and its settings, device, chunk size and speech rate.

Why apart: every keystroke lands here, so the count of a long text waits for a pause
(on the session's timer) instead of holding up the page; and a variant change resets
what depends on it (settings, tags, language, the voice, the health report).
"""
from __future__ import annotations

from ..errors import CbxError, InvalidSetting
from ..tags import TURBO, find_tags
from ..text import CHARS_PER_SECOND
from ..variants import VARIANTS
from .modelactions import ModelActions
from .session import Session
from .voiceactions import VoiceActions

# Texts up to this length are counted on every keystroke (a few milliseconds); longer
# ones once typing pauses for TEXT_COUNT_DELAY seconds.
INSTANT_COUNT_CHARS = 20_000
TEXT_COUNT_DELAY = 0.5


class TextActions:
    """The text box and the generation settings."""

    def __init__(self, session: Session, backend, *, voices: VoiceActions,
                 health: ModelActions):
        self.session = session
        self.backend = backend
        self._voices = voices
        self._health = health
        self._text_serial = 0          # under session.lock: which text the count is for
        self._text_timer = None        # under session.lock: the pending long count
        session.tags = backend.paralinguistic_tags(session.variant)

    # ------------------------------------------------------------------------ text
    def set_text(self, text: str) -> None:
        """Keep the text at once; count its chunks at once while that is instant, and
        for a long text only once typing pauses, on a timer thread, so pasting a novel
        never holds up the page (each keystroke arrives here)."""
        s = self.session
        s.text = text or ""
        with s.lock:
            self._text_serial += 1
            serial = self._text_serial
            pending, self._text_timer = self._text_timer, None
        if pending is not None:
            pending.cancel()
        if len(s.text) <= INSTANT_COUNT_CHARS:
            self._count_text(serial)
            return
        s.text_info = {"chars": len(s.text), "chunks": None,
                       "seconds": len(s.text) / CHARS_PER_SECOND}
        s.emit("text")
        timer = s.schedule(TEXT_COUNT_DELAY, lambda: self._count_text(serial))
        with s.lock:
            if serial == self._text_serial:
                self._text_timer = timer

    def _count_text(self, serial: int) -> None:
        s = self.session
        text = s.text
        if not text.strip():
            info = {"chars": len(text), "chunks": 0, "seconds": 0.0}
        else:
            try:
                chunks = len(self.backend.split_text(
                    text, s.max_chunk_chars, first_chunk_chars=s.first_chunk_chars))
                seconds = float(self.backend.estimate_seconds(text))
            except CbxError:
                chunks, seconds = 0, 0.0
            info = {"chars": len(text), "chunks": chunks, "seconds": seconds}
        with s.lock:
            if serial != self._text_serial:
                return                  # the text changed meanwhile: its own count follows
            s.text_info = info
        s.emit("text")

    @property
    def tag_warning(self) -> str:
        """For a variant without paralinguistic tags, a warning when the text holds
        some: that model spells "[laugh]" out instead of laughing."""
        s = self.session
        if s.variant == TURBO:
            return ""
        found = list(dict.fromkeys(find_tags(s.text)))
        if not found:
            return ""
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        return (f"{VARIANTS[s.variant].label} reads tags such as {shown} aloud as "
                f"words. Only {VARIANTS[TURBO].label} speaks them: choose it as the "
                "variant, or remove the tags.")

    # -------------------------------------------------------------------- settings
    def set_variant(self, variant: str) -> None:
        if variant not in VARIANTS:
            raise InvalidSetting(f"Unknown variant {variant!r}.",
                                 f"Use one of: {', '.join(VARIANTS)}.")
        s = self.session
        s.variant = variant
        s.settings = dict(VARIANTS[variant].defaults)
        s.tags = self.backend.paralinguistic_tags(variant)
        languages = VARIANTS[variant].languages
        if languages and s.language not in languages:
            s.language = "en" if "en" in languages else languages[0]
        self._voices.choose_default_voice()
        self._health.refresh_health(emit=False)
        s.emit("settings", "voices", "health", "model", "text")

    def ignored_settings(self) -> tuple[str, ...]:
        return VARIANTS[self.session.variant].ignored_settings

    def set_setting(self, name: str, value: float) -> None:
        self.session.settings[name] = float(value)

    def set_device(self, device: str) -> None:
        self.session.device = device
        self._health.refresh_health()

    def set_max_chunk_chars(self, value: int) -> None:
        self.session.max_chunk_chars = max(50, int(value))
        self.set_text(self.session.text)

    def set_rate(self, value: float) -> None:
        """The speech rate of one-off generations (cbx.settings.SPEECH_RATE's range)."""
        from ..audio import check_rate

        self.session.rate = check_rate(float(value))


__all__ = ["TextActions", "INSTANT_COUNT_CHARS", "TEXT_COUNT_DELAY"]

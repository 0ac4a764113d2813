"""The Generate and Output cards' actions: Generate, Cancel, the result, the history.

Also what every generation starts from (`speech_job`: the seed checked, the voice and
settings read once, a cancel token, the progress line), which a project run shares,
so a one-off result and a project's chunks are made from the same choices.

Long work runs on the session's worker thread so the kernel's main thread stays free
to receive the Cancel click. speak()'s AudioBlocks go, as they are made, to the live
feed (`playback.LiveFeed`), which the view connects to the browser's player.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from ..audio import encode_wav
from ..errors import CbxError, GenerationCancelled, GenerationFailed, OutputNotSaved
from ..files import sidecar_path
from ..variants import VARIANTS
from .downloads import href
from .render import shown_path
from .session import BUILTIN, GENERATING, CANCELLING, Session, parse_seed

# The history keeps the audio of this many newest results in memory; older ones are
# read back from their files in the output folder when played.
HISTORY_AUDIO_IN_MEMORY = 20


@dataclass
class HistoryEntry:
    """One finished generation, kept for replay and download for the whole session.
    Its audio stays in memory while it is among the newest results (`wav_bytes`), then
    only on disk (`saved_path`); its downloads are links to its files (`url`)."""

    number: int
    text: str
    voice: str
    seed: int | None
    variant: str
    duration: float
    generation_seconds: float | None
    first_audio_seconds: float | None
    settings: dict
    wav_bytes: bytes | None
    sidecar_json: str
    filename: str
    sidecar_filename: str             # the name its settings download under
    saved_path: Path | None = None
    url: str | None = None            # downloads the saved WAV
    sidecar_url: str | None = None    # downloads its settings sidecar
    subtitles_url: str | None = None  # downloads its subtitles (SRT)
    notes: list = field(default_factory=list)      # what the result says about itself
    created: str = field(default_factory=lambda: datetime.now().strftime("%H:%M:%S"))

    @property
    def snippet(self) -> str:
        flat = " ".join(self.text.split())
        return flat if len(flat) <= 70 else flat[:67] + "..."

    def audio(self) -> bytes | None:
        """The WAV: from memory, else from its file (None when neither has it)."""
        if self.wav_bytes is not None:
            return self.wav_bytes
        try:
            return self.saved_path.read_bytes() if self.saved_path else None
        except OSError:
            return None

    def forget_audio(self) -> None:
        """Keep the audio on disk only (an older result: memory stays bounded)."""
        self.wav_bytes = None


def _safe_stem(text: str, limit: int = 40) -> str:
    """A file-name part that is valid on Windows and Linux."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return (stem or "voice")[:limit]


@dataclass(frozen=True)
class SpeechJob:
    """The page's choices as one generation (or a project) uses them."""

    seed: int | None
    voice: object               # a Voice, a clip's name, or None for the built-in one
    options: dict               # speak()'s keywords: variant, device, dtype, language, settings
    max_chunk_chars: int
    token: object               # the cancel token Cancel reaches
    on_progress: Callable       # speak()'s progress callback


def speech_job(session: Session, backend) -> SpeechJob | None:
    """The start of every generation: None (nothing starts, a bad seed is shown and
    nothing else changes) while something runs or the seed is invalid."""
    s = session
    if not s.can_generate:
        return None
    try:
        seed = parse_seed(s.seed_text)
    except CbxError as exc:
        s.error = exc
        s.emit("error")
        return None
    voice = None if s.voice_choice == BUILTIN else (s.voice_info or s.voice_choice)
    variant = s.variant
    ignored = set(VARIANTS[variant].ignored_settings)
    options = {"variant": variant, "device": s.device, "dtype": s.dtype,
               "language": s.language if VARIANTS[variant].languages else None,
               **{k: v for k, v in s.settings.items() if k not in ignored}}
    return SpeechJob(seed, voice, options, s.max_chunk_chars, backend.make_cancel_token(),
                     progress_handler(s, variant))


def progress_handler(session: Session, variant: str) -> Callable:
    """speak()'s progress callback: the progress bar's state and the status line."""
    s = session
    voice_name = "built-in" if s.voice_choice == BUILTIN else s.voice_choice

    def on_progress(p) -> None:
        s.progress = {"chunk": p.chunk, "total": p.total, "tokens": p.tokens,
                      "elapsed": p.elapsed, "eta": p.eta, "stage": p.stage}
        stage = s.progress["stage"]
        if stage == "loading" and not s.model.ready:
            s.status_line = (f"Loading {VARIANTS[variant].label} first (Generate "
                             "loads the model on first use)...")
        elif stage == "voice":
            s.status_line = f"Preparing voice '{voice_name}'..."
        elif s.busy == GENERATING:
            s.status_line = (f"Generating chunk {max(s.progress['chunk'], 1)} of "
                             f"{s.progress['total']}...")
        s.emit("progress", "status")

    return on_progress


class GenerationActions:
    """Generate, Cancel, and the results of this session."""

    def __init__(self, session: Session, backend):
        self.session = session
        self.backend = backend

    def generate(self) -> bool:
        """Start a generation; False when one is already running (or input is invalid,
        in which case the error is shown and nothing else changes)."""
        s = self.session
        job = speech_job(s, self.backend)
        if job is None:
            return False
        text, rate, first_chars = s.text, s.rate, s.first_chunk_chars

        def on_chunk(index, total, wav, sample_rate) -> None:
            s.chunks_done.append((index, total, encode_wav(wav, sample_rate)))
            s.emit("chunk")

        def work() -> None:
            s.chunks_done = []
            s.progress = {"chunk": 0, "total": max(s.text_info.get("chunks") or 0, 1),
                          "tokens": 0, "elapsed": 0.0, "eta": None, "stage": "starting"}
            s.status_line = "Starting..."
            s.emit("progress", "status", "chunk")
            s.live.begin()
            try:
                result = self.backend.speak(
                    text, job.voice, seed=job.seed, max_chunk_chars=job.max_chunk_chars,
                    first_chunk_chars=first_chars, progress=job.on_progress,
                    cancel=job.token, on_chunk=on_chunk, on_block=s.live.add, rate=rate,
                    **job.options)
            except GenerationCancelled as exc:
                s.live.stop()
                s.status_line = f"Cancelled. {exc.message}"
                s.progress = None
                s.emit("progress", "status")
                return
            except BaseException as exc:
                s.live.finish()     # the blocks made before the failure still play
                s.progress = None
                s.fail(exc, GenerationFailed)
                s.emit("progress")
                return
            s.live.finish()
            self._finish(result)

        return s.start(GENERATING, work, cancel_token=job.token)

    def _finish(self, result) -> None:
        """Save the result with its sidecar, put it in the player and the history."""
        s = self.session
        number = len(s.history) + 1
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        filename = f"{stamp}_{number:02d}_{_safe_stem(str(result.voice))}_seed{result.seed}.wav"
        saved_path = url = sidecar_url = subtitles_url = None
        wav_bytes = result.to_wav_bytes()
        sidecar = json.dumps(result.metadata(), indent=2)
        note = ""
        output_dir = Path(self.backend.output_dir())
        try:
            saved_path = result.save(output_dir / filename, unique=True)
            sidecar_file = sidecar_path(saved_path)
            if sidecar_file.is_file():
                sidecar = sidecar_file.read_text(encoding="utf-8")
                sidecar_url = href(sidecar_file, output_dir)
            url = href(saved_path, output_dir)
            # cbx's own name, fresh: a stale .srt of that name is an older take's
            subtitles_url = href(result.save(saved_path.with_suffix(".srt"),
                                             overwrite=True), output_dir)
            note = f" Saved as {shown_path(saved_path)}."
        except OutputNotSaved as exc:
            s.error = OutputNotSaved(
                f"The audio was made but could not be saved: {exc.message}",
                f"{exc.solution} Or set CBX_OUTPUT_DIR to a writable folder, and "
                "Generate again; meanwhile the player above still plays it.")
        timings = result.timings
        filename = saved_path.name if saved_path else filename
        entry = HistoryEntry(
            number=number, text=result.text, voice=str(result.voice), seed=result.seed,
            variant=result.variant,
            duration=float(result.duration),
            generation_seconds=timings.get("total", timings.get("generation")),
            first_audio_seconds=timings.get("first_audio"),
            settings=dict(result.settings), wav_bytes=wav_bytes,
            sidecar_json=sidecar, filename=filename,
            sidecar_filename=sidecar_path(filename).name,
            saved_path=saved_path, url=url, sidecar_url=sidecar_url,
            subtitles_url=subtitles_url,
            notes=list(result.notes))
        s.history.insert(0, entry)
        for older in s.history[HISTORY_AUDIO_IN_MEMORY:]:
            older.forget_audio()
        s.current = entry
        s.progress = None
        s.chunks_done = []
        took = f" in {entry.generation_seconds:.1f} s" if entry.generation_seconds else ""
        s.status_line = f"Done: {entry.duration:.1f} s of audio{took}.{note}"
        s.emit("result", "history", "progress", "chunk", "status", "error")

    def cancel(self) -> bool:
        """Ask the running generation to stop (it ends within the current chunk).

        The check and the change of state happen under the lock, from the one state
        they apply to: a Cancel that arrives as the last chunk finishes finds the page
        idle and does nothing, instead of leaving it "cancelling" for ever."""
        s = self.session
        with s.lock:
            token = s.cancel_token
            if s.busy != GENERATING or token is None:
                return False
            s.busy = CANCELLING
        token.cancel()
        self.backend.cancel_running()
        s.live.stop()
        s.emit("busy", "status")
        return True

    def play(self, number: int) -> None:
        """Put a history entry back into the main player (an older one's audio is read
        from its file)."""
        s = self.session
        entry = next((e for e in s.history if e.number == number), None)
        if entry is None:
            return
        if entry.audio() is None:
            s.error = OutputNotSaved(
                f"Result #{number}'s audio was never saved, and only the newest "
                f"{HISTORY_AUDIO_IN_MEMORY} results are kept in memory.",
                f"Generate it again: seed {entry.seed}, with the same text and settings.")
            s.emit("error")
            return
        s.current = entry
        s.emit("result")


__all__ = ["GenerationActions", "HistoryEntry", "SpeechJob", "speech_job",
           "progress_handler", "HISTORY_AUDIO_IN_MEMORY"]

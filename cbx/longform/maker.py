"""Making a project's chunks: each chunk one speak() call with its seed, retried with
the next seeds while the babble guard flags it, the best take kept; its file is on disk
before its row commits.

Apart from the Project handle (project.py: opening, reading, planning, exporting) so
each class does one job; Project makes every chunk through a ChunkMaker, under its
writer lock.
"""
from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from pathlib import Path

from .. import files, options
from ..errors import VoiceChanged, VoiceFileNotFound
from . import guard
from .store import TAKES_DIR, VOICE_DIR, Store, scan_takes, take_file
from .store import sha256_file as store_sha256

GUARD_RETRIES = 2


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def chunk_seed(base: int, index: int) -> int:
    """Chunk `index`'s seed: base + index, wrapped into speak()'s seed range."""
    return (base + index) % options.SEED_LIMIT


class ChunkMaker:
    """Makes and stores takes for one project's store. `speak` makes each chunk
    (default cbx.speak; the dashboard passes its backend's) and `speak_chunks` a group
    of them decoded together (default cbx's; with a `speak` of the caller's own and
    no `speak_chunks`, chunks are made one at a time)."""

    def __init__(self, folder: Path, store: Store, speak=None, speak_chunks=None):
        self.folder, self._store = folder, store
        self.speak, self._speak_chunks = speak, speak_chunks
        self.groups = speak is None or speak_chunks is not None   # can decode groups

    def make_group(self, rows: list, voice, progress, cancel, batch_size: int) -> list:
        """The chunks `rows` (index, text, seed, wanted) with their first attempts'
        tokens decoded together; each wanted chunk is then checked, retried alone while
        the guard flags it, and stored like make()'s. Returns (index, wav, rate) for
        each wanted chunk. Chunks not wanted are decoded too, so a resumed run decodes
        the batch an uninterrupted one did."""
        from ..engine import synth

        plan = self._store.meta()
        firsts = (self._speak_chunks or synth.speak_chunks)(
            [text for _i, text, _s, _w in rows], voice,
            seeds=[chunk_seed(seed, 0) for _i, _t, seed, _w in rows],
            make=[wanted for *_rest, wanted in rows], batch_size=batch_size,
            max_chunk_chars=plan["max_chunk_chars"], progress=progress, cancel=cancel,
            **plan["options"])
        return [(index, *self.make(index, text, seed, voice, progress, cancel, first))
                for (index, text, seed, wanted), first in zip(rows, firsts) if wanted]

    def voice(self):
        """The Voice to make chunks with: the saved voice the plan names, which must
        still be the same clip. A deleted one is restored from the project's copy."""
        from .. import voices as voicemod

        planned = self._store.get("voice")
        if not planned["name"]:
            return None
        try:
            voice = voicemod.get_voice(planned["name"])
        except VoiceFileNotFound:
            copy = self.folder / VOICE_DIR / (planned.get("clip") or "")
            if not planned.get("clip") or not copy.is_file():
                raise
            voice = voicemod.load_voice(copy.read_bytes(), planned["name"] + copy.suffix)
        if voice.sha256 != planned["sha256"]:
            total, name = self._store.count(), self._store.get("name")
            raise VoiceChanged(
                f"The saved voice {planned['name']!r} now holds another clip than the one "
                f"project {name!r} was planned with; making more chunks with it "
                "would mix two voices.",
                f"To use the new clip, reopen with cbx.project({name!r}, "
                f"voice={planned['name']!r}) (all {total} chunks are made again). To keep "
                f"the old voice, save its copy ({self.folder / VOICE_DIR}) as a voice and "
                "reopen with that.")
        return voice

    def sweep(self) -> None:
        """Remove what killed writers left: take files no row names, temporaries.
        Called under the writer lock, so no live writer's file is touched."""
        named = {row[0] for row in self._store.query("SELECT DISTINCT file FROM takes")}
        takes = self.folder / TAKES_DIR
        for entry in scan_takes(self.folder):
            if entry not in named and not entry.startswith("."):
                (takes / entry).unlink(missing_ok=True)
        files.sweep_temporaries(takes, min_age=0)
        files.sweep_temporaries(self.folder, min_age=0)

    def make(self, index: int, text: str, seed: int, voice, progress, cancel, first=None):
        """Chunk `index` through cbx.speak with its seed, retried with the next seeds
        while the guard flags it; the best take is kept (flagged), never dropped.
        The take's file is on disk before its row commits. `first`: the first attempt's
        Result, already made (by make_group)."""
        from ..engine import synth

        speak = self.speak or synth.speak
        plan = self._store.meta()
        attempts, best = [], None
        for attempt in range(GUARD_RETRIES + 1):
            used = chunk_seed(seed, attempt)
            started = time.perf_counter()
            result = first if attempt == 0 and first is not None else speak(
                text, voice, seed=used, max_chunk_chars=plan["max_chunk_chars"],
                first_chunk_chars=None, progress=progress, cancel=cancel,
                **plan["options"])
            if len(result.chunks) != 1:      # the plan's chunks always fit one call
                raise AssertionError(f"chunk {index} was split by speak()")
            checked = guard.check(result.wav, result.sample_rate, text, result.notes)
            attempts.append({"seed": used, "flags": list(checked.flags),
                             "duration": checked.duration,
                             "seconds": round(time.perf_counter() - started, 3)})
            if best is None or len(checked.flags) < len(best[1].flags):
                best = (result, checked, used)
            if checked.ok:
                break
        result, checked, used = best
        wav = guard.trim_tail(result.wav, result.sample_rate)
        self._keep(index, text, seed, used, wav, result, checked, attempts)
        return wav, result.sample_rate

    def _keep(self, index, text, seed, used, wav, result, checked, attempts) -> None:
        from ..audio import encode_wav

        data = encode_wav(wav, result.sample_rate)
        sha = hashlib.sha256(data).hexdigest()
        path = take_file(self.folder, f"{sha}.wav")
        try:
            path.parent.mkdir(exist_ok=True)
            stat = path.stat() if path.is_file() else None
        except OSError as exc:
            raise files.not_saved(path, exc) from exc
        if stat is None or stat.st_size != len(data) or \
                store_sha256(path) != sha:      # the same audio is one file, written once
            files.write_atomic(path, data)
            stat = path.stat()
        record = {"attempts": attempts, "untrimmed_duration": checked.duration,
                  "expected": checked.expected, "notes": list(result.notes),
                  "voice_sha256": result.voice_sha256, "variant": result.variant,
                  "device": result.device, "dtype": result.dtype, "created": now()}
        with self._store.transaction() as db:
            db.execute("UPDATE chunks SET seed = ?, text = ? WHERE idx = ?",
                       (seed, text, index))
            Store.add_take(db, {
                "idx": index, "text": text, "seed": seed, "seed_used": used,
                "file": path.name, "sha256": sha, "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "sample_rate": int(result.sample_rate),
                "channels": 1, "samples": len(wav),
                "duration": round(len(wav) / result.sample_rate, 3),
                "flags": checked.flags, "record": record})

"""Long-form projects on disk (cbx.project, cbx.projects): every finished chunk
survives a kill, a restart or an unload, and a resumed run is bit-identical to an
uninterrupted one. (Not named project.py: cbx.project is the function.)

    job = cbx.project("chapter-1", text=long_text, voice=voice, seed=7)
    job.run()                  # makes only the missing chunks
    job.regenerate(3)          # a new seed for chunk 3 only (or seed=, text=)
    job.export("chapter-1.mp3", rate=1.1)

Layout: `<CBX_OUTPUT_DIR>/projects/<safe name>/project.json` (the plan: each chunk's
text, seed and pause, the voice's sha256, the settings) and `chunks/NNNN.wav` +
`chunks/NNNN.json` (one chunk's outcome: seed used, checks, retries). A chunk is done
when its JSON exists and names its text; the JSON is written after the WAV, each by
temporary file + os.replace, so a kill leaves the old state or the new one. Chunk i
is made by cbx.speak (one chunk per call) with seed + i, so the audio never depends
on what ran before it in the same process. Layer 4.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import audio, options, paths
from . import guard, sources
from .. import text as textmod
from ..errors import CbxError, InvalidSetting, InvalidText, ProjectIncomplete, ProjectLocked

MANIFEST = "project.json"
CHUNK_DIR = "chunks"
SUPERSEDED_DIR = "superseded"
MAX_NAME_CHARS = 64
GUARD_RETRIES = 2
FORMAT_VERSION = 1
# Keys of a chunk's plan that decide its audio; a change in any one remakes it.
_AUDIO_INPUTS = ("text", "seed")
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{p}{i}" for p in ("COM", "LPT") for i in range(10)})


def projects_root() -> Path:
    return paths.output_dir() / "projects"


def safe_name(name) -> str:
    """A folder name for a project name on every OS: letters and digits of any script,
    '-', '_' and '.', no leading dots, no Windows device names, at most 64 chars."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidSetting(f"A project name must be non-empty text, not {name!r}.",
                             "Name the project, e.g. 'chapter-1'.")
    text = unicodedata.normalize("NFKC", name).strip()
    text = re.sub(r"\s+", "-", text)
    text = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)
    text = re.sub(r"-{2,}", "-", text).strip("-.")[:MAX_NAME_CHARS].rstrip("-.")
    if not text:
        raise InvalidSetting(f"The project name {name!r} has no letters or digits.",
                             "Use letters or digits in the name, e.g. 'chapter-1'.")
    if text.split(".")[0].upper() in _WINDOWS_RESERVED:
        text = "_" + text
    return text


def _folder(name: str) -> Path:
    root = projects_root().resolve()
    folder = (root / safe_name(name)).resolve()
    if folder.parent != root:           # belt and braces: never outside the output dir
        raise InvalidSetting(f"The project name {name!r} leaves the projects folder.",
                             "Use a plain name such as 'chapter-1'.")
    return folder


def _write_atomic(path: Path, data: bytes) -> None:
    """The old file or the whole new one, never a part: tmp, fsync, os.replace."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, data) -> None:
    _write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Changes:
    """What a reopen with other text, voice or settings changed."""

    changed: tuple[int, ...]      # chunks to be made again (their old audio is kept aside)
    added: tuple[int, ...]
    removed: tuple[int, ...]
    reason: str

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed)


def projects() -> list[dict]:
    """Every project in the output folder: name, folder, chunks, done, flagged."""
    root = projects_root()
    out = []
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if (p / MANIFEST).is_file()):
            try:
                job = Project(folder)
                out.append({"name": job.name, "folder": str(folder), **job.status()})
            except CbxError as exc:
                out.append({"name": folder.name, "folder": str(folder),
                            "error": exc.to_dict()})
    return out


def project(name: str, text=None, *, voice=None, seed: int | None = None,
            text_format: str | None = None,
            max_chunk_chars: int = textmod.DEFAULT_MAX_CHARS, rate: float = 1.0,
            speak=None, **speak_options) -> "Project":
    """Open project `name`, creating it when `text` is given and it does not exist.
    Reopening with another text, voice, seed or settings changes only the chunks they
    change (reported in `.changes`; their old audio moves to `superseded/`).
    `speak` makes each chunk (default cbx.speak; the dashboard passes its backend's,
    so the page's model folder applies)."""
    folder = _folder(name)
    if text is None:
        if not (folder / MANIFEST).is_file():
            raise InvalidText(f"There is no project {name!r} yet.",
                              "Create it with text: cbx.project(name, text=...).")
        return Project(folder, speak=speak)
    seed = options.seed(seed)
    rate = audio.check_rate(rate)
    source, pieces = sources.load(text, text_format=text_format,
                                  max_chars=max_chunk_chars)
    voice_name, voice_sha = _voice_identity(voice)
    settings = _check_speak_options(speak_options)
    plan = {"version": FORMAT_VERSION, "name": name, "created": _now(),
            "voice": voice_name, "voice_sha256": voice_sha,
            "seed": seed if seed is not None else int.from_bytes(os.urandom(4), "big") >> 1,
            "max_chunk_chars": max_chunk_chars, "rate": rate, "options": settings,
            "text_sha256": _sha(source.encode("utf-8")), "chunks": []}
    plan["chunks"] = [{"text": p.text, "pause_after": p.pause_after,
                       "chapter": p.chapter, "seed": plan["seed"] + i}
                      for i, p in enumerate(pieces)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CHUNK_DIR).mkdir(exist_ok=True)
    if not (folder / MANIFEST).is_file():
        _write_json(folder / MANIFEST, plan)
        return Project(folder, speak=speak)
    job = Project(folder, speak=speak)
    job.changes = job._replan(plan, keep_seed=seed is None)
    return job


def _project_progress(progress, index: int, total: int):
    """speak()'s progress for its one chunk, renumbered as chunk index+1 of total."""
    if progress is None:
        return None
    from dataclasses import replace

    return lambda event: progress(replace(event, chunk=index + 1, total=total))


def _voice_identity(voice) -> tuple[str | None, str | None]:
    """(name, sha256) of the voice; a clip path or bytes is saved in the library first
    so the project can be reopened by name after a restart."""
    from . import voices as voicemod

    if voice is None:
        return None, None
    if not isinstance(voice, voicemod.Voice):
        voice = (voicemod.get_voice(voice) if voicemod.is_voice_name(voice)
                 else voicemod.load_voice(voice))
    if voice.builtin:
        return None, None
    return voice.name, voice.sha256


def _check_speak_options(speak_options: dict) -> dict:
    """The speak() keywords a project keeps; the per-call ones are its own business."""
    own = {"text", "voice", "seed", "progress", "cancel", "on_chunk", "max_chunk_chars",
           "first_chunk_chars", "rate", "model_dir"}
    taken = own & set(speak_options)
    if taken:
        raise InvalidSetting(f"{', '.join(sorted(taken))} cannot be a project setting.",
                             "Pass them to run() or export() instead, or leave them out.")
    return dict(speak_options)


class Project:
    """One project folder. Reads the plan on every call, so two handles agree."""

    def __init__(self, folder: Path, speak=None):
        self.folder = Path(folder)
        self._speak = speak
        self.changes = Changes((), (), (), "")
        self._plan()    # fail now on a missing or broken manifest

    # ------------------------------------------------------------------ reading

    def _plan(self) -> dict:
        try:
            plan = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidText(f"{self.folder / MANIFEST} cannot be read ({exc}).",
                              "Restore it from a backup, or delete the project folder "
                              "and create the project again.") from None
        if plan.get("version") != FORMAT_VERSION:
            raise InvalidText(f"{self.folder.name} was made by another cbx version.",
                              "Create the project again with this version.")
        return plan

    @property
    def name(self) -> str:
        return self._plan()["name"]

    @property
    def rate(self) -> float:
        """The speech rate export() applies unless told another."""
        return self._plan()["rate"]

    def _paths(self, index: int) -> tuple[Path, Path]:
        base = self.folder / CHUNK_DIR / f"{index:04d}"
        return base.with_suffix(".wav"), base.with_suffix(".json")

    def chunk(self, index: int) -> dict | None:
        """Chunk `index`'s outcome when it is done for its current plan, else None."""
        plan = self._plan()["chunks"][index]
        wav_path, json_path = self._paths(index)
        try:
            record = json.loads(json_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None          # unreadable: made again, never trusted
        if any(record.get(k) != plan[k] for k in _AUDIO_INPUTS) or not wav_path.is_file():
            return None
        return record

    def overview(self) -> list[dict]:
        """Each chunk's plan (index, text, seed, chapter) with `record` (its outcome,
        or None while it is missing) and `wav` (its file): what a chunk list shows."""
        plan = self._plan()
        return [{"index": i, "text": entry["text"], "seed": entry["seed"],
                 "chapter": entry.get("chapter"), "record": self.chunk(i),
                 "wav": self._paths(i)[0]} for i, entry in enumerate(plan["chunks"])]

    def status(self) -> dict:
        plan = self._plan()
        records = [self.chunk(i) for i in range(len(plan["chunks"]))]
        done = [r for r in records if r is not None]
        return {"chunks": len(records), "done": len(done),
                "flagged": [i for i, r in enumerate(records) if r and r["flags"]],
                "missing": [i for i, r in enumerate(records) if r is None],
                "seconds": round(sum(r["duration"] for r in done), 3)}

    # ------------------------------------------------------------------ making

    def run(self, progress=None, cancel=None, on_chunk=None) -> dict:
        """Make the missing chunks in order and return status(). `on_chunk(index,
        total, wav, sample_rate)` sees each chunk once it is on disk."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.folder / ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise ProjectLocked(f"Project {self.name!r} is being generated by another "
                            "kernel or process.", "Wait for it to finish, or stop it "
                            "there first.") from None
        try:
            total = len(self._plan()["chunks"])
            for index in range(total):
                if cancel is not None and cancel.cancelled:
                    break
                if self.chunk(index) is None:
                    wav, sample_rate = self._make(index, progress, cancel)
                    if on_chunk is not None:
                        on_chunk(index, total, wav, sample_rate)
        finally:
            lock.release()
        return self.status()

    def _make(self, index: int, progress, cancel):
        """Chunk `index` through cbx.speak with its seed, retried with the next seeds
        while the guard flags it; the best take is kept (flagged), never dropped."""
        from .. import synth

        speak = self._speak or synth.speak
        plan = self._plan()
        entry = plan["chunks"][index]
        attempts, best = [], None
        for attempt in range(GUARD_RETRIES + 1):
            seed = entry["seed"] + attempt
            started = time.perf_counter()
            result = speak(entry["text"], plan["voice"], seed=seed,
                                 max_chunk_chars=plan["max_chunk_chars"],
                                 first_chunk_chars=None,
                                 progress=_project_progress(progress, index,
                                                            len(plan["chunks"])),
                                 cancel=cancel, **plan["options"])
            if len(result.chunks) != 1:      # the plan's chunks always fit one call
                raise AssertionError(f"chunk {index} was split by speak()")
            checked = guard.check(result.wav, result.sample_rate, entry["text"],
                                  result.notes)
            attempts.append({"seed": seed, "flags": list(checked.flags),
                             "duration": checked.duration,
                             "seconds": round(time.perf_counter() - started, 3)})
            if best is None or len(checked.flags) < len(best[1].flags):
                best = (result, checked, seed)
            if checked.ok:
                break
        result, checked, seed = best
        wav = guard.trim_tail(result.wav, result.sample_rate)
        self._store(index, wav, result, {
            "index": index, "text": entry["text"], "seed": entry["seed"],
            "seed_used": seed, "flags": list(checked.flags), "attempts": attempts,
            "duration": round(len(wav) / result.sample_rate, 3),
            "untrimmed_duration": checked.duration, "expected": checked.expected,
            "sample_rate": result.sample_rate, "notes": result.notes,
            "voice_sha256": result.voice_sha256, "variant": result.variant,
            "device": result.device, "dtype": result.dtype, "created": _now()})
        return wav, result.sample_rate

    def _store(self, index: int, wav, result, record: dict) -> None:
        """WAV first, then the chunk's JSON (which marks it done), each atomic."""
        from ..synth import encode_wav

        data = encode_wav(wav, result.sample_rate)
        record["wav_sha256"] = _sha(data)
        wav_path, json_path = self._paths(index)
        _write_atomic(wav_path, data)
        _write_json(json_path, record)

    def regenerate(self, index: int, *, seed: int | None = None, text: str | None = None):
        """Make chunk `index` again: a new seed (the next unused one unless `seed=`),
        or new `text`; no other chunk changes. The old take moves to superseded/."""
        plan = self._plan()
        if isinstance(index, bool) or not isinstance(index, int) or \
                not 0 <= index < len(plan["chunks"]):
            raise InvalidSetting(f"There is no chunk {index!r}.",
                                 f"Pass a number from 0 to {len(plan['chunks']) - 1}.")
        entry = plan["chunks"][index]
        old = self.chunk(index)
        if text is not None:
            entry["text"] = self._one_chunk(textmod.validate_text(text),
                                            plan["max_chunk_chars"])
        if seed is not None:
            entry["seed"] = options.seed(seed)
        elif text is None:
            tried = [a["seed"] for a in (old or {}).get("attempts", [])] or [entry["seed"]]
            entry["seed"] = max(tried) + 1
        self._supersede([index])
        _write_json(self.folder / MANIFEST, plan)
        self._make(index, None, None)
        return self.chunk(index)

    @staticmethod
    def _one_chunk(text: str, max_chars: int) -> str:
        """An edited chunk's text, refused before anything is moved aside when speak()
        would split it (a chunk is one speak() call, or the project's seeds shift)."""
        pieces = textmod.split_text(text, max_chars=max_chars, first_chunk_chars=None)
        if len(pieces) != 1:
            raise InvalidText(f"The new text makes {len(pieces)} chunks of at most "
                              f"{max_chars} characters, not one.",
                              f"Shorten it to {max_chars} characters or fewer, or put the "
                              "rest into the next chunk's text.")
        return text

    def _supersede(self, indices) -> None:
        """Move finished takes aside (never deleted) before their chunks are remade."""
        aside = self.folder / SUPERSEDED_DIR
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        for index in indices:
            for path in self._paths(index):
                if path.exists():
                    aside.mkdir(exist_ok=True)
                    os.replace(path, aside / f"{path.stem}-{stamp}{path.suffix}")

    def _replan(self, new: dict, keep_seed: bool) -> Changes:
        """Adopt a new plan on reopen; chunk i keeps its audio when its text, seed,
        voice and settings are the same. Returns what changed."""
        old = self._plan()
        reason = []
        everything = False
        if keep_seed:
            new["seed"] = old["seed"]
            for i, entry in enumerate(new["chunks"]):
                entry["seed"] = old["seed"] + i
        elif new["seed"] != old["seed"]:
            everything = True
            reason.append("the seed changed")
        for key, label in (("voice_sha256", "voice"), ("options", "settings"),
                           ("max_chunk_chars", "chunk size")):
            if new[key] != old[key]:
                everything = True
                reason.append(f"the {label} changed")
        old_chunks, new_chunks = old["chunks"], new["chunks"]
        changed = []
        for i, entry in enumerate(new_chunks):
            if i >= len(old_chunks):
                continue
            before = old_chunks[i]
            if not everything and entry["text"] == before["text"]:
                entry["seed"] = before["seed"]     # a regenerated chunk keeps its take
            else:
                changed.append(i)
        added = tuple(range(len(old_chunks), len(new_chunks)))
        removed = tuple(range(len(new_chunks), len(old_chunks)))
        if changed and not reason:
            reason.append("the text changed")
        new["created"] = old["created"]
        self._supersede(changed + list(removed))
        _write_json(self.folder / MANIFEST, new)
        return Changes(tuple(changed), added, removed, "; ".join(reason))

    # ------------------------------------------------------------------ output

    def audio(self, rate: float | None = None):
        """(float32 audio of every chunk joined with its pause, sample rate)."""
        import numpy as np
        import soundfile as sf

        plan = self._plan()
        rate = audio.check_rate(plan["rate"] if rate is None else rate)
        status = self.status()
        if status["missing"]:
            raise ProjectIncomplete(
                f"{len(status['missing'])} of {status['chunks']} chunks are not made yet.",
                "Run the project (job.run() or Resume) first.")
        parts, sample_rate = [], None
        for index, entry in enumerate(plan["chunks"]):
            wav, sample_rate = sf.read(str(self._paths(index)[0]), dtype="float32")
            parts.append(audio.stretch(wav, sample_rate, rate))
            if index < len(plan["chunks"]) - 1:
                parts.append(np.zeros(int(entry["pause_after"] / rate * sample_rate),
                                      dtype=np.float32))
        return np.concatenate(parts), sample_rate

    def export(self, path, rate: float | None = None) -> Path:
        """The joined audio in the format the suffix names, with the settings JSON
        beside it (cbx.synth.Result.save: never overwrites)."""
        from ..synth import Result

        plan = self._plan()
        wav, sample_rate = self.audio(rate)
        records = [self.chunk(i) for i in range(len(plan["chunks"]))]
        flagged = [i for i, r in enumerate(records) if r["flags"]]
        notes = [f"Chunk {i} is flagged: {' '.join(records[i]['flags'])}" for i in flagged]
        result = Result(
            wav=wav, sample_rate=sample_rate, text="\n".join(c["text"] for c in plan["chunks"]),
            voice=plan["voice"] or "built-in", variant=records[0]["variant"],
            seed=plan["seed"], settings=plan["options"],
            chunks=[c["text"] for c in plan["chunks"]],
            timings={"chunks_seconds": sum(a["seconds"] for r in records
                                           for a in r["attempts"])},
            device=records[0]["device"], dtype=records[0]["dtype"], notes=notes,
            voice_sha256=plan["voice_sha256"],
            rate=audio.check_rate(plan["rate"] if rate is None else rate))
        return result.save(path)

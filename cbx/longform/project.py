"""Long-form projects (cbx.project, cbx.projects): a book made chunk by chunk, every
finished chunk kept safe across kills, restarts, full disks and second writers, and a
resumed run bit-identical to an uninterrupted one.

    job = cbx.project("chapter-1", text=long_text, voice=voice, seed=7)
    job.run()                  # makes only the missing (or damaged) chunks
    job.regenerate(3)          # a new seed for chunk 3 only (or seed=, text=)
    job.export("chapter-1.mp3", rate=1.1)

Layout: `<CBX_OUTPUT_DIR>/projects/<slug>-<hash>/` (names.py) holds `project.db` (the
store: plan, chunks, takes; store.py), `takes/<sha256>.wav` (immutable audio) and
`voice/` (the project's own copy of its reference clip). Chunk i is made by cbx.speak
(one chunk per call) with seed + i (modulo 2**32), so its audio never depends on what
ran before it in the same process.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import audio, envsettings, files, options, paths
from .. import text as textmod
from ..errors import CbxError, InvalidSetting, InvalidText, ProjectIncomplete
from . import legacy, names, sources
from .maker import ChunkMaker, chunk_seed, now
from .store import (TAKES_DIR, VOICE_DIR, Store, check_take, holder,
                    scan_takes, take_file, writer)

# speak() keywords a project keeps as its settings (checked by speak()'s own rules)
_PER_CALL = {"text", "voice", "seed", "progress", "cancel", "on_chunk", "on_block",
             "max_chunk_chars", "first_chunk_chars", "rate", "model_dir", "batch_size"}
_KEEP = object()      # "not given": a reopen keeps what the project has
# Chunks per group when run() is not told: one, as before batching. A group is stored
# whole only when all of it is made (see Project.run), so batches are asked for.
PROJECT_BATCH = 1
# What a store's plan must hold, so a hand-edited or damaged one is a coded error at
# open, never a KeyError or TypeError later.
_META_TYPES = {"name": str, "seed": int, "rate": (int, float), "options": dict,
               "voice": dict, "max_chunk_chars": int}


def projects_root() -> Path:
    return paths.output_dir() / "projects"


@dataclass(frozen=True)
class Changes:
    """What a reopen with other text, voice or settings changed."""

    changed: tuple[int, ...]      # chunks to be made again (their old takes are kept)
    added: tuple[int, ...]
    removed: tuple[int, ...]
    reason: str

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed or self.reason)


# ---------------------------------------------------------------------- opening
def projects() -> list[dict]:
    """Every project in the output folder: name, folder, chunks, done, missing,
    flagged, damaged, seconds and who is changing it now (holder). Read from each
    store's rows alone, so a book-sized project lists as fast as a small one; one
    unreadable project is listed with its error, never hiding the others."""
    root = projects_root()
    out = []
    if not root.is_dir():
        return out
    for old in legacy.v1_folders(root):
        try:
            _import_v1(root, old)
        except CbxError as exc:
            out.append({"name": old.name, "folder": str(old), "error": exc.to_dict()})
    for folder in sorted(p for p in root.iterdir() if (p / "project.db").is_file()):
        try:
            job = Project(folder)
            try:
                out.append({"name": job.name, "folder": str(folder), **job.summary()})
            finally:
                job.close()
        except CbxError as exc:
            out.append({"name": folder.name, "folder": str(folder), "error": exc.to_dict()})
    return out


def project(name: str, text=None, *, voice=_KEEP, seed: int | None = None,
            text_format: str | None = None, max_chunk_chars: int | None = None,
            rate: float | None = None, speak=None, speak_chunks=None,
            **speak_options) -> "Project":
    """Open project `name`, creating it when `text` is given and it does not exist.

    Reopening with another text, voice, seed, chunk size, speech rate or settings
    replans under the project's writer lock: only the chunks that change are made
    again (`.changes` says which; their old takes are kept). What is not given is
    kept. `speak` makes each chunk (default cbx.speak; the dashboard passes its
    backend's, so the page's model folder applies), `speak_chunks` a group of chunks
    decoded together (see ChunkMaker)."""
    name = names.check_name(name)
    root = projects_root()
    folder = root / names.folder_name(name)
    old = legacy.find_v1(root, name)
    if old is not None:
        _import_v1(root, old)
    asked = {"text": text, "voice": voice, "seed": seed, "text_format": text_format,
             "max_chunk_chars": max_chunk_chars, "rate": rate, "options": speak_options}
    changing = (text is not None or voice is not _KEEP or seed is not None or
                text_format is not None or max_chunk_chars is not None or
                rate is not None or bool(speak_options))
    if not (folder / "project.db").is_file() and text is None:
        raise InvalidText(f"There is no project {name!r} yet.",
                          "Create it with text: cbx.project(name, text=...).")
    if not changing:
        return Project(folder, speak=speak, speak_chunks=speak_chunks)
    plan = _new_plan(name, asked, _stored_plan(folder))
    return _write_plan(folder, name, plan, speak, speak_chunks)


def _stored_plan(folder: Path) -> dict | None:
    if not (folder / "project.db").is_file():
        return None
    job = Project(folder)
    try:
        return job.plan()
    finally:
        job.close()


def _new_plan(name: str, asked: dict, old: dict | None) -> dict:
    """Every input checked and every default filled in (from the stored plan when
    reopening), before anything is written."""
    old = old or {}
    seed = options.seed(asked["seed"])
    if seed is None:
        seed = old.get("seed", int.from_bytes(os.urandom(4), "big") >> 1)
    rate = audio.check_rate(asked["rate"] if asked["rate"] is not None
                            else old.get("rate", 1.0))
    max_chars = (asked["max_chunk_chars"] if asked["max_chunk_chars"] is not None
                 else old.get("max_chunk_chars", textmod.DEFAULT_MAX_CHARS))
    text_format = asked["text_format"] or (None if asked["text"] is not None
                                           else old.get("text_format"))
    body = asked["text"] if asked["text"] is not None else old.get("source")
    if not isinstance(body, (str, os.PathLike)):
        raise InvalidText(f"Project {name!r} has no readable source text to replan from.",
                          f"Reopen it with its text: cbx.project({name!r}, text=...).")
    source, pieces = sources.load(body, text_format=text_format, max_chars=max_chars)
    if isinstance(body, os.PathLike):
        text_format = text_format or sources.format_of(Path(body).name)
    taken = _PER_CALL & set(asked["options"])
    if taken:
        raise InvalidSetting(f"{', '.join(sorted(taken))} cannot be a project setting.",
                             "Pass them to run() or export() instead, or leave them out.")
    from ..engine.synth import check_options

    settings = check_options({**old.get("options", {}), **asked["options"]})
    voice = (_voice_identity(asked["voice"]) if asked["voice"] is not _KEEP
             else old.get("voice", {"name": None, "sha256": None, "clip": None}))
    return {"name": name, "created": old.get("created", now()), "seed": seed, "rate": rate,
            "max_chunk_chars": max_chars, "text_format": text_format or "plain",
            "options": settings, "voice": voice, "source": source,
            "chunks": [(p.text, chunk_seed(seed, i), p.pause_after, p.chapter)
                       for i, p in enumerate(pieces)]}


def _voice_identity(voice) -> dict:
    """{"name", "sha256", "clip"} of the voice; a clip path or bytes is saved in the
    library first, so the project can be reopened by name after a restart. "clip"
    is the voice itself, copied into the project's folder when the plan is written."""
    from .. import voices as voicemod

    none = {"name": None, "sha256": None, "clip": None}
    if voice is None:
        return none
    if not isinstance(voice, voicemod.Voice):
        voice = (voicemod.get_voice(voice) if voicemod.is_voice_name(voice)
                 else voicemod.load_voice(voice))
    if voice.builtin:
        return none
    return {"name": voice.name, "sha256": voice.sha256, "clip": voice.path}


def _write_plan(folder: Path, name: str, plan: dict, speak, speak_chunks) -> "Project":
    """Create the project, or replan it, under its writer lock."""
    folder.mkdir(parents=True, exist_ok=True)
    store = Store(folder, create=True)
    try:
        with writer(folder, store, name, "replan"):
            _keep_voice_copy(folder, plan["voice"])
            if store.get("schema_version") is None:      # new, or a creation was killed
                _create(store, plan)
                changes = Changes((), (), (), "")
            else:
                changes = _replan(store, plan)
    finally:
        store.close()
    job = Project(folder, speak=speak, speak_chunks=speak_chunks)
    job.changes = changes
    return job


def _keep_voice_copy(folder: Path, voice: dict) -> None:
    """The project's own copy of its clip, named by content, so the chunks can always
    be remade in the voice they were planned with."""
    clip = voice.get("clip")
    if not clip or not isinstance(clip, Path):
        return
    target = folder / VOICE_DIR / f"{voice['sha256']}{clip.suffix}"
    if not target.is_file():
        target.parent.mkdir(exist_ok=True)
        files.write_atomic(target, clip.read_bytes())
    voice["clip"] = target.name


def _plan_meta(plan: dict) -> dict:
    return {k: v for k, v in plan.items() if k != "chunks"}


def _create(store: Store, plan: dict) -> None:
    with store.transaction() as db:
        db.executemany("INSERT INTO chunks (idx, text, seed, pause_after, chapter) "
                       "VALUES (?, ?, ?, ?, ?)",
                       ((i, *row) for i, row in enumerate(plan["chunks"])))
        for key, value in _plan_meta(plan).items():
            Store.set(db, key, value)
        Store.set(db, "schema_version", 1)


def _replan(store: Store, new: dict) -> Changes:
    """Adopt a new plan; chunk i keeps its take when its text, seed, voice and
    settings are the same (a re-rolled chunk keeps its own seed). One transaction."""
    old = store.meta()
    reasons = []
    everything = False
    if new["seed"] != old["seed"]:
        everything = True
        reasons.append(f"the seed changed ({old['seed']} -> {new['seed']})")
    if new["voice"]["sha256"] != old["voice"]["sha256"]:
        everything = True
        reasons.append("the voice changed")
    if new["options"] != old["options"]:
        everything = True
        reasons.append("the settings changed")
    if new["max_chunk_chars"] != old["max_chunk_chars"]:
        reasons.append(f"the chunk size changed ({old['max_chunk_chars']} -> "
                       f"{new['max_chunk_chars']} characters)")
    if new["rate"] != old["rate"]:
        reasons.append(f"the speech rate changed ({old['rate']:g} -> {new['rate']:g}; "
                       "applied at export, no chunk is remade for it)")
    before = {row["idx"]: (row["text"], row["seed"])
              for row in store.query("SELECT idx, text, seed FROM chunks")}
    if len(before) != len(new["chunks"]) or any(
            before[i][0] != chunk[0] for i, chunk in enumerate(new["chunks"])):
        reasons.insert(0, "the text changed")
    changed, rows = [], []
    for i, (text, seed, pause, chapter) in enumerate(new["chunks"]):
        if i in before and not everything and before[i][0] == text:
            seed = before[i][1]
        elif i in before:
            changed.append(i)
        rows.append((i, text, seed, pause, chapter))
    added = tuple(range(len(before), len(rows)))
    removed = tuple(range(len(rows), len(before)))
    with store.transaction() as db:
        db.executemany("UPDATE chunks SET text = ?, seed = ?, pause_after = ?, "
                       "chapter = ?, take = CASE WHEN ? THEN NULL ELSE take END "
                       "WHERE idx = ?",
                       ((text, seed, pause, chapter, i in changed, i)
                        for i, text, seed, pause, chapter in rows if i in before))
        db.executemany("INSERT INTO chunks (idx, text, seed, pause_after, chapter) "
                       "VALUES (?, ?, ?, ?, ?)", (r for r in rows if r[0] not in before))
        db.execute("DELETE FROM chunks WHERE idx >= ?", (len(rows),))
        for key, value in _plan_meta(new).items():
            Store.set(db, key, value)
    return Changes(tuple(changed), added, removed, "; ".join(reasons))


def _import_v1(root: Path, old: Path) -> None:
    """A project made before the store (project.json), imported whole on first open:
    plan, current takes and superseded ones; the old folder then moves inside the new
    one as imported-v1/, so nothing is lost."""
    name = legacy.read_name(old)
    folder = root / names.folder_name(names.check_name(name))
    folder.mkdir(parents=True, exist_ok=True)
    store = Store(folder, create=True)
    try:
        with writer(folder, store, name, "import"):
            if store.get("schema_version") is None:
                legacy.import_into(old, folder, store)
            legacy.retire(old, folder)
    finally:
        store.close()


# ---------------------------------------------------------------------- the handle
def _progress_for(progress, index: int, total: int):
    """speak()'s progress for its one chunk, renumbered as chunk index+1 of total."""
    if progress is None:
        return None
    from dataclasses import replace

    return lambda event: progress(replace(event, chunk=index + 1, total=total))


class Project:
    """One project: a handle on its store. Every read asks the store, so two handles
    (two tabs, two processes) always agree; every change takes the writer lock."""

    def __init__(self, folder: Path, speak=None, speak_chunks=None):
        self.folder = Path(folder)
        self.changes = Changes((), (), (), "")
        self._store = Store(self.folder)
        self._maker = ChunkMaker(self.folder, self._store, speak, speak_chunks)
        meta = self._store.meta()
        wrong = [key for key, kind in _META_TYPES.items()
                 if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool)]
        if not wrong and not all(isinstance(meta["voice"].get(k), (str, type(None)))
                                 for k in ("name", "sha256")):
            wrong = ["voice"]
        if wrong:
            self.close()
            raise InvalidText(f"The project store in {self.folder} has no valid "
                              f"{', '.join(wrong)}.",
                              "Restore the project folder from a backup, or create the "
                              "project again.")

    def close(self) -> None:
        self._store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def plan(self) -> dict:
        """The project's settings and source text (not its chunks)."""
        return self._store.meta(source=True)

    @property
    def name(self) -> str:
        return self._store.get("name")

    @property
    def rate(self) -> float:
        """The speech rate export() applies unless told another."""
        return self._store.get("rate")

    def holder(self) -> dict | None:
        """Who is changing this project now (pid, host, action, since), or None."""
        return holder(self._store)

    def _rows(self, start: int = 0, stop: int | None = None, *, full: bool = False,
              records: bool = False, columns: str = "list"):
        """[(chunk row joined with its take's columns, state, why)] for chunks
        [start, stop); state is "done", "missing" or "damaged" (why says what is
        wrong). Each take is checked cheaply (it exists, its size, its header when the
        file was touched since its row was written), or fully when `full` (sha256 and
        its record too); `records` reads the records without hashing the audio.
        `columns` picks what the rows hold (store.Store.chunks; "full" for `records`
        or `full`). One query and, for many rows, one directory read."""
        rows = self._store.chunks(start, stop, columns)
        stats = scan_takes(self.folder) if len(rows) > 64 else None
        takes = self.folder / TAKES_DIR
        out = []
        for row in rows:
            if row["take"] is None:
                out.append((row, "missing", None))
                continue
            if stats is not None:
                stat = stats.get(row["file"])
            else:
                try:
                    stat = os.stat(takes / row["file"])
                except OSError:
                    stat = None
            why = row["damaged"]
            if why is None and stat is None:
                why = "its audio file is missing"
            elif why is None and (full or stat.st_size != row["size"] or
                                  stat.st_mtime_ns != row["mtime_ns"]):
                why = check_take(self.folder, self._store.take(row["take"]), stat,
                                 full=full)
            if why is None and (full or records or row["flags"] != "[]"):
                try:
                    if not isinstance(json.loads(row["flags"]), list):
                        raise TypeError("its flags are not a list")
                    if (full or records) and not isinstance(json.loads(row["record"]), dict):
                        raise TypeError("its record is not an object")
                except (ValueError, TypeError) as exc:
                    why = f"its record cannot be read ({exc})"
            out.append((row, "damaged" if why else "done", why))
        return out

    def chunk(self, index: int) -> dict | None:
        """Chunk `index`'s current take (its whole record: attempts, notes, device...)
        when it is done and sound, else None."""
        rows = self._rows(index, index + 1, full=True, columns="full")
        if not rows or rows[0][1] != "done":
            return None
        row = rows[0][0]
        return {**json.loads(row["record"]), **self._summary_record(row)}

    def _summary_record(self, row) -> dict:
        """What a chunk list shows of a take, from its row's columns alone."""
        return {"index": row["idx"], "text": row["text"], "seed": row["seed"],
                "seed_used": row["seed_used"], "flags": json.loads(row["flags"]),
                "duration": row["duration"], "sample_rate": row["sample_rate"],
                "samples": row["samples"], "wav_sha256": row["sha256"],
                "wav": str(self.folder / TAKES_DIR / row["file"])}

    def takes(self, index: int) -> list[dict]:
        """Every take chunk `index` ever had, oldest first (re-rolls and replans
        keep them): the history behind a chunk."""
        return [{**t.record, "seed_used": t.seed_used, "text": t.text,
                 "flags": list(t.flags), "duration": t.duration,
                 "wav": str(take_file(self.folder, t.file))}
                for t in self._store.takes_of(index)]

    def overview(self, start: int = 0, stop: int | None = None) -> list[dict]:
        """Rows of chunks [start, stop): index, text, seed, chapter, pause_after,
        state ("done", "missing", "damaged"), why (what is wrong with a damaged
        take), record (seed_used, duration, flags, wav_sha256... of a done take, else
        None; chunk(i) has the whole record) and wav (its file): a chunk list's rows."""
        out = []
        for row, state, why in self._rows(start, stop):
            record = self._summary_record(row) if state == "done" else None
            out.append({"index": row["idx"], "text": row["text"], "seed": row["seed"],
                        "chapter": row["chapter"], "pause_after": row["pause_after"],
                        "state": state, "why": why, "record": record,
                        "wav": Path(record["wav"]) if record else None})
        return out

    def status(self) -> dict:
        """Counts and lists of the chunks, each current take checked cheaply. A take
        whose file is as its row says (size, time stamp) and that has no flags is
        counted in one pass over plain tuples; any other is judged by `_rows`."""
        rows = self._store.tuples(
            "SELECT c.idx, c.take, t.file, t.size, t.mtime_ns, t.duration, t.flags, "
            "t.damaged FROM chunks c LEFT JOIN takes t ON t.id = c.take ORDER BY c.idx")
        stats = scan_takes(self.folder)
        done, missing, damaged, flagged, seconds = 0, [], [], [], 0.0
        for idx, take, file, size, mtime_ns, duration, flags, broken in rows:
            if take is None:
                missing.append(idx)
                continue
            stat = stats.get(file)
            plain = (broken is None and flags == "[]" and stat is not None and
                     stat.st_size == size and stat.st_mtime_ns == mtime_ns)
            state = "done" if plain else self._rows(idx, idx + 1)[0][1]
            if state == "done":
                done += 1
                seconds += duration
                if not plain and flags != "[]":
                    flagged.append(idx)
            else:
                missing.append(idx)
                if state == "damaged":
                    damaged.append(idx)
        return {"chunks": len(rows), "done": done, "flagged": flagged, "missing": missing,
                "damaged": damaged, "seconds": round(seconds, 3), "holder": self.holder()}

    def summary(self) -> dict:
        """status() from the rows alone (no file checks), counted by SQLite: what a
        list of many projects shows. `damaged` lists only takes already found damaged."""
        join = "FROM chunks c LEFT JOIN takes t ON t.id = c.take"
        sound = "c.take IS NOT NULL AND t.damaged IS NULL"
        total, done, seconds = self._store.query(
            f"SELECT count(*), count(CASE WHEN {sound} THEN 1 END), "
            f"coalesce(sum(CASE WHEN {sound} THEN t.duration END), 0) {join}")[0]

        def column(where: str) -> list[int]:
            return [r[0] for r in self._store.query(
                f"SELECT c.idx {join} WHERE {where} ORDER BY c.idx")]

        return {"chunks": total, "done": done,
                "flagged": column(f"{sound} AND t.flags != '[]'"),
                "missing": column(f"NOT ({sound})"),
                "damaged": column("t.damaged IS NOT NULL"),
                "seconds": round(seconds, 3), "holder": self.holder()}

    # ------------------------------------------------------------------ making
    def run(self, progress=None, cancel=None, on_chunk=None,
            batch_size: int | str | None = None) -> dict:
        """Make the missing and damaged chunks in order and return status().
        `on_chunk(index, total, wav, sample_rate)` sees each chunk once it is stored.

        With `batch_size` B > 1, chunks are made in fixed groups by index (0-7, 8-15,
        ... for 8), each group's tokens decoded together (cbx.engine.batch); a group
        with any chunk to make is decoded whole, so a killed and resumed run makes the
        very takes an uninterrupted one makes. A group's chunks are stored when the
        whole group is made, so Cancel loses at most the group under way. The size
        (`batch_size`, else CBX_BATCH, else the size this project last ran with, else
        PROJECT_BATCH) is kept in the project for later runs; 1 makes one chunk at a
        time, exactly as speak() does."""
        with writer(self.folder, self._store, self.name, "run"):
            self._maker.sweep()
            voice = self._maker.voice()
            size = self._group_size(batch_size)
            rows = self._rows(records=True, columns="full")
            total = len(rows)
            for start in range(0, total, size):
                group = rows[start:start + size]
                if cancel is not None and cancel.cancelled:
                    break
                if all(state == "done" for _row, state, _why in group):
                    continue
                progress_for = _progress_for(progress, group[0][0]["idx"], total)
                if len(group) == 1:
                    row = group[0][0]
                    made = [(row["idx"], *self._maker.make(
                        row["idx"], row["text"], row["seed"], voice, progress_for, cancel))]
                else:
                    made = self._maker.make_group(
                        [(row["idx"], row["text"], row["seed"], state != "done")
                         for row, state, _why in group],
                        voice, progress_for, cancel, size)
                for index, wav, sample_rate in made:
                    if on_chunk is not None:
                        on_chunk(index, total, wav, sample_rate)
        return self.status()

    def _group_size(self, batch_size) -> int:
        """Chunks per group for this run, kept in the store so a resumed run groups as
        the first did ('auto': PROJECT_BATCH, or what this project has used)."""
        chosen = envsettings.batch_size() if batch_size is None \
            else options.batch_size(batch_size)
        if not self._maker.groups:
            return 1                      # a caller's own speak: one chunk at a time
        kept = self._store.get("batch_size")
        size = (kept or PROJECT_BATCH) if chosen == "auto" else chosen
        if size != kept and (kept is not None or size > 1):
            with self._store.transaction() as db:
                Store.set(db, "batch_size", size)
        return size

    def regenerate(self, index: int, *, seed: int | None = None, text: str | None = None,
                   progress=None, cancel=None) -> dict:
        """Make chunk `index` again: a new seed (the next unused one unless `seed=`),
        or new `text`; no other chunk changes. The old take stays current until the
        new one is stored, so a cancel or a failure loses nothing."""
        with writer(self.folder, self._store, self.name, "regenerate"):
            total = self._store.count()
            if isinstance(index, bool) or not isinstance(index, int) or \
                    not 0 <= index < total:
                raise InvalidSetting(f"There is no chunk {index!r}.",
                                     f"Pass a number from 0 to {total - 1}.")
            row = self._store.chunks(index, index + 1)[0]
            new_text = row["text"]
            if text is not None:
                new_text = self._one_chunk(textmod.validate_text(text),
                                           self._store.get("max_chunk_chars"))
            new_seed = row["seed"]
            if seed is not None:
                new_seed = options.seed(seed)
            elif text is None:
                tried = [a["seed"] for t in self._store.takes_of(index)
                         for a in t.record.get("attempts", [])] or [row["seed"]]
                new_seed = chunk_seed(max(tried), 1)
            self._maker.sweep()
            self._maker.make(index, new_text, new_seed, self._maker.voice(),
                             _progress_for(progress, index, total), cancel)
        return self.chunk(index)

    @staticmethod
    def _one_chunk(text: str, max_chars: int) -> str:
        """An edited chunk's text, refused before anything changes when speak() would
        split it (a chunk is one speak() call, or the project's seeds shift)."""
        pieces = textmod.split_text(text, max_chars=max_chars, first_chunk_chars=None)
        if len(pieces) != 1:
            raise InvalidText(f"The new text makes {len(pieces)} chunks of at most "
                              f"{max_chars} characters, not one.",
                              f"Shorten it to {max_chars} characters or fewer, or put the "
                              "rest into the next chunk's text.")
        return text

    def delete(self) -> None:
        """Remove the project, its takes and its store, under its writer lock (a
        project another process is making is never deleted under it)."""
        trash = self.folder.with_name(f".deleting-{self.folder.name}-{os.getpid()}")
        with writer(self.folder, self._store, self.name, "delete"):
            self.close()
            os.replace(self.folder, trash)
        shutil.rmtree(trash)

    # ------------------------------------------------------------------ output
    def _verified(self) -> list:
        """Every chunk's row, its take fully checked (sha256, rate, channels,
        samples, record); a damaged take is recorded so run() remakes it, and
        nothing is exported."""
        rows = self._rows(full=True, columns="full")
        missing = [row["idx"] for row, state, _w in rows if state == "missing"]
        damaged = [(row, why) for row, state, why in rows if state == "damaged"]
        if damaged:
            with self._store.transaction() as db:
                db.executemany("UPDATE takes SET damaged = ? WHERE id = ?",
                               ((why, row["take"]) for row, why in damaged))
        if missing or damaged:
            shown = "; ".join(f"chunk {row['idx'] + 1}: {why}" for row, why in damaged[:3])
            raise ProjectIncomplete(
                f"{len(missing)} of {len(rows)} chunks are not made yet"
                + (f" and {len(damaged)} are damaged ({shown})" if damaged else "") + ".",
                "Run the project (job.run() or Resume): it makes the missing chunks and "
                "remakes the damaged ones.")
        rates = {row["sample_rate"] for row, _s, _w in rows}
        if len(rates) != 1:
            raise ProjectIncomplete(f"The chunks were made at different sample rates "
                                    f"({', '.join(map(str, sorted(rates)))} Hz).",
                                    "Regenerate the chunks made with the other model.")
        return [row for row, _s, _w in rows]

    def audio(self, rate: float | None = None):
        """(float32 audio of every chunk joined with its pause, sample rate), after
        checking every take fully."""
        wav, sample_rate, _spans = self._joined(rate)
        return wav, sample_rate

    def _joined(self, rate: float | None):
        """audio(), and each chunk's (start_s, end_s) in it, for the subtitles."""
        import numpy as np
        import soundfile as sf

        rate = audio.check_rate(self.rate if rate is None else rate)
        rows = self._verified()
        parts, spans, at, sample_rate = [], [], 0, rows[0]["sample_rate"]
        for n, row in enumerate(rows):
            wav, _sr = sf.read(str(self.folder / TAKES_DIR / row["file"]), dtype="float32")
            parts.append(audio.stretch(wav, sample_rate, rate))
            spans.append((at / sample_rate, (at + len(parts[-1])) / sample_rate))
            at += len(parts[-1])
            if n < len(rows) - 1:
                parts.append(np.zeros(int(row["pause_after"] / rate * sample_rate),
                                      dtype=np.float32))
                at += len(parts[-1])
        return np.concatenate(parts), sample_rate, spans

    def export(self, path, rate: float | None = None, *, overwrite: bool = False,
               unique: bool = False) -> Path:
        """The joined audio in the format the suffix names, with its settings sidecar
        (cbx.engine.synth.Result.save), or its subtitles (.srt, .vtt) or chapters track
        (.chapters.vtt): an existing file is refused unless `overwrite`; `unique` picks
        the next free name instead (for names cbx chooses itself)."""
        from ..engine.synth import Result

        rate = audio.check_rate(self.rate if rate is None else rate)
        wav, sample_rate, spans = self._joined(rate)
        plan = self._store.meta()
        rows = self._store.chunks(columns="full")
        records = [json.loads(r["record"]) for r in rows]
        notes = [f"Chunk {r['idx'] + 1} is flagged: {' '.join(json.loads(r['flags']))}"
                 for r in rows if r["flags"] != "[]"]
        result = Result(
            wav=wav, sample_rate=sample_rate, text="\n".join(r["text"] for r in rows),
            voice=plan["voice"]["name"] or "built-in", variant=records[0]["variant"],
            seed=plan["seed"], settings=plan["options"], chunks=[r["text"] for r in rows],
            timings={"chunks_seconds": round(sum(a["seconds"] for r in records
                                                 for a in r["attempts"]), 3)},
            device=records[0]["device"], dtype=records[0]["dtype"], notes=notes,
            voice_sha256=plan["voice"]["sha256"], rate=rate, spans=spans,
            chapters=[(span[0], r["chapter"]) for span, r in zip(spans, rows)
                      if r["chapter"]])
        return result.save(path, overwrite=overwrite, unique=unique)

"""One project's transactional store: a sqlite3 database beside immutable take files.

Why sqlite: the plan, every chunk and every take must survive a kill, a full disk and
two writers, and a book has tens of thousands of chunks. One database file in WAL
mode gives atomic commits, readers that never wait for the writer, and indexed reads,
so a chunk's bookkeeping costs the same at chunk 20,000 as at chunk 1.

The rules:
- A row is the truth. A take's audio is written (temporary file, fsync, rename) to
  `takes/<sha256>.wav` before the row that names it commits; a file without a row is
  debris of a killed writer and is swept by the next writer.
- Takes are immutable and never deleted: a re-roll or a replan points the chunk at a
  new take and leaves the old row (and file) as history.
- Every change runs under the project's writer lock (`writer()`), held by one
  process at a time; the lock's holder is written in the store so others can say who.
  Lock order: the project's writer lock first, then a store transaction (short), then
  the model's lock inside speak(). Nothing takes the writer lock while holding the
  model's lock.

Standard library only (cleanup.py reads `summary()` without the environment).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from ..errors import CbxError, InvalidText, OutputNotSaved, ProjectLocked

DB_NAME = "project.db"
LOCK_NAME = "project.lock"
TAKES_DIR = "takes"
VOICE_DIR = "voice"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS takes (
    id          INTEGER PRIMARY KEY,
    idx         INTEGER NOT NULL,
    text        TEXT    NOT NULL,
    seed        INTEGER NOT NULL,
    seed_used   INTEGER NOT NULL,
    file        TEXT    NOT NULL,
    sha256      TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    sample_rate INTEGER NOT NULL,
    channels    INTEGER NOT NULL,
    samples     INTEGER NOT NULL,
    duration    REAL    NOT NULL,
    flags       TEXT    NOT NULL,
    record      TEXT    NOT NULL,
    damaged     TEXT
);
CREATE TABLE IF NOT EXISTS chunks (
    idx         INTEGER PRIMARY KEY,
    text        TEXT    NOT NULL,
    seed        INTEGER NOT NULL,
    pause_after REAL    NOT NULL,
    chapter     TEXT,
    take        INTEGER REFERENCES takes(id)
);
CREATE INDEX IF NOT EXISTS takes_by_chunk ON takes(idx);
-- (idx, take) without the chunk's text: counting 100,000 chunks reads this, not 20 MB
CREATE INDEX IF NOT EXISTS chunks_by_take ON chunks(take);
"""


def _unreadable(path: Path, exc: BaseException) -> InvalidText:
    return InvalidText(f"The project store {path} cannot be read ({exc}).",
                       "Restore the project folder from a backup, or delete it and "
                       "create the project again.")


def _db_error(path: Path, exc: sqlite3.Error) -> CbxError:
    """A sqlite failure as a coded error: a write that could not land is
    output_not_saved; a store that is not a database is unreadable."""
    text = str(exc).lower()
    if "full" in text or "disk i/o" in text or "readonly" in text or "read-only" in text:
        return OutputNotSaved(f"Could not write {path}: {exc}.",
                              "Free disk space on that drive (or check that the folder "
                              "is writable), then try again; the project is as it was "
                              "before this change.")
    return _unreadable(path, exc)


@dataclass(frozen=True)
class TakeRow:
    """One take's row: what was made, and what its file must be."""

    id: int
    idx: int
    text: str
    seed: int
    seed_used: int
    file: str
    sha256: str
    size: int
    mtime_ns: int
    sample_rate: int
    channels: int
    samples: int
    duration: float
    flags_json: str
    record_json: str
    damaged: str | None

    @classmethod
    def from_row(cls, row) -> "TakeRow":
        """From a row of `takes` (or a join holding its columns); the JSON columns are
        parsed only when read, so listing 20,000 chunks stays cheap."""
        values = {k: row[k] for k in row.keys() if k in _TAKE_COLUMNS}
        values["flags_json"] = values.pop("flags")
        values["record_json"] = values.pop("record")
        return cls(**values)

    @property
    def flags(self) -> tuple[str, ...]:
        return () if self.flags_json == "[]" else tuple(json.loads(self.flags_json))

    @property
    def record(self) -> dict:
        record = json.loads(self.record_json)
        if not isinstance(record, dict):
            raise ValueError("a take's record is not a JSON object")
        return record


_TAKE_COLUMNS = ("id", "idx", "text", "seed", "seed_used", "file", "sha256", "size",
                 "mtime_ns", "sample_rate", "channels", "samples", "duration", "flags",
                 "record", "damaged")


class Store:
    """The database of one project folder. Reads are plain queries; writes go through
    `transaction()` (BEGIN IMMEDIATE: one writer, readers undisturbed)."""

    def __init__(self, folder: Path, *, create: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        if not create and not self.path.is_file():
            raise InvalidText(f"{self.folder} holds no project store ({DB_NAME}).",
                              "Create the project with cbx.project(name, text=...).")
        try:
            self.db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                                      isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.db.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: a commit survives a killed process at once and a power
            # cut from the next checkpoint on; the store is consistent either way, and
            # a take whose row was lost is swept and made again. FULL would fsync
            # every commit, 20 ms a chunk on a plain disk.
            self.db.execute("PRAGMA synchronous = NORMAL")
            if create:
                self.db.executescript(_SCHEMA)
            version = self.get("schema_version")
        except sqlite3.Error as exc:
            raise _db_error(self.path, exc) from None
        if not create and version != SCHEMA_VERSION:
            raise InvalidText(f"{self.folder.name} was made by another cbx version "
                              f"(store version {version!r}).",
                              "Open it with the cbx version that made it, or create the "
                              "project again with this one.")

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ queries
    def query(self, sql: str, params=()) -> list:
        try:
            return self.db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _db_error(self.path, exc) from None

    def tuples(self, sql: str, params=()) -> list[tuple]:
        """query() as plain tuples: a third faster over 20,000 rows than named rows."""
        cursor = self.db.cursor()
        cursor.row_factory = None
        try:
            return cursor.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _db_error(self.path, exc) from None

    def get(self, key: str, default=None):
        rows = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchall()
        return json.loads(rows[0][0]) if rows else default

    def meta(self, *, source: bool = False) -> dict:
        """The plan's settings; with `source`, the whole source text too (20 MB for
        a book, so only a replan reads it)."""
        where = "" if source else " WHERE key != 'source'"
        try:
            return {row[0]: json.loads(row[1])
                    for row in self.query(f"SELECT key, value FROM meta{where}")}
        except ValueError as exc:
            raise _unreadable(self.path, exc) from None

    def count(self) -> int:
        return self.query("SELECT count(*) FROM chunks")[0][0]

    # Columns of a chunk joined with its current take, by what the caller reads: a
    # status needs no text, a list no record (the large columns cost most at 20,000).
    _COLUMNS = {
        "status": "c.idx, c.take, t.file, t.size, t.mtime_ns, t.duration, t.flags, "
                  "t.damaged",
        "list": "c.idx, c.text, c.seed, c.pause_after, c.chapter, c.take, t.seed_used, "
                "t.file, t.sha256, t.size, t.mtime_ns, t.sample_rate, t.channels, "
                "t.samples, t.duration, t.flags, t.damaged",
    }
    _COLUMNS["full"] = _COLUMNS["list"] + ", t.record"

    def chunks(self, start: int = 0, stop: int | None = None, columns: str = "list") -> list:
        """Chunk rows [start, stop) joined with their current take (NULLs when none)."""
        stop = self.count() if stop is None else stop
        return self.query(
            f"SELECT {self._COLUMNS[columns]} FROM chunks c LEFT JOIN takes t "
            "ON t.id = c.take WHERE c.idx >= ? AND c.idx < ? ORDER BY c.idx", (start, stop))

    def take(self, take_id: int) -> TakeRow:
        rows = self.query("SELECT * FROM takes WHERE id = ?", (take_id,))
        return TakeRow.from_row(rows[0])

    def takes_of(self, idx: int) -> list[TakeRow]:
        return [TakeRow.from_row(r)
                for r in self.query("SELECT * FROM takes WHERE idx = ? ORDER BY id", (idx,))]

    # ------------------------------------------------------------------ writes
    @contextlib.contextmanager
    def transaction(self):
        """One atomic change: all of it commits, or none of it."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _db_error(self.path, exc) from None
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):     # already rolled back by sqlite
                self.db.execute("ROLLBACK")
            raise _db_error(self.path, exc) from None

    @staticmethod
    def set(db, key: str, value) -> None:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                   (key, json.dumps(value, ensure_ascii=False)))

    @staticmethod
    def add_take(db, take: dict) -> int:
        columns = ("idx", "text", "seed", "seed_used", "file", "sha256", "size",
                   "mtime_ns", "sample_rate", "channels", "samples", "duration", "flags",
                   "record")
        values = [take[c] for c in columns]
        values[columns.index("flags")] = json.dumps(list(take["flags"]), ensure_ascii=False)
        values[columns.index("record")] = json.dumps(take["record"], ensure_ascii=False)
        cursor = db.execute(f"INSERT INTO takes ({', '.join(columns)}) VALUES "
                            f"({', '.join('?' * len(columns))})", values)
        db.execute("UPDATE chunks SET take = ? WHERE idx = ?", (cursor.lastrowid, take["idx"]))
        return cursor.lastrowid


# ---------------------------------------------------------------------- take files
def take_file(folder: Path, name: str) -> Path:
    return folder / TAKES_DIR / name


def wav_header(path: Path) -> tuple[int, int, int]:
    """(sample rate, channels, samples) from a WAV file's header."""
    with wave.open(str(path), "rb") as reader:
        return reader.getframerate(), reader.getnchannels(), reader.getnframes()


def sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_take(folder: Path, take: TakeRow, stat=None, *, full: bool = False) -> str | None:
    """Why a take's file is not the audio its row describes, or None when it is.
    Cheap: it exists, its size, and its header when the file was touched since its
    row was written. `full`: the header and the sha256 of the content too."""
    path = take_file(folder, take.file)
    if take.damaged:
        return take.damaged
    if stat is None:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return "its audio file is missing"
        except OSError as exc:
            return f"its audio file cannot be read ({exc.strerror or exc})"
    if stat.st_size != take.size:
        return f"its audio file is {stat.st_size} bytes, not {take.size}"
    if not full and stat.st_mtime_ns == take.mtime_ns:
        return None
    try:
        header = wav_header(path)
    except (OSError, EOFError, wave.Error) as exc:
        return f"its audio file is not a readable WAV ({exc})"
    expected = (take.sample_rate, take.channels, take.samples)
    if header != expected:
        return (f"its audio file holds {header[2]} samples at {header[0]} Hz in "
                f"{header[1]} channel(s), not {expected[2]} at {expected[0]} Hz in "
                f"{expected[1]}")
    if full and sha256_file(path) != take.sha256:
        return "its audio file's content changed (sha256 differs)"
    return None


def scan_takes(folder: Path) -> dict:
    """{file name: os.stat_result} of the takes folder: one listing, then a stat per
    file relative to the open folder (the cheapest way to learn 20,000 sizes)."""
    takes = folder / TAKES_DIR
    try:
        names = os.listdir(takes)
        fd = os.open(takes, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    out = {}
    try:
        for name in names:
            try:
                out[name] = os.stat(name, dir_fd=fd) if _DIR_FD else os.stat(takes / name)
            except FileNotFoundError:
                continue
    finally:
        os.close(fd)
    return out


_DIR_FD = os.stat in os.supports_dir_fd     # not on Windows, where the listing is cheap


# ---------------------------------------------------------------------- the lock
def _alive(holder: dict) -> bool:
    """Whether the process a holder row names still runs (other hosts: assumed)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        import psutil
    except ImportError:
        return True
    return psutil.pid_exists(int(holder.get("pid", -1)))


def holder(store: Store) -> dict | None:
    """Who holds the project's writer lock (pid, host, action, since), or None. Read
    from the store, so asking never disturbs a writer."""
    try:
        found = store.get("holder")
    except (sqlite3.Error, ValueError):
        return None
    return found if isinstance(found, dict) and _alive(found) else None


def busy_error(name: str, found: dict | None) -> ProjectLocked:
    who = ("another kernel or process" if not found else
           f"process {found.get('pid')} on {found.get('host')} ({found.get('action')}, "
           f"since {found.get('since')})")
    return ProjectLocked(f"Project {name!r} is being changed by {who}.",
                         "Wait for it to finish, or stop it there first (Cancel on its "
                         "page, or end that process).")


@contextlib.contextmanager
def writer(folder: Path, store: Store | None, name: str, action: str):
    """Hold the project's writer lock for one change, or raise project_busy naming
    the holder. The holder is recorded in the store while it is held."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(folder / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise busy_error(name, holder(store) if store else None) from None
    try:
        if store is not None:
            me = {"pid": os.getpid(), "host": socket.gethostname(), "action": action,
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            with store.transaction() as db:
                Store.set(db, "holder", me)
        try:
            yield
        finally:
            if store is not None:
                with contextlib.suppress(CbxError):   # the lock's release says enough
                    with store.transaction() as db:
                        db.execute("DELETE FROM meta WHERE key = 'holder'")
    finally:
        lock.release()


# ---------------------------------------------------------------------- summaries
def summary(folder) -> dict | None:
    """{"name", "chunks", "done"} of a project folder from its store alone, or None
    when it has none or it cannot be read (cleanup.py's view: standard library only,
    no environment needed)."""
    path = Path(folder) / DB_NAME
    if not path.is_file():
        return None
    # No -wal file: nobody is writing, and `immutable` reads without creating the
    # -wal/-shm files a plain open of a WAL database leaves behind (a dry run of
    # cleanup.py must change nothing).
    flags = "mode=ro" if path.with_name(path.name + "-wal").exists() else "mode=ro&immutable=1"
    try:
        db = sqlite3.connect(f"{path.as_uri()}?{flags}", uri=True, timeout=2)
        try:
            name = db.execute("SELECT value FROM meta WHERE key = 'name'").fetchone()
            total, done = db.execute("SELECT count(*), count(take) FROM chunks").fetchone()
        finally:
            db.close()
        return {"name": json.loads(name[0]) if name else Path(folder).name,
                "chunks": int(total), "done": int(done)}
    except (sqlite3.Error, ValueError, TypeError):
        return None

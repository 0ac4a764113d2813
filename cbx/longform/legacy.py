"""Projects made before the store (format 1: `project.json` + `chunks/NNNN.wav|json`
+ `superseded/`), imported on first open with nothing lost.

Why it is kept apart: it reads a format nobody writes any more, and it goes once no
format-1 project is left on any disk.

Standard library only.
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
import wave
from pathlib import Path

from .. import files
from ..errors import InvalidText
from .names import WINDOWS_DEVICES
from .store import TAKES_DIR, Store, sha256_file

MANIFEST = "project.json"
IMPORTED_DIR = "imported-v1"
_V1_NAME_CHARS = 64


def v1_folder_name(name: str) -> str:
    """The folder format 1 gave a name (its rule, to find an old project by name)."""
    text = unicodedata.normalize("NFKC", name).strip()
    text = re.sub(r"\s+", "-", text)
    text = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)
    text = re.sub(r"-{2,}", "-", text).strip("-.")[:_V1_NAME_CHARS].rstrip("-.")
    if text.split(".")[0].upper() in WINDOWS_DEVICES:
        text = "_" + text
    return text


def _plan(folder: Path) -> dict:
    try:
        plan = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if plan.get("version") != 1 or not isinstance(plan.get("chunks"), list):
            raise ValueError("not a format-1 project")
        return plan
    except (OSError, ValueError) as exc:
        raise InvalidText(f"The old-format project {folder / MANIFEST} cannot be read "
                          f"({exc}).", "Restore it from a backup, or delete the folder "
                          "and create the project again.") from None


def read_name(folder: Path) -> str:
    name = _plan(folder).get("name")
    return name if isinstance(name, str) and name.strip() else folder.name


def v1_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file())


def find_v1(root: Path, name: str) -> Path | None:
    """The format-1 folder of project `name`, when there is one not yet imported."""
    folder_name = v1_folder_name(name)
    if not folder_name:
        return None
    folder = root / folder_name
    if not (folder / MANIFEST).is_file():
        return None
    try:
        return folder if read_name(folder) == name else None
    except InvalidText:
        return folder


def _take(folder: Path, wav: Path, record: dict, index: int) -> dict | None:
    """A take row for an old chunk file, its audio copied into takes/ by content."""
    try:
        with wave.open(str(wav), "rb") as reader:
            rate, channels, samples = (reader.getframerate(), reader.getnchannels(),
                                       reader.getnframes())
    except (OSError, EOFError, wave.Error):
        return None
    sha = sha256_file(wav)
    target = folder / TAKES_DIR / f"{sha}.wav"
    if not target.is_file():
        files.write_atomic(target, wav.read_bytes())
    stat = target.stat()
    flags = record.get("flags") or []
    kept = {k: v for k, v in record.items()
            if k in ("attempts", "untrimmed_duration", "expected", "notes",
                     "voice_sha256", "variant", "device", "dtype", "created")}
    kept.setdefault("attempts", [])
    for key in ("variant", "device", "dtype"):
        kept.setdefault(key, "unknown")
    return {"idx": index, "text": str(record.get("text", "")),
            "seed": int(record.get("seed", 0)),
            "seed_used": int(record.get("seed_used", record.get("seed", 0))),
            "file": target.name, "sha256": sha, "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "sample_rate": rate, "channels": channels,
            "samples": samples, "duration": round(samples / rate, 3) if rate else 0.0,
            "flags": [str(f) for f in flags], "record": kept}


def _records(old: Path):
    """(chunk index, record, wav) of every old take: current ones first, then the
    superseded ones (named NNNN-<stamp>)."""
    for where in ("chunks", "superseded"):
        for json_path in sorted((old / where).glob("*.json")):
            wav = json_path.with_suffix(".wav")
            try:
                record = json.loads(json_path.read_text(encoding="utf-8"))
                index = int(json_path.stem.split("-")[0])
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and wav.is_file():
                yield where, index, record, wav


def import_into(old: Path, folder: Path, store: Store) -> None:
    """Write the old project's plan and takes into a new, empty store: one
    transaction, so a kill leaves either no import or a whole one."""
    plan = _plan(old)
    (folder / TAKES_DIR).mkdir(exist_ok=True)
    chunks = plan["chunks"]
    takes = []
    for where, index, record, wav in _records(old):
        take = _take(folder, wav, record, index)
        if take is None:
            continue
        planned = chunks[index] if index < len(chunks) else None
        current = (where == "chunks" and planned is not None
                   and record.get("text") == planned.get("text")
                   and record.get("seed") == planned.get("seed"))
        takes.append((take, current))
    with store.transaction() as db:
        db.executemany("INSERT INTO chunks (idx, text, seed, pause_after, chapter) "
                       "VALUES (?, ?, ?, ?, ?)",
                       ((i, c["text"], int(c["seed"]), float(c.get("pause_after", 0.3)),
                         c.get("chapter")) for i, c in enumerate(chunks)))
        # superseded takes first, so each chunk's current take is the last one added
        for take, current in sorted(takes, key=lambda pair: pair[1]):
            take_id = Store.add_take(db, take)
            if not current:
                db.execute("UPDATE chunks SET take = NULL WHERE idx = ? AND take = ?",
                           (take["idx"], take_id))
        voice = {"name": plan.get("voice"), "sha256": plan.get("voice_sha256"),
                 "clip": None}
        meta = {"name": read_name(old), "created": plan.get("created"),
                "seed": int(plan["seed"]), "rate": float(plan.get("rate", 1.0)),
                "max_chunk_chars": int(plan.get("max_chunk_chars", 300)),
                "text_format": "plain", "options": plan.get("options") or {},
                "voice": voice, "source": "\n\n".join(c["text"] for c in chunks),
                "imported_from": old.name}
        for key, value in meta.items():
            Store.set(db, key, value)
        Store.set(db, "schema_version", 1)


def retire(old: Path, folder: Path) -> None:
    """Move the imported old folder inside the new one (same disk: a rename)."""
    target = folder / IMPORTED_DIR
    if old.exists() and not target.exists():
        os.replace(old, target)

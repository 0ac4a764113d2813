"""A project's name and its folder.

Why a hash in the folder: a folder name must be shorter and plainer than what people
call their work ("Volume One, Chapter 1" and "...Chapter 2" once shared a folder after
truncation, and so did "my book" and "my/book"). The folder is a readable slug plus a
short hash of the exact name, so two names never share one; the exact name lives in
the project's store.

Standard library only.
"""
from __future__ import annotations

import hashlib
import unicodedata

from ..errors import InvalidSetting

MAX_NAME_BYTES = 200       # the exact name, UTF-8; kept in the store, not the file system
SLUG_BYTES = 40            # the readable part of the folder name, UTF-8
HASH_CHARS = 10
_KEPT_PUNCTUATION = "-_."
# Windows reads "CON.txt-1a2b" as the device CON: a folder must not start with one.
WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{p}{i}" for p in ("COM", "LPT") for i in range(10)})


def check_name(name) -> str:
    """The project's name in Unicode NFC (so the same visible name typed on Windows and
    pasted from macOS is one project), or `invalid_setting` before anything is written."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidSetting(f"A project name must be non-empty text, not {name!r}.",
                             "Name the project, e.g. 'chapter-1'.")
    name = unicodedata.normalize("NFC", name)
    control = [ch for ch in name if unicodedata.category(ch) in ("Cc", "Cs")]
    if control:
        raise InvalidSetting(f"The project name {name!r} holds a control character "
                             f"({control[0]!r}).",
                             "Use letters, digits, spaces and punctuation only.")
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise InvalidSetting(f"The project name is {size} bytes long in UTF-8; the limit "
                             f"is {MAX_NAME_BYTES}.", "Use a shorter name.")
    return name


def _clusters(text: str):
    """Base characters with the combining marks that follow them ("कि" is one), so a
    slug is never cut between a letter and its vowel sign."""
    cluster = ""
    for ch in text:
        if cluster and unicodedata.category(ch).startswith("M"):
            cluster += ch
            continue
        if cluster:
            yield cluster
        cluster = ch
    if cluster:
        yield cluster


def slug(name: str) -> str:
    """The readable part of a project's folder name (also a file name for its exports)."""
    out, size = [], 0
    for cluster in _clusters(name):
        base = cluster[0]
        if base.isalnum() or base in _KEPT_PUNCTUATION:
            piece = cluster
        else:
            piece = "-"
        if piece == "-" and (not out or out[-1] == "-"):
            continue
        if size + len(piece.encode("utf-8")) > SLUG_BYTES:
            break
        out.append(piece)
        size += len(piece.encode("utf-8"))
    slug = "".join(out).strip("-.") or "project"
    return "_" + slug if slug.split(".")[0].upper() in WINDOWS_DEVICES else slug


def folder_name(name: str) -> str:
    """`<slug>-<hash>`: readable, unique per exact name, valid on Windows, macOS and
    Linux (no reserved characters, no trailing dot or space, far below 255 bytes)."""
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:HASH_CHARS]
    return f"{slug(name)}-{digest}"

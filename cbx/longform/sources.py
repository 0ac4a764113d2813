"""A project's text from plain text, Markdown or SubRip (.srt): the pieces to speak,
where chapters start and how long to pause after each.

Why its own module: a file can be binary, in the wrong encoding or empty, and each
of those must become `invalid_text` with the fix, before any model is loaded.

Layer 4, standard library only (like text.py, which splits each piece into chunks).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import text as textmod
from ..errors import InvalidSetting, InvalidText

PAUSE_SECONDS = 0.3          # between chunks of one paragraph or subtitle
CHAPTER_PAUSE_SECONDS = 1.5  # before a Markdown heading (a chapter mark)
MAX_FILE_BYTES = 20 * 1024 * 1024
FORMATS = ("plain", "markdown", "srt")
_SUFFIXES = {".txt": "plain", ".text": "plain", ".md": "markdown",
             ".markdown": "markdown", ".srt": "srt"}

_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SRT_TIME = re.compile(r"^\s*\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}\s*-->\s*"
                       r"\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}")
_TAG = re.compile(r"<[^>]+>")                               # <i>, <b>, <font ...>
_MD_INLINE = [
    (re.compile(r"!\[[^\]]*\]\([^)]*\)"), ""),              # images: not spoken
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),          # links: their text
    (re.compile(r"`([^`]*)`"), r"\1"),
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),
    (re.compile(r"(?<![\w*])[*_](\S(?:.*?\S)?)[*_](?![\w*])"), r"\1"),
    (_TAG, ""),
]
_MD_LINE = re.compile(r"^\s{0,3}(?:[-*+]\s+|\d+[.)]\s+|>\s?)")
_MD_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")


@dataclass(frozen=True)
class Piece:
    text: str                 # one chunk's text
    pause_after: float        # seconds of silence after it in the export
    chapter: str | None = None  # set on the first chunk of a Markdown heading


def format_of(name: str) -> str:
    """The text format a file name's suffix names; any other suffix is `invalid_text`."""
    fmt = _SUFFIXES.get(Path(name).suffix.lower())
    if fmt is None:
        raise InvalidText(f"{Path(name).name}: cbx reads text from .txt, .md and .srt "
                          "files.", "Save the text as plain UTF-8 text (.txt), Markdown "
                          "(.md) or subtitles (.srt).")
    return fmt


def check_size(size: int, name: str) -> None:
    """`invalid_text` for a file over MAX_FILE_BYTES (also the browser's upload check)."""
    if size > MAX_FILE_BYTES:
        raise InvalidText(f"{name} is {size // 1024 // 1024} MB; a text file "
                          f"for a project is at most {MAX_FILE_BYTES // 1024 // 1024}"
                          " MB.", "Split it into several projects (one per chapter).")


def read_upload(data: bytes, filename: str) -> tuple[str, str]:
    """(text, format) of an uploaded file's bytes: the same checks as a file on disk
    (the dashboard's upload never touches the disk before it is known to be text)."""
    fmt = format_of(filename)
    check_size(len(data), Path(filename).name)
    return decode(data, Path(filename).name), fmt


def read_text_file(path) -> tuple[str, str]:
    """(text, format) of a .txt, .md or .srt file; bad files are `invalid_text`."""
    path = Path(path).expanduser()
    fmt = format_of(path.name)
    try:
        check_size(path.stat().st_size, path.name)
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidText(f"{path} does not exist.",
                          "Check the path of the text file.") from None
    except OSError as exc:
        raise InvalidText(f"{path} cannot be read ({exc.strerror or exc}).",
                          "Check that it is a file you may read.") from None
    return decode(data, path.name), fmt


def decode(data: bytes, name: str = "the file") -> str:
    """UTF-8 (with or without a BOM, or UTF-16 with a BOM) text of a file's bytes."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
        if b"\x00" in data:
            raise InvalidText(f"{name} is not a text file (it holds binary data).",
                              "Pick the .txt, .md or .srt file with the words to speak.")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise InvalidText(f"{name} is not UTF-8 text (byte {exc.start} cannot be "
                          "decoded).", "Save it again as UTF-8 (in Notepad: Save As, "
                          "Encoding: UTF-8).") from None
    if not text.strip():
        raise InvalidText(f"{name} is empty.", "Put the words to speak in it.")
    return text


def pieces(text: str, fmt: str = "plain", *,
           max_chars: int = textmod.DEFAULT_MAX_CHARS) -> list[Piece]:
    """The chunks of `text` in the given format, each at most `max_chars` long."""
    if fmt not in FORMATS:
        raise InvalidSetting(f"text_format={fmt!r} is not one of the allowed values.",
                             f"Use one of: {', '.join(FORMATS)}.")
    if fmt == "srt":
        sections = [(None, block) for block in _srt_blocks(text)]
    elif fmt == "markdown":
        sections = _markdown_sections(text)
    else:
        sections = [(None, textmod.validate_text(text))]
    out: list[Piece] = []
    for chapter, body in sections:
        if out and chapter is not None:
            last = out[-1]
            out[-1] = Piece(last.text, CHAPTER_PAUSE_SECONDS, last.chapter)
        if not body.strip():
            continue
        chunks = textmod.split_text(body, max_chars=max_chars, first_chunk_chars=None)
        for k, chunk in enumerate(chunks):
            out.append(Piece(chunk, PAUSE_SECONDS, chapter if k == 0 else None))
    if not out:
        raise InvalidText("The text has nothing to speak (only markup or timings).",
                          "Add the words to speak.")
    return out


def _srt_blocks(text: str) -> list[str]:
    """Each subtitle's words (its number and timing line dropped)."""
    blocks = []
    for raw in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = [line.strip() for line in raw.strip().split("\n") if line.strip()]
        if lines and lines[0].isdigit():
            lines = lines[1:]
        if not lines or not _SRT_TIME.match(lines[0]):
            if lines:
                raise InvalidText(f"This is not a SubRip (.srt) file: {lines[0][:60]!r} "
                                  "is not a subtitle's timing line.",
                                  "Each subtitle needs a number, a line like "
                                  "'00:00:01,000 --> 00:00:03,500' and its text; or load "
                                  "the file as plain text (.txt).")
            continue
        words = " ".join(_TAG.sub("", line) for line in lines[1:]).strip()
        if words:
            blocks.append(words)
    if not blocks:
        raise InvalidText("The .srt file holds no subtitle text.",
                          "Check that it is the right file.")
    return blocks


def _markdown_sections(text: str) -> list[tuple[str | None, str]]:
    """[(heading or None, the plain text under it)]; the heading is spoken too."""
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    in_code = False
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
            continue
        if in_code or _MD_RULE.match(line):
            continue
        heading = _HEADING.match(line)
        if heading:
            title = _inline(heading.group(2))
            sections.append((title, [title + ("" if title[-1:] in ".!?" else ".")]))
            continue
        sections[-1][1].append(_inline(_MD_LINE.sub("", line)))
    return [(title, "\n".join(lines)) for title, lines in sections]


def _inline(line: str) -> str:
    for pattern, replacement in _MD_INLINE:
        line = pattern.sub(replacement, line)
    return line


def load(text=None, *, text_format: str | None = None,
         max_chars: int = textmod.DEFAULT_MAX_CHARS) -> tuple[str, list[Piece]]:
    """(source text, pieces) from a string or a path (`os.PathLike`): a path's suffix
    names its format unless `text_format` does; a string is plain unless told."""
    if isinstance(text, os.PathLike):
        body, fmt = read_text_file(text)
    elif isinstance(text, str):
        body, fmt = text, "plain"
    else:
        raise InvalidText(f"The text must be a string or a file path, not "
                          f"{type(text).__name__}.", "Pass the words, or a "
                          "pathlib.Path to a .txt, .md or .srt file.")
    fmt = text_format or fmt
    return body, pieces(body, fmt, max_chars=max_chars)

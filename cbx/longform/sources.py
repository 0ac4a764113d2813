"""A project's text from plain text, Markdown or SubRip (.srt): the pieces to speak,
where chapters start and how long to pause after each.

Why its own module: a file can be binary, in the wrong encoding, empty, endless (a
pipe, /dev/zero) or malformed, and each of those must become `invalid_text` with the
fix, before any model is loaded. Every text file, `cbx speak -f` included, is read
here through the capped reader voice clips use (`voices.read_capped`).

Layer 4, standard library only (like text.py, which splits each piece into chunks).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import text as textmod
from ..errors import InvalidSetting, InvalidText
from ..tags import TAG_PATTERN
from ..voices import read_capped

PAUSE_SECONDS = 0.3          # between chunks of one paragraph or subtitle
CHAPTER_PAUSE_SECONDS = 1.5  # before a Markdown heading (a chapter mark)
MAX_FILE_BYTES = 20 * 1024 * 1024
FORMATS = ("plain", "markdown", "srt")
_SUFFIXES = {".txt": "plain", ".text": "plain", ".md": "markdown",
             ".markdown": "markdown", ".srt": "srt"}

_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SRT_TIME = re.compile(r"^\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}\s*-->\s*"
                       r"\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}(?:\s|$)")
# What a timing line looks like even when malformed: an arrow, or two clock times.
_SRT_TIMING_LIKE = re.compile(r"-->|\d+:\d\d:\d\d.*\d+:\d\d:\d\d")
_SRT_FIX = ("A subtitle is a number, a timing line such as '00:00:01,000 --> "
            "00:00:03,500' and its words; fix that line, or load the file as plain "
            "text (.txt).")
SHOWN_UNSPEAKABLE = 3        # chunks named in the "nothing to speak" error
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
_MD_FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")


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


def too_large(size: int, name: str) -> InvalidText:
    """The one "text over MAX_FILE_BYTES" error. `size` may be only what was read
    (MAX_FILE_BYTES + 1 from a pipe), so a size not above the limit in MB says "over"."""
    limit_mb, size_mb = MAX_FILE_BYTES // 2**20, size // 2**20
    said = f"is {size_mb} MB" if size_mb > limit_mb else f"is over {limit_mb} MB"
    return InvalidText(f"{name} {said}; a text file for cbx is at most {limit_mb} MB.",
                       "Split it into several files (one per chapter).")


def check_size(size: int, name: str) -> None:
    """`invalid_text` for a file over MAX_FILE_BYTES (also the browser's upload check)."""
    if size > MAX_FILE_BYTES:
        raise too_large(size, name)


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
    return read_text(path), fmt


def read_text(path) -> str:
    """The text of the file at `path`, whatever its suffix (`cbx speak -f`): a regular
    file only, at most MAX_FILE_BYTES read whatever its size claims, so a FIFO is
    refused instead of waited on and /dev/zero instead of read until memory runs out."""
    path = Path(path).expanduser()
    try:
        data = read_capped(path, MAX_FILE_BYTES, lambda size: too_large(size, str(path)))
    except FileNotFoundError:
        raise InvalidText(f"{path} does not exist.",
                          "Check the path of the text file.") from None
    except OSError as exc:
        raise InvalidText(f"{path} cannot be read: {exc.strerror or exc}.",
                          "Give the path of a regular text file that you may read.") \
            from None
    return decode(data, path.name)


def read_stream(stream, name: str = "standard input") -> str:
    """The text of a binary stream (`cbx speak -f -`), capped like a file: at most
    MAX_FILE_BYTES + 1 bytes are read, so an endless one is refused, not exhausted."""
    data = stream.read(MAX_FILE_BYTES + 1)
    check_size(len(data), name)
    return decode(data, name)


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
    """The chunks of `text` in the given format, each at most `max_chars` long (in
    characters of speech, `text.speech_length`), every one with something to speak."""
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
    breath = False          # whether the last piece's pause is only the default breath
    for chapter, body in sections:
        if out and chapter is not None:
            last = out[-1]
            out[-1] = Piece(last.text, max(last.pause_after, CHAPTER_PAUSE_SECONDS),
                            last.chapter)
            breath = False
        if not body.strip():
            continue
        for chunk in textmod.split_text(body, max_chars=max_chars, first_chunk_chars=None):
            seconds = textmod.pause_seconds(chunk)
            if seconds is None:
                out.append(Piece(chunk, PAUSE_SECONDS, chapter))
                chapter, breath = None, True
                continue
            if not out:
                raise InvalidText(f"The text starts with a pause ({chunk}): a project's "
                                  "silences follow its chunks.",
                                  "Start the text with words; a pause goes after them.")
            last = out[-1]     # a pause tag replaces the breath, or adds to a pause
            out[-1] = Piece(last.text, seconds + (0.0 if breath else last.pause_after),
                            last.chapter)
            breath = False
    if not out:
        raise InvalidText("The text has nothing to speak (only markup or timings).",
                          "Add the words to speak.")
    check_speakable([piece.text for piece in out])
    return out


def check_speakable(chunks) -> None:
    """`invalid_text` naming the chunks (numbered from 1) with no letter or digit outside
    sound tags (`♪ ♪`, `🎉.`, `[laugh]`): the model has no words to read there, so it
    makes noise or babble that the guard cannot judge against an empty text."""
    empty = [(number, chunk) for number, chunk in enumerate(chunks, 1)
             if not any(ch.isalnum() for ch in TAG_PATTERN.sub("", chunk))]
    if not empty:
        return
    named = "; ".join(f"chunk {number}: {chunk[:40]!r}"
                      for number, chunk in empty[:SHOWN_UNSPEAKABLE])
    more = (f" (and {len(empty) - SHOWN_UNSPEAKABLE} more)"
            if len(empty) > SHOWN_UNSPEAKABLE else "")
    raise InvalidText(f"{len(empty)} chunk(s) have nothing to speak, no letter or digit: "
                      f"{named}{more}.",
                      "Add words to those lines or delete them: symbols, emoji and sound "
                      "tags such as [laugh] on their own are not spoken.")


def _srt_blocks(text: str) -> list[str]:
    """Each subtitle's words, read line by line, since many files lack the blank lines
    between subtitles: a timing line starts a subtitle (a number on the line before it
    is its index) and the lines after it are its words. A timing or an index is never
    spoken: a malformed timing, words before the first timing, or a number starting a
    block with no timing after it is `invalid_text` naming the line."""
    subtitles: list[list[str]] = []
    held = None            # a number line (line number, text, after a blank line): the
    blank = True           # next line tells index from words; was the last line blank?
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for line_no, line in enumerate((line.strip() for line in lines), 1):
        if not line:
            blank = True
            continue
        timing = _SRT_TIMING_LIKE.search(line)
        if held is not None and not timing:
            _held_number_as_words(held, subtitles)
        held = None
        if timing:
            if not _SRT_TIME.match(line):
                raise _srt_error(line_no, line, "is not a valid timing line")
            subtitles.append([])
        elif line.isdecimal():
            held = (line_no, line, blank)
        elif not subtitles:
            raise _srt_error(line_no, line, "comes before the first timing line")
        else:
            subtitles[-1].append(line)
        blank = False
    if held is not None:
        _held_number_as_words(held, subtitles)
    blocks = [" ".join(_TAG.sub("", line) for line in words).strip()
              for words in subtitles]
    blocks = [words for words in blocks if words]
    if not blocks:
        raise InvalidText("The .srt file holds no subtitle text.",
                          "Check that it is the right file.")
    return blocks


def _held_number_as_words(held: tuple[int, str, bool], subtitles: list[list[str]]) -> None:
    """A number line with no timing after it is words ("42"), unless it starts a block,
    where it can only be the index of a subtitle that lost its timing."""
    line_no, line, after_blank = held
    if after_blank:
        raise _srt_error(line_no, line, "is a subtitle number with no timing line after it")
    subtitles[-1].append(line)


def _srt_error(line_no: int, line: str, what: str) -> InvalidText:
    return InvalidText(f"Line {line_no} of the SubRip (.srt) file, {line[:60]!r}, {what}.",
                       _SRT_FIX)


def _code_lines(lines: list[str]) -> list[bool]:
    """Which lines are code (a fenced block, its fences included), not spoken. A fence
    closes at the next fence line of the same character, at least as long, with nothing
    after it; one never closed is a stray marker, so only its own line is dropped and
    the text after it is still spoken."""
    fences = []            # (line index, fence character, length, could close a block)
    for index, line in enumerate(lines):
        found = _MD_FENCE.match(line)
        if found and not (found[1][0] == "`" and "`" in found[2]):   # ```inline code```
            mark, rest = found.groups()
            fences.append((index, mark[0], len(mark), not rest.strip()))
    longest_after = []     # per fence: the longest closing fence of each character after it
    longest = {"`": 0, "~": 0}
    for _index, char, length, closing in reversed(fences):
        longest_after.append(dict(longest))
        if closing:
            longest[char] = max(longest[char], length)
    longest_after.reverse()
    code = [False] * len(lines)
    k = 0
    while k < len(fences):
        start, char, length, _closing = fences[k]
        if longest_after[k][char] < length:       # never closed: a stray marker
            code[start] = True
            k += 1
            continue
        k += 1
        while not (fences[k][1] == char and fences[k][2] >= length and fences[k][3]):
            k += 1
        end = fences[k][0]
        code[start:end + 1] = [True] * (end + 1 - start)
        k += 1
    return code


def _markdown_sections(text: str) -> list[tuple[str | None, str]]:
    """[(heading or None, the plain text under it)]; the heading is spoken too."""
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    lines = text.replace("\r\n", "\n").split("\n")
    for line, code in zip(lines, _code_lines(lines)):
        if code or _MD_RULE.match(line):
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

"""Subtitles (SRT and WebVTT) timed from the real audio of a take.

The engine knows where each chunk's audio sits in the joined take, but a chunk's span
also holds the model's own near-silence before and after the words, so each cue is
timed from where the speech inside that span starts and ends (short-time energy).
A chunk too long for one cue is cut at sentences, then clauses, then words, and its
speech time is shared out by characters: speech runs at a roughly even rate, so a
cue's share of the letters is a fair guess at its share of the time.

Decisions:
- a span with no speech (its loudest 10 ms frame under `NO_SPEECH_DBFS`) has the
  bounds (start_s, start_s); make_cues then shows that chunk's text over its whole
  span, since the words were asked for and dropping them would lose text;
- every cue lasts at least `MIN_CUE_S` when its chunk's span has room for that;
- cues never leave their chunk's span, never overlap and never go backwards.

Layer: beside audio.py and text.py; numpy is imported inside the functions that
measure audio, so writing subtitle files needs the standard library only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidSetting
from .tags import TAG_PATTERN

FRAME_S = 0.010          # short-time energy frames
THRESHOLD_DB = -40.0     # speech: a frame within this of the span's loudest frame
NO_SPEECH_DBFS = -60.0   # a span whose loudest frame is quieter than this is silent
LEAD_S = 0.020           # kept before the first loud frame: soft onsets (f, h, s)
HANGOVER_S = 0.050       # kept after the last loud frame: consonant tails
MIN_CUE_S = 0.3          # shorter cues flash by unread

# Markup that is not spoken as words: Turbo's tags ("[laugh]"), pause markup in
# either form ("[pause 1.5s]", '<break time="800ms"/>').
_UNSPOKEN = re.compile(rf"{TAG_PATTERN.pattern}|(?i:\[pause\b[^\]]*\]|<break\b[^>]*>)")
_CLOSERS = "\"')]}»”’"
_SENTENCE_END = re.compile(rf"[.!?…][{re.escape(_CLOSERS)}]*$")
_CLAUSE_END = re.compile(rf"[,;:–—][{re.escape(_CLOSERS)}]*$")
_DASHES = {"-", "--"}     # a dash standing alone between words ends a clause too


@dataclass(frozen=True)
class Cue:
    start: float    # seconds into the take
    end: float
    text: str       # lines joined by "\n"


def caption_text(text: str) -> str:
    """`text` as a viewer reads it: tags and pause markup removed, whitespace collapsed;
    every real word kept."""
    return " ".join(_UNSPOKEN.sub(" ", text).split())


def speech_bounds(wav, sample_rate: int, start_s: float, end_s: float) -> tuple[float, float]:
    """The first and last moment of speech inside [start_s, end_s], from 10 ms energy
    frames against the span's loudest; always inside the span. No speech there gives
    (start_s, start_s)."""
    import numpy as np

    samples = np.asarray(wav, dtype=np.float32).reshape(-1)
    first = max(0, int(round(start_s * sample_rate)))
    last = min(len(samples), int(round(end_s * sample_rate)))
    frame = max(1, int(round(FRAME_S * sample_rate)))
    span = samples[first:last].astype(np.float64)
    if len(span) == 0:
        return start_s, start_s
    span = np.pad(span, (0, -len(span) % frame))
    power = np.mean(span.reshape(-1, frame) ** 2, axis=1)
    level_db = 10.0 * np.log10(power + 1e-20)
    loudest = float(level_db.max())
    if loudest < NO_SPEECH_DBFS:
        return start_s, start_s
    loud = np.flatnonzero(level_db >= loudest + THRESHOLD_DB)
    speech_start = (first + loud[0] * frame) / sample_rate - LEAD_S
    speech_end = (first + (loud[-1] + 1) * frame) / sample_rate + HANGOVER_S
    return max(start_s, speech_start), min(end_s, speech_end)


def make_cues(wav, sample_rate: int, pieces, max_line: int = 42,
              max_lines: int = 2) -> list[Cue]:
    """Cues for a take: `pieces` is (text, start_s, end_s) per chunk, in the order they
    are heard. Each chunk's caption text is cut into cues of at most `max_lines` lines
    of `max_line` characters, timed inside the chunk's speech."""
    cues: list[Cue] = []
    for text, span_start, span_end in pieces:
        words = caption_text(text).split()
        if not words:
            continue
        span_start = max(span_start, cues[-1].end if cues else 0.0)
        span_end = max(span_end, span_start)
        start, end = speech_bounds(wav, sample_rate, span_start, span_end)
        if end <= start:
            start, end = span_start, span_end
        groups = _cue_groups(words, max_line, max_lines)
        needed = MIN_CUE_S * len(groups)
        if end - start < needed:       # too short to read: borrow the span's quiet ends
            end = min(span_end, start + needed)
            start = max(span_start, end - needed)
        weights = [sum(len(w) for w in group) for group in groups]
        for group, (cue_start, cue_end) in zip(groups, _share(start, end, weights)):
            cues.append(Cue(cue_start, cue_end, "\n".join(_wrap(group, max_line))))
    return cues


def _share(start: float, end: float, weights: list[int]) -> list[tuple[float, float]]:
    """[start, end] cut into back-to-back intervals proportional to `weights`, each at
    least MIN_CUE_S long where the whole has room for that."""
    total = end - start
    floor = MIN_CUE_S if total >= MIN_CUE_S * len(weights) else 0.0
    durations = [0.0] * len(weights)
    free = list(range(len(weights)))
    while free:
        room = total - floor * (len(weights) - len(free))
        mass = sum(weights[i] for i in free)
        short = [i for i in free if room * weights[i] / mass < floor]
        if not short:
            for i in free:
                durations[i] = room * weights[i] / mass
            break
        for i in short:
            durations[i] = floor
        free = [i for i in free if i not in short]
    bounds, at = [], start
    for duration in durations:
        bounds.append((at, min(end, at + duration)))
        at += duration
    return bounds


def _cue_groups(words: list[str], max_line: int, max_lines: int) -> list[list[str]]:
    """Words cut into cue-sized groups: at sentence ends first, then clause ends, then
    between words. Whole neighbouring units that fit together share a cue; a unit that
    had to be cut shares none, so a cue never holds the tail of one sentence and the
    head of the next."""
    def fits(group):
        return len(_greedy_lines(group, max_line)) <= max_lines

    def cut(group, level):
        if fits(group):
            return [group]
        if level == len(_BOUNDARIES):
            return _balanced_word_groups(group, fits)
        units = _split_after(group, _BOUNDARIES[level])
        if len(units) == 1:
            return cut(group, level + 1)
        merged: list[list[str]] = []
        previous_whole = False
        for unit in units:
            parts = cut(unit, level + 1)
            whole = len(parts) == 1
            if whole and previous_whole and fits(merged[-1] + unit):
                merged[-1] = merged[-1] + unit
            else:
                merged.extend(parts)
            previous_whole = whole
        return merged

    return cut(words, 0)


def _ends_sentence(words: list[str], i: int) -> bool:
    return _SENTENCE_END.search(words[i]) is not None


def _ends_clause(words: list[str], i: int) -> bool:
    return _CLAUSE_END.search(words[i]) is not None or words[i] in _DASHES


_BOUNDARIES = (_ends_sentence, _ends_clause)


def _split_after(words: list[str], boundary) -> list[list[str]]:
    units, current = [], []
    for i, word in enumerate(words):
        current.append(word)
        if boundary(words, i):
            units.append(current)
            current = []
    if current:
        units.append(current)
    return units


def _balanced_word_groups(words: list[str], fits) -> list[list[str]]:
    """The fewest groups that fit, as even in length as the words allow."""
    greedy: list[list[str]] = []
    for word in words:
        if greedy and fits(greedy[-1] + [word]):
            greedy[-1].append(word)
        else:
            greedy.append([word])
    count = len(greedy)
    total = sum(len(w) + 1 for w in words)
    even: list[list[str]] = [[]]
    done = 0
    for word in words:
        if even[-1] and done >= total * len(even) / count:
            even.append([])
        even[-1].append(word)
        done += len(word) + 1
    if len(even) == count and all(fits(g) for g in even):
        return even
    return greedy


def _greedy_lines(words: list[str], max_line: int) -> list[list[str]]:
    """Lines filled word by word; a word longer than a line stands alone."""
    lines: list[list[str]] = []
    for word in words:
        if lines and len(" ".join(lines[-1] + [word])) <= max_line:
            lines[-1].append(word)
        else:
            lines.append([word])
    return lines


def _wrap(words: list[str], max_line: int) -> list[str]:
    """The cue's lines: as few as fit, with breaks placed so the longest is shortest
    (a balanced two-liner reads faster than a full line over a stub)."""
    count = len(_greedy_lines(words, max_line))
    n = len(words)

    def width(i, j):
        return len(" ".join(words[i:j]))

    def allowed(i, j):
        return j - i == 1 or width(i, j) <= max_line

    # best[k][j]: (longest line, breaks) for the first j words in k lines
    best = {(0, 0): (0, ())}
    for k in range(1, count + 1):
        for j in range(1, n + 1):
            options = [(max(best[(k - 1, i)][0], width(i, j)), best[(k - 1, i)][1] + (i,))
                       for i in range(j) if (k - 1, i) in best and allowed(i, j)]
            if options:
                best[(k, j)] = min(options)
    breaks = best[(count, n)][1][1:] + (n,)
    starts = (0,) + breaks[:-1]
    return [" ".join(words[i:j]) for i, j in zip(starts, breaks)]


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(0, int(round(seconds * 1000)))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _lines(text: str) -> str:
    """Cue text without blank lines, which would end the cue early in both formats."""
    return "\n".join(line for line in text.splitlines() if line.strip())


def to_srt(cues) -> str:
    """SubRip: numbered blocks, comma before the milliseconds."""
    blocks = []
    for cue in cues:
        text = _lines(cue.text)
        if text:
            blocks.append(f"{len(blocks) + 1}\n{_timestamp(cue.start, ',')} --> "
                          f"{_timestamp(cue.end, ',')}\n{text}\n\n")
    return "".join(blocks)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _vtt(cues) -> str:
    blocks = ["WEBVTT\n\n"]
    for start, end, text in cues:
        text = _lines(text)
        if text:
            blocks.append(f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n"
                          f"{_vtt_escape(text)}\n\n")
    return "".join(blocks)


def to_vtt(cues) -> str:
    """WebVTT: the header, then blocks with a dot before the milliseconds; `&`, `<`, `>`
    escaped so text is never read as markup."""
    return _vtt((cue.start, cue.end, cue.text) for cue in cues)


def to_vtt_chapters(chapters, end_s: float) -> str:
    """A WebVTT chapters track (players read chapters from a track of their own): one
    cue per (start_s, title), lasting until the next chapter starts, the last until
    `end_s`."""
    starts = [start for start, _title in chapters]
    ends = starts[1:] + [end_s]
    return _vtt((start, max(start, end), title)
                for (start, title), end in zip(chapters, ends))


SUBTITLE_SUFFIXES = {".srt": to_srt, ".vtt": to_vtt}
CHAPTERS_SUFFIX = ".chapters.vtt"     # a WebVTT chapters track: book.chapters.vtt


def subtitles_for(path_suffix: str, cues) -> str:
    """The subtitle file a suffix asks for; an unknown one is an `invalid_setting`."""
    suffix = path_suffix.lower()
    try:
        writer = SUBTITLE_SUFFIXES[suffix]
    except KeyError:
        raise InvalidSetting(f"cbx cannot write {path_suffix!r} subtitle files.",
                             f"End the file name with one of: "
                             f"{', '.join(SUBTITLE_SUFFIXES)}.") from None
    return writer(cues)

"""Long text into chunks the model handles well, without ever losing a word.

Chatterbox reads about one long sentence at a time well; longer inputs run into its
token cap and get cut off. `split_text` therefore splits on sentence boundaries and
packs whole sentences into chunks of at most `max_chars` characters. Those are
characters of speech (`speech_length`): a Chinese, Japanese or Korean character takes
as long to say as three Latin ones, so it counts three, and a chunk of any script
takes about the same time to say (300 is ~20 s, well inside the model's 40 s cap).
A sentence that is itself too long is split at clause punctuation, then between
words, and (only for a single "word" longer than a chunk, e.g. a URL or unspaced CJK
text) at a character.
A paralinguistic tag such as "[clear throat]" is never split (cbx/tags.py).

The first chunk is kept short (`first_chunk_chars`, whole sentences only): chunks are
generated one after another, so a short first chunk is what lets the first audio play
while the rest of a long text is still being made.

Layer 4, but pure standard library: the dashboard uses it before any model exists.
"""
from __future__ import annotations

import re
import unicodedata

from .errors import InvalidSetting, InvalidText
from .tags import TAG_PATTERN

DEFAULT_MAX_CHARS = 300
# The first chunk packs whole sentences only up to this many characters (but always
# holds one whole sentence): about one sentence, i.e. ~5-7 s of speech, so the time to
# first audio is a fraction of the whole text's even for a few sentences.
DEFAULT_FIRST_CHUNK_CHARS = 100

# Rough speaking rate used for the dashboard's "about N s of audio" hint: English
# speech runs at ~150 words/min, i.e. ~2.5 words or ~15 characters (spaces included)
# per second. Chatterbox's own pace is close to that; it is an estimate, not a promise.
CHARS_PER_SECOND = 15.0
# A Han, Hiragana, Katakana or Hangul character is about one syllable: normal-pace
# Mandarin runs at ~4.5 a second, Japanese and Korean at 5 or more, so one counts as
# three Latin characters (CJK text ~5 characters a second) wherever length means time.
CJK_CHARACTER_WEIGHT = 3
_CJK_RUNS = re.compile("[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff"
                       "\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
                       "\uff66-\uff9f\U00020000-\U0003134f]+")

# Words that end in a period without ending the sentence (compared lower-cased,
# without the final period). Titles are followed by a capitalised name, so the
# "next word is lower-case" rule below cannot catch them; the rest are listed
# because they are so often followed by a number or a name.
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "ft", "rev", "hon",
    "capt", "col", "gen", "lt", "sgt", "cpl", "gov", "sen", "rep", "pres", "supt",
    "e.g", "i.e", "cf", "vs", "etc", "approx", "no", "nos", "fig", "figs", "vol",
    "vols", "pp", "p", "ch", "sec", "dept", "est", "inc", "ltd", "co", "corp", "jan",
    "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    "a.m", "p.m", "u.s", "u.k", "u.s.a", "ph.d", "b.a", "m.a", "b.sc", "m.sc",
})

_CJK_TERMINATORS = "。！？"
# A sentence ends at . ! ? … (any run of them), optionally followed by closing quotes
# or brackets, when whitespace or the end of the text follows. CJK terminators need no
# following space (CJK text is written without spaces).
_SENTENCE_END = re.compile(
    r"(?:[.!?…]+[\"'”’»)\]]*(?=\s|$))|(?:[。！？]+[”’」』）》\"']*)"
)
# Clause boundaries for over-long sentences: , ; : followed by a space, a dash, or CJK
# commas/semicolons/colons. The cut is right after the mark; the space that follows
# (if any) goes with the next clause, so re-joining restores the text exactly.
_CLAUSE_END = re.compile(r"[,;:](?=\s)|[—–]|[，、；：]")
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")
_SPACES = re.compile(r"\s+")
# A "word" for splitting: a run of non-space characters and whole tags, so a tag with
# a space in it ("[clear throat]") is never cut in two (Turbo speaks it as one token).
_WORD = re.compile(rf"(?:{TAG_PATTERN.pattern}|\S)+")
_NEXT_CHARACTER = re.compile(r"\s*(\S)")

# Pause markup: "[pause 1.5s]", "[pause 800ms]", or SSML's <break time="1.5s"/>, anywhere
# in the text: silence of that length and a chunk boundary there, never read aloud.
# Anything that starts like one ("[pause", "<break") must be one exactly, or the text is
# refused: a misspelt pause read aloud would ruin a take.
MAX_PAUSE_SECONDS = 10.0
_PAUSE = re.compile(r"\[\s*pause\s+(?P<a>\d+(?:\.\d+)?)\s*(?P<au>ms|s)\s*\]|"
                    r"<\s*break\s+time\s*=\s*(?P<q>[\"'])(?P<b>\d+(?:\.\d+)?)\s*(?P<bu>ms|s)"
                    r"(?P=q)\s*/?\s*>", re.IGNORECASE)
_PAUSE_LIKE = re.compile(r"\[\s*pause\b[^\]\n]*\]?|<\s*break\b[^>\n]*>?", re.IGNORECASE)
_PAUSE_FIX = ('Write a pause as [pause 1.5s], [pause 800ms] or <break time="1.5s"/>, '
              f"from 0 to {MAX_PAUSE_SECONDS:g} s.")


def normalize_text(text: str) -> str:
    """Collapse every run of whitespace to one space, keeping paragraph breaks.

    A paragraph break (a blank line, with or without spaces on it) becomes exactly
    "\\n\\n"; single newlines and tabs are just spaces. Unicode is NFC-normalised so
    that "é" typed two ways counts and splits the same.
    """
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    paragraphs = (_SPACES.sub(" ", p).strip() for p in _PARAGRAPH_BREAK.split(text))
    return "\n\n".join(p for p in paragraphs if p)


def validate_text(text) -> str:
    """Return the normalised text, or raise InvalidText if there is nothing to say."""
    if not isinstance(text, str):
        raise InvalidText(
            f"The text must be a string, not {type(text).__name__}.",
            "Pass the words to speak as a str (decode bytes first, e.g. data.decode('utf-8')).",
        )
    normalized = normalize_text(text)
    if not normalized:
        raise InvalidText(
            "The text is empty." if not text else "The text contains only whitespace.",
            "Type the words to speak in the text box (or pass a non-empty string to speak()).",
        )
    words = without_pauses(normalized)       # a malformed pause tag is refused here
    if words != normalized and not words.strip():
        return normalized                    # only pauses: silence is what was asked
    if not any(ch.isalnum() for ch in words):
        # checked here, before a model is loaded for nothing
        raise InvalidText(
            "The text has no letters or digits, only symbols, punctuation or emoji, so "
            "there is nothing to speak.",
            "Type the words to speak; symbols and emoji on their own are not read aloud.")
    return normalized


def pause_chunk(seconds: float) -> str:
    """The chunk that stands for a pause in split_text's output: "[pause 1.5s]"."""
    return f"[pause {seconds:g}s]"


def pause_seconds(chunk: str) -> float | None:
    """The silence a chunk of split_text's output stands for; None for words."""
    match = _PAUSE.fullmatch(chunk.strip())
    return None if match is None else _pause_length(match)


def _pause_length(match: re.Match) -> float:
    value, unit = (match["a"], match["au"]) if match["a"] else (match["b"], match["bu"])
    return float(value) / (1000.0 if unit.lower() == "ms" else 1.0)


def split_pauses(text: str) -> list:
    """`text` as its stretches of words (str) and pauses (float seconds), in order;
    `invalid_text` naming a malformed or too long pause tag and where it is."""
    parts, end = [], 0
    for found in _PAUSE_LIKE.finditer(text):
        tag = found.group(0)
        match = _PAUSE.fullmatch(tag)
        where = f"at character {found.start() + 1}"
        if match is None:
            raise InvalidText(f"The pause tag {tag!r} {where} is not one cbx reads.",
                              _PAUSE_FIX)
        seconds = _pause_length(match)
        if seconds > MAX_PAUSE_SECONDS:
            raise InvalidText(f"The pause {tag!r} {where} is longer than "
                              f"{MAX_PAUSE_SECONDS:g} s.", _PAUSE_FIX)
        parts += [text[end:found.start()], seconds]
        end = found.end()
    parts.append(text[end:])
    return [part for part in parts if not isinstance(part, str) or part.strip()]


def without_pauses(text: str) -> str:
    """The words of `text`, its pause tags removed (what the model is given)."""
    return " ".join(part for part in split_pauses(text) if isinstance(part, str))


def speech_length(text: str) -> int:
    """`text`'s length in characters of speech: a CJK character counts
    CJK_CHARACTER_WEIGHT, since it takes that much longer to say than a Latin one."""
    cjk = len(text) - len(_CJK_RUNS.sub("", text))
    return len(text) + (CJK_CHARACTER_WEIGHT - 1) * cjk


def estimate_seconds(text: str, rate: float = 1.0) -> float:
    """Rough speech duration of `text` in seconds at speech rate `rate`: the one
    estimate behind the dashboard's hint, the babble guard and the token budget
    (CHARS_PER_SECOND characters of speech a second, see `speech_length`)."""
    parts = split_pauses(text)
    words = " ".join(part for part in parts if isinstance(part, str))
    pauses = sum(part for part in parts if not isinstance(part, str))
    return (speech_length(normalize_text(words)) / CHARS_PER_SECOND + pauses) / rate


def split_text(text: str, max_chars: int = DEFAULT_MAX_CHARS, *,
               first_chunk_chars: int | None = DEFAULT_FIRST_CHUNK_CHARS) -> list[str]:
    """Split `text` into chunks of at most `max_chars` characters of speech
    (`speech_length`: a CJK character counts 3), losing nothing.

    Sentences are kept whole and packed together while they fit; a paragraph break
    always ends a chunk. The first chunk packs whole sentences only up to
    `first_chunk_chars` characters, yet always holds at least the first sentence (or,
    for a first sentence longer than `max_chars`, its first piece); None, or a value
    of at least `max_chars`, packs the first chunk like the others. Whitespace is
    normalised (see `normalize_text`), so
    `" ".join(chunks).split() == text.split()` holds whenever no single word is longer
    than `max_chars` (of speech); such a word is cut into pieces, and then the characters (minus
    whitespace) still match exactly. Empty or whitespace-only text gives [].

    A pause tag ends a chunk and becomes a chunk of its own, `pause_chunk(seconds)`
    (see `pause_seconds`); a malformed one is `invalid_text`.
    """
    max_chars = _check_size("max_chars", max_chars)
    first_limit = None
    if first_chunk_chars is not None:
        first_limit = _check_size("first_chunk_chars", first_chunk_chars)
        if first_limit >= max_chars:
            first_limit = None
    chunks: list[str] = []
    for part in split_pauses(text):
        if isinstance(part, str):
            spoken = any(pause_seconds(chunk) is None for chunk in chunks)
            chunks += _split_stretch(part, max_chars, None if spoken else first_limit)
        else:
            chunks.append(pause_chunk(part))
    return chunks


def _split_stretch(text: str, max_chars: int, first_limit: int | None) -> list[str]:
    """split_text for a stretch of text without pauses."""
    chunks: list[str] = []
    for paragraph in normalize_text(text).split("\n\n"):
        if not paragraph:
            continue
        pieces: list[tuple[str, str]] = []   # (separator before the piece, piece)
        for sep, sentence in _split_sentences(paragraph):
            if speech_length(sentence) <= max_chars:
                pieces.append((sep, sentence))
            else:
                sub = _split_long(sentence, max_chars)
                pieces.append((sep, sub[0][1]))
                pieces.extend(sub[1:])
        if not chunks and first_limit is not None:
            first, used = _take_first(pieces, first_limit)
            chunks.append(first)
            pieces = pieces[used:]
        chunks.extend(_pack(pieces, max_chars))
    return chunks


def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        solution = (f"Use a chunk size such as {DEFAULT_MAX_CHARS} characters."
                    if name == "max_chars" else
                    f"Use a first-chunk size such as {DEFAULT_FIRST_CHUNK_CHARS} characters, "
                    "or None to pack the first chunk like the others.")
        raise InvalidSetting(f"{name} must be a positive whole number, got {value!r}.",
                             solution)
    return value


def _take_first(pieces: list[tuple[str, str]], limit: int) -> tuple[str, int]:
    """The first chunk: the first piece, plus following pieces while within `limit`.

    Returns the chunk and how many pieces it used.
    """
    first = pieces[0][1]
    size = speech_length(first)
    used = 1
    while used < len(pieces):
        sep, piece = pieces[used]
        grown = size + len(sep) + speech_length(piece)
        if grown > limit:
            break
        first += sep + piece
        size = grown
        used += 1
    return first, used


def _split_sentences(paragraph: str) -> list[tuple[str, str]]:
    """Sentences of one paragraph, each with the whitespace that preceded it."""
    out: list[tuple[str, str]] = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        end = match.end()
        if end >= len(paragraph) or not _is_boundary(paragraph, match):
            continue
        _append_segment(out, paragraph[start:end])
        start = end
    _append_segment(out, paragraph[start:])
    return out


def _append_segment(out: list[tuple[str, str]], segment: str) -> None:
    stripped = segment.lstrip()
    if stripped:
        out.append((segment[: len(segment) - len(stripped)], stripped.rstrip()))


def _is_boundary(paragraph: str, match: re.Match) -> bool:
    """Decide whether a terminator really ends the sentence."""
    mark = match.group()
    if mark[0] in _CJK_TERMINATORS:
        return True
    following = _NEXT_CHARACTER.match(paragraph, match.end())
    if following and following.group(1).islower():
        # "e.g. this", "etc. and so on", "... and then": a sentence starts with a
        # capital (or a digit / a caseless script), never with a lower-case letter.
        return False
    if mark.startswith(".") and not mark.startswith(".."):
        word = _word_before(paragraph, match.start()).lstrip("\"'“‘«([").lower()
        if word in ABBREVIATIONS:
            return False
        if len(word) == 1 and word.isalpha():
            return False   # an initial: "J. R. R. Tolkien"
    return True


def _word_before(text: str, end: int) -> str:
    """The whitespace-delimited word that ends at (or before spaces ending at) `end`.

    Walks back from `end` only as far as that word: slicing the whole text before every
    sentence end made splitting quadratic (12 s for a million characters)."""
    stop = end
    while stop > 0 and text[stop - 1].isspace():
        stop -= 1
    start = stop
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return text[start:stop]


def _split_long(sentence: str, max_chars: int) -> list[tuple[str, str]]:
    """Break one over-long sentence into pieces of at most max_chars characters."""
    clauses: list[tuple[str, str]] = []
    start = 0
    for match in _CLAUSE_END.finditer(sentence):
        end = match.end()
        if end < len(sentence):
            _append_segment(clauses, sentence[start:end])
            start = end
    _append_segment(clauses, sentence[start:])
    pieces: list[tuple[str, str]] = []
    for sep, clause in clauses:
        if speech_length(clause) <= max_chars:
            pieces.append((sep, clause))
            continue
        words = _split_words(clause, max_chars)
        pieces.append((sep, words[0][1]))
        pieces.extend(words[1:])
    return _pack_pieces(pieces, max_chars)


def _split_words(clause: str, max_chars: int) -> list[tuple[str, str]]:
    pieces: list[tuple[str, str]] = []
    for match in _WORD.finditer(clause):
        word = match.group()
        sep = " " if match.start() else ""      # normalised text: single spaces
        if speech_length(word) <= max_chars:
            pieces.append((sep, word))
        else:
            parts = _hard_split(word, max_chars)
            pieces.append((sep, parts[0]))
            pieces.extend(("", p) for p in parts[1:])
    return _pack_pieces(pieces, max_chars)


def _hard_split(word: str, max_chars: int) -> list[str]:
    """Cut a word whose speech length is over max_chars, never separating a combining
    mark from its base and never cutting a tag (one longer than max_chars makes a
    longer piece)."""
    tags = [m.span() for m in TAG_PATTERN.finditer(word)]
    next_tag = 0                  # cuts only move forward, so one pass over the tags
    parts = []
    start = 0
    while True:
        cut = _fitting_end(word, start, max_chars)
        if cut >= len(word):
            break
        while cut > start + 1 and unicodedata.combining(word[cut]):
            cut -= 1
        while next_tag < len(tags) and tags[next_tag][1] <= cut:
            next_tag += 1
        if next_tag < len(tags) and tags[next_tag][0] < cut:
            tag_start, tag_end = tags[next_tag]
            cut = tag_start if tag_start > start else tag_end
        if cut >= len(word):
            break
        parts.append(word[start:cut])
        start = cut               # an index, not a copy of the rest: linear in the word
    parts.append(word[start:])
    return parts


def _fitting_end(word: str, start: int, max_chars: int) -> int:
    """The end of the longest `word[start:end]` (at least one character) whose speech
    length is at most `max_chars`: a binary search, as that length grows with `end`."""
    low, high = start + 1, min(len(word), start + max_chars)
    while low < high:
        middle = (low + high + 1) // 2
        if speech_length(word[start:middle]) <= max_chars:
            low = middle
        else:
            high = middle - 1
    return low


def _pack_pieces(pieces: list[tuple[str, str]], max_chars: int) -> list[tuple[str, str]]:
    """Greedily merge consecutive pieces while they fit; keep each group's separator."""
    packed: list[tuple[str, str]] = []
    size = 0                                  # speech length of packed[-1]
    for sep, piece in pieces:
        grown = size + len(sep) + speech_length(piece)
        if packed and grown <= max_chars:
            packed[-1] = (packed[-1][0], packed[-1][1] + sep + piece)
            size = grown
        else:
            packed.append((sep, piece))
            size = speech_length(piece)
    return packed


def _pack(pieces: list[tuple[str, str]], max_chars: int) -> list[str]:
    return [piece for _, piece in _pack_pieces(pieces, max_chars)]

"""Long-text splitting: nothing lost, chunks within the limit, sentences kept whole."""
from __future__ import annotations

import random
import re

import pytest

from cbx.errors import InvalidSetting, InvalidText
from cbx.engine import decode
from cbx.text import (CHARS_PER_SECOND, CJK_CHARACTER_WEIGHT, DEFAULT_FIRST_CHUNK_CHARS,
                      DEFAULT_MAX_CHARS, estimate_seconds, normalize_text, speech_length,
                      split_text, validate_text)


def _chars(text: str) -> str:
    return "".join(text.split())


def assert_lossless(text: str, chunks: list[str], max_chars: int) -> None:
    assert chunks, "non-empty text must give at least one chunk"
    # in characters of speech (a CJK one counts 3), but a cut keeps at least one character
    assert all(0 < len(c) and (speech_length(c) <= max_chars or len(c) == 1)
               for c in chunks), [speech_length(c) for c in chunks]
    assert all(c == c.strip() and "\n" not in c for c in chunks)
    assert _chars("".join(chunks)) == _chars(normalize_text(text))


def _random_sentence(rng: random.Random) -> str:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
             "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa"]
    n = rng.randint(3, 40)
    body = " ".join(rng.choice(words) for _ in range(n))
    if rng.random() < 0.3:
        body = body.replace(" ", ", ", 1)
    return body[0].upper() + body[1:] + rng.choice([".", "!", "?", "…"])


def test_20000_character_text_is_split_without_loss():
    rng = random.Random(7)
    sentences = []
    while sum(len(s) + 1 for s in sentences) < 20_000:
        sentences.append(_random_sentence(rng))
    text = " ".join(sentences)
    assert len(text) >= 20_000
    for first_chunk_chars in (DEFAULT_FIRST_CHUNK_CHARS, None):
        chunks = split_text(text, 300, first_chunk_chars=first_chunk_chars)
        assert_lossless(text, chunks, 300)
        assert " ".join(chunks).split() == text.split()          # word for word, in order
        assert len(chunks) >= 20_000 // 300
        # Sentences are short enough here to stay whole, so every chunk ends a sentence
        # and starts one.
        for chunk in chunks:
            assert chunk[-1] in ".!?…", chunk[-40:]
            assert chunk[0].isupper(), chunk[:40]
        # Packing is greedy: the next chunk's first sentence would not have fitted
        # (in the first chunk's own limit, when it has one).
        for i, (a, b) in enumerate(zip(chunks, chunks[1:])):
            first = _first_sentence(b)
            limit = first_chunk_chars if i == 0 and first_chunk_chars else 300
            assert len(a) + 1 + len(first) > limit
    short = split_text(text, 300)
    # The short first chunk only moves sentences: the rest packs as if it began the text.
    assert short[1:] == split_text(text[len(short[0]) + 1:], 300, first_chunk_chars=None)
    assert len(short[0]) <= DEFAULT_FIRST_CHUNK_CHARS or \
        short[0] == _first_sentence(text), "over the limit only with a single sentence"


def _first_sentence(text: str) -> str:
    return re.match(r".*?[.!?…](?=\s|$)", text).group()


FIVE_SENTENCES = (
    "The morning train was late again, so Maria walked along the river instead. "
    "She noticed the fog lifting slowly over the old stone bridge. "
    "A fisherman waved at her and pointed to the herons standing near the bank. "
    "By the time she reached the office, the sun was shining brightly on the square. "
    "It turned out to be the best part of her whole day.")


def test_short_first_chunk_by_default_for_a_five_sentence_text():
    # Today's packing would make this one or two chunks, the first holding most of the
    # text; the short first chunk is one sentence, so first audio comes after ~1/5.
    assert len(split_text(FIVE_SENTENCES, first_chunk_chars=None)[0]) > 300 // 2
    chunks = split_text(FIVE_SENTENCES)
    assert chunks[0] == "The morning train was late again, so Maria walked along the river instead."
    assert len(chunks[0]) <= DEFAULT_FIRST_CHUNK_CHARS < DEFAULT_MAX_CHARS
    assert " ".join(chunks) == FIVE_SENTENCES
    assert all(len(c) <= DEFAULT_MAX_CHARS for c in chunks)
    assert chunks[1:] == split_text(FIVE_SENTENCES[len(chunks[0]) + 1:], first_chunk_chars=None)


def test_first_chunk_packs_whole_sentences_up_to_its_limit():
    text = "Hi there. Yes. No way, not today. Fine then. Bye."
    assert split_text(text, 300, first_chunk_chars=20) == ["Hi there. Yes.",
                                                           "No way, not today. Fine then. Bye."]
    assert split_text(text, 300, first_chunk_chars=14) == ["Hi there. Yes.",
                                                           "No way, not today. Fine then. Bye."]
    assert split_text(text, 300, first_chunk_chars=13) == ["Hi there.",
                                                           "Yes. No way, not today. Fine then. Bye."]
    # A first sentence longer than the limit (but within max_chars) stays whole, alone.
    assert split_text(text, 300, first_chunk_chars=3) == ["Hi there.",
                                                          "Yes. No way, not today. Fine then. Bye."]
    # The rest still respects max_chars.
    assert split_text(text, 20, first_chunk_chars=5) == ["Hi there.", "Yes.",
                                                         "No way, not today.",
                                                         "Fine then. Bye."]


def test_first_chunk_limit_of_none_or_at_least_max_is_todays_packing():
    text = "Hi there. Yes. No way, not today. Fine then. Bye."
    today = ["Hi there. Yes. No way, not today.", "Fine then. Bye."]
    assert split_text(text, 35, first_chunk_chars=None) == today
    assert split_text(text, 35, first_chunk_chars=35) == today
    assert split_text(text, 35, first_chunk_chars=1000) == today
    assert split_text(text, 35, first_chunk_chars=32) == ["Hi there. Yes.",
                                                          "No way, not today. Fine then. Bye."]


def test_first_sentence_longer_than_max_is_split_as_before():
    long_first = ("This opening sentence runs on, and on, and then on some more, well past "
                  "any sensible chunk size. Then a short one. And the end.")
    for max_chars in (30, 50, 70):
        chunks = split_text(long_first, max_chars, first_chunk_chars=10)
        assert chunks == split_text(long_first, max_chars, first_chunk_chars=None)
        assert_lossless(long_first, chunks, max_chars)
        # the first chunk is the first piece of the long sentence, cut at a clause
        assert chunks[0].startswith("This opening sentence runs on,")
        assert chunks[0].endswith(",") and len(chunks[0]) <= max_chars


def test_first_chunk_only_affects_the_first_paragraph():
    text = ("Short start.\n\nOne two three. Four five six. Seven eight nine.\n\n"
            "Ten eleven twelve. Thirteen fourteen.")
    assert split_text(text, 300, first_chunk_chars=5) == [
        "Short start.", "One two three. Four five six. Seven eight nine.",
        "Ten eleven twelve. Thirteen fourteen."]
    text = "One two three. Four five six. Seven eight nine.\n\nTen eleven. Twelve."
    assert split_text(text, 300, first_chunk_chars=20) == [
        "One two three.", "Four five six. Seven eight nine.", "Ten eleven. Twelve."]


@pytest.mark.parametrize("bad", [0, -5, 2.5, "100", True])
def test_bad_first_chunk_chars(bad):
    with pytest.raises(InvalidSetting) as info:
        split_text("Hello.", 300, first_chunk_chars=bad)
    assert "first_chunk_chars" in info.value.message and info.value.solution


def test_sentences_are_packed_and_never_broken_when_they_fit():
    text = "One two three. Four five six! Seven eight nine? Ten."
    assert split_text(text, 1000) == [text]
    assert split_text(text, 30) == ["One two three. Four five six!", "Seven eight nine? Ten."]
    # "Seven eight nine?" (17) is too long for 15: it is cut between words, and the
    # rest packs with the next sentence.
    assert split_text(text, 15) == ["One two three.", "Four five six!", "Seven eight", "nine? Ten."]


def test_exact_fit_boundary():
    text = "Aaaa. Bbbb."
    assert split_text(text, len(text)) == [text]
    assert split_text(text, len(text) - 1) == ["Aaaa.", "Bbbb."]


@pytest.mark.parametrize("text", [
    "Mr. Smith and Mrs. Jones met Dr. Who.",
    "Use a tool, e.g. a hammer, i.e. something heavy.",
    "Pi is about 3.14159 and e is 2.71828 here.",
    "J. R. R. Tolkien wrote it.",
    "It was 5 p.m. in the U.S. that day.",
    "Prof. Brown vs. St. John went to Mt. Everest.",
    "Wait... and then it happened.",
])
def test_abbreviations_decimals_and_initials_do_not_end_a_sentence(text):
    # With room for one sentence only, a false boundary would show up as two chunks.
    assert split_text(text + " Next sentence here.", len(text)) == [text, "Next sentence here."]


def test_sentence_end_after_quote_and_ellipsis():
    text = 'He said "Stop!" Then he left. Really… Yes.'
    assert split_text(text, 20) == ['He said "Stop!"', "Then he left.", "Really… Yes."]


def test_long_sentence_falls_back_to_clauses_then_words():
    clause_a = "this first clause is long enough to matter"
    clause_b = "the second one is as long as the first"
    text = f"{clause_a.capitalize()}, {clause_b}; and a third — short."
    chunks = split_text(text, 50)
    assert_lossless(text, chunks, 50)
    assert chunks[0] == clause_a.capitalize() + ","
    assert chunks[1] == clause_b + ";"
    assert chunks[2] == "and a third — short."

    words = " ".join(f"word{i}" for i in range(100)) + "."
    chunks = split_text(words, 40)
    assert_lossless(words, chunks, 40)
    assert " ".join(chunks) == words          # cut only between words
    assert all(len(a) + 1 + len(b.split()[0]) > 40 for a, b in zip(chunks, chunks[1:]))


def test_word_longer_than_max_is_hard_split():
    url = "https://example.com/" + "x" * 500
    text = f"See {url} now."
    chunks = split_text(text, 100)
    assert_lossless(text, chunks, 100)
    assert max(len(c) for c in chunks) == 100
    assert chunks[0] == "See"     # the word boundary comes before the hard split
    assert split_text("abcdefghij", 3) == ["abc", "def", "ghi", "j"]


def test_paragraph_breaks_end_a_chunk_and_whitespace_is_normalised():
    text = "First line\ncontinues\there.\n\n  \n Second   paragraph.\r\n\r\nThird."
    assert normalize_text(text) == "First line continues here.\n\nSecond paragraph.\n\nThird."
    assert split_text(text, 300) == ["First line continues here.", "Second paragraph.", "Third."]


def test_unicode_and_cjk():
    text = "Ça va très bien. Überall grüße! 你好。世界！今天天气很好吗？ Привет, мир. Конец."
    chunks = split_text(text, 30)
    assert_lossless(text, chunks, 30)
    # CJK terminators are boundaries without a following space; a CJK character
    # counts 3 ("今天天气很好吗？" is 22 characters of speech).
    assert chunks == ["Ça va très bien.", "Überall grüße! 你好。世界！", "今天天气很好吗？",
                      "Привет, мир. Конец."]
    # Combining marks (NFD input) are normalised, and a hard split never orphans one.
    decomposed = "e\u0301" * 30
    chunks = split_text(decomposed, 7)
    assert_lossless(decomposed, chunks, 7)
    assert "".join(chunks) == "é" * 30
    long_cjk = "这是一个没有标点的很长的句子" * 10
    chunks = split_text(long_cjk, 25)
    assert_lossless(long_cjk, chunks, 25)
    assert "".join(chunks) == long_cjk


def test_cjk_clauses_used_before_hard_split():
    text = "第一部分很长很长，第二部分也很长很长，第三部分。"
    chunks = split_text(text, 30)      # the clauses are 25, 28 and 13 characters of speech
    assert chunks == ["第一部分很长很长，", "第二部分也很长很长，", "第三部分。"]


def test_empty_and_whitespace_text():
    assert split_text("") == []
    assert split_text(" \n\t \n\n ") == []
    with pytest.raises(InvalidText) as info:
        validate_text("   \n\t ")
    assert info.value.code == "invalid_text" and "whitespace" in info.value.message
    assert info.value.solution
    with pytest.raises(InvalidText) as info:
        validate_text("")
    assert "empty" in info.value.message
    with pytest.raises(InvalidText):
        validate_text(b"bytes")
    assert validate_text("  Hello\n world ") == "Hello world"


@pytest.mark.parametrize("bad", [0, -5, 2.5, "300", True, None])
def test_bad_max_chars(bad):
    with pytest.raises(InvalidSetting):
        split_text("Hello.", bad)


def test_estimate_seconds():
    assert estimate_seconds("") == 0.0
    text = "x" * 150
    assert estimate_seconds(text) == pytest.approx(150 / CHARS_PER_SECOND)
    assert 8 <= estimate_seconds(text) <= 12
    assert estimate_seconds("a  \n\n  b") == pytest.approx(len("a\n\nb") / CHARS_PER_SECOND)
    assert estimate_seconds(text, rate=1.5) == pytest.approx(150 / CHARS_PER_SECOND / 1.5)


@pytest.mark.parametrize("cjk", ["中文普通话的语速", "ひらがなカタカナ", "한국어 문장입니다"])
def test_cjk_characters_take_longer_to_say(cjk):
    """Normal-pace Mandarin is ~4.5 characters a second, not 15 (issue 20, item 13)."""
    han = sum(not ch.isspace() for ch in cjk)
    assert speech_length(cjk) == len(cjk) + (CJK_CHARACTER_WEIGHT - 1) * han
    seconds = estimate_seconds(cjk * 10)
    assert 10 * han / 6 < seconds < 10 * han / 4      # 4-6 characters a second


def test_a_long_cjk_paragraph_is_cut_into_chunks_its_token_budget_holds():
    """A 289-character Chinese paragraph took ~64 s to say as one 300-character chunk,
    past the 40 s cap of any token budget: CJK chunks are now a third as long, and each
    chunk's budget holds its speech at Mandarin's pace (4.5 characters a second)."""
    paragraph = ("这是一个关于长篇中文文本的测试句子，它会被切成好几块，" * 11)[:288] + "。"
    assert len(paragraph) == 289
    chunks = split_text(paragraph)
    assert "".join(chunks) == paragraph and len(chunks) >= 3
    for chunk in chunks:
        speech = len(chunk) / 4.5
        assert speech < 0.6 * decode.UPSTREAM_MAX_TOKENS / decode.TOKENS_PER_SECOND
        assert decode.token_budget(chunk) >= 1.5 * speech * decode.TOKENS_PER_SECOND
    latin = "x" * 100   # Latin text keeps today's budget: about 4x 25 tokens/s at 15 chars/s
    assert decode.token_budget(latin) == pytest.approx(4 * 1.7 * 100 + 50, rel=0.03)


def test_random_texts_fuzz():
    rng = random.Random(1)
    alphabet = "abcdefghij ,.;:!?…—\n\t。！，xyzXYZ0123456789é漢"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 400)))
        max_chars = rng.randint(1, 80)
        first_chunk_chars = rng.choice([None, rng.randint(1, 100)])
        chunks = split_text(text, max_chars, first_chunk_chars=first_chunk_chars)
        if not normalize_text(text):
            assert chunks == []
            continue
        assert_lossless(text, chunks, max_chars)
        # The short first chunk is a prefix of today's first chunk: it only moves
        # whole pieces to later chunks, it never cuts, drops or reorders anything.
        today = split_text(text, max_chars, first_chunk_chars=None)
        assert today[0].startswith(chunks[0])
        assert len(chunks) >= len(today)

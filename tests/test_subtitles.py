"""Subtitles timed from the real audio (issue 25): cue timing checked against espeak-ng
speech whose true start and end are known, the files read back by independent parsers
(`srt`, `webvtt-py`), and the cue text rules (lines, tags, nothing lost)."""
from __future__ import annotations

import html
import io

import numpy as np
import pytest
import srt
import webvtt

from cbx import audio, subtitles
from cbx.dev import clips
from cbx.errors import InvalidSetting
from cbx.subtitles import Cue

SR = 24_000
AUDIBLE = 1e-3           # truth: a sample louder than -60 dBFS is sound
PAUSE_S = 0.4            # digital silence the "engine" puts between chunks

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Chatterbox clones a voice from a few seconds of clean speech.",
    "Please read this sentence slowly and clearly, one word at a time.",
    "Subtitles should appear while the words are spoken, not before.",
]
# What the engine would be given: tags and pause markup that are not spoken as words.
CHUNK_TEXTS = [
    "The quick brown fox [laugh] jumps over the lazy dog.",
    "Chatterbox clones a voice from a few seconds of clean speech. [pause 0.5s]",
    "Please read this sentence slowly and clearly, one word at a time.",
    'Subtitles should appear <break time="800ms"/> while the words are spoken, '
    "not before. [chuckle]",
]
LONG_SENTENCES = [
    "A long chunk holds several sentences, and each one gets a cue of its own.",
    "Its speech time is shared out between the cues by their characters.",
    "Short ones get less time on the screen.",
    "Longer sentences, with more letters to read, stay on the screen for longer.",
    "The last cue ends when the speech of the chunk ends.",
]


def speech_extent(wav) -> tuple[float, float]:
    """Seconds of the first and last audible sample: the truth the detector aims at."""
    audible = np.flatnonzero(np.abs(wav) > AUDIBLE)
    return audible[0] / SR, (audible[-1] + 1) / SR


@pytest.fixture(scope="module")
def spoken():
    """espeak-ng clips of each sentence (skipped where espeak-ng is missing)."""
    if not clips.espeak_available():
        pytest.skip("espeak-ng is not installed")
    return {text: clips.espeak_speech(text, sr=SR) for text in SENTENCES + LONG_SENTENCES}


def join(parts, pause_s=PAUSE_S):
    """A take as the engine joins it: chunks with silence between, and where each sits."""
    gap = np.zeros(int(pause_s * SR), dtype=np.float32)
    wav, spans, at = [], [], 0
    for part in parts:
        wav += [part, gap]
        spans.append((at / SR, (at + len(part)) / SR))
        at += len(part) + len(gap)
    return np.concatenate(wav), spans


@pytest.fixture(scope="module")
def take(spoken):
    """Four chunks, one sentence each: (wav, pieces, true speech extent of each chunk)."""
    wav, spans = join([spoken[s] for s in SENTENCES])
    pieces = [(text, start, end) for text, (start, end) in zip(CHUNK_TEXTS, spans)]
    truth = []
    for sentence, (start, _end) in zip(SENTENCES, spans):
        first, last = speech_extent(spoken[sentence])
        truth.append((start + first, start + last))
    return wav, pieces, truth


def vtt_seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def check_cues(cues, max_line=42, max_lines=2):
    """The rules every cue list keeps: forward in time, no overlap, lines that fit."""
    for cue in cues:
        assert cue.end > cue.start >= 0
        lines = cue.text.split("\n")
        assert 1 <= len(lines) <= max_lines
        for line in lines:
            assert line == line.strip() and line
            assert len(line) <= max_line or " " not in line, line
    for before, after in zip(cues, cues[1:]):
        assert after.start >= before.end


def words_of(texts) -> str:
    return " ".join(" ".join(t.split()) for t in texts)


# --- speech_bounds on espeak-ng truth ------------------------------------------------

@pytest.mark.parametrize("floor_dbfs", [None, -70.0])
def test_speech_bounds_find_padded_speech(spoken, floor_dbfs):
    clip = spoken[SENTENCES[1]]
    lead, tail = 0.7, 0.5
    wav = np.concatenate([np.zeros(int(lead * SR)), clip, np.zeros(int(tail * SR))])
    if floor_dbfs is not None:     # the model's near-silence: a faint hiss, not digital 0
        rng = np.random.default_rng(0)
        wav = wav + 10 ** (floor_dbfs / 20) * rng.standard_normal(len(wav))
    first, last = speech_extent(clip)
    start, end = subtitles.speech_bounds(wav.astype(np.float32), SR, 0.0, len(wav) / SR)
    assert start == pytest.approx(lead + first, abs=0.03)
    assert lead + last - 0.03 <= end <= lead + last + subtitles.HANGOVER_S + 0.03


def test_speech_bounds_stay_inside_the_span(spoken):
    clip = spoken[SENTENCES[0]]
    first, last = speech_extent(clip)
    inner = (first + 0.5, last - 0.5)          # a span that starts and ends mid-speech
    start, end = subtitles.speech_bounds(clip, SR, *inner)
    assert inner[0] <= start < end <= inner[1]
    assert start == pytest.approx(inner[0], abs=0.05)
    assert end == pytest.approx(inner[1], abs=0.05)


def test_speech_bounds_of_a_span_without_speech():
    quiet = np.random.default_rng(1).standard_normal(SR).astype(np.float32) * 1e-4
    assert subtitles.speech_bounds(np.zeros(SR, np.float32), SR, 0.2, 0.8) == (0.2, 0.2)
    assert subtitles.speech_bounds(quiet, SR, 0.2, 0.8) == (0.2, 0.2)
    assert subtitles.speech_bounds(quiet, SR, 0.5, 0.5) == (0.5, 0.5)


# --- a take of several chunks ----------------------------------------------------------

def test_cues_of_a_take_parse_and_follow_the_speech(take):
    wav, pieces, truth = take
    cues = subtitles.make_cues(wav, SR, pieces)
    check_cues(cues)
    assert words_of(c.text for c in cues) == words_of(SENTENCES)
    assert len(cues) == len(SENTENCES)         # each sentence fits one cue
    for cue, (_text, span_start, span_end), (true_start, true_end) in zip(cues, pieces, truth):
        assert span_start <= cue.start and cue.end <= span_end
        assert cue.start == pytest.approx(true_start, abs=0.03 + subtitles.LEAD_S)
        assert cue.end == pytest.approx(true_end, abs=0.03 + subtitles.HANGOVER_S)
    assert abs(cues[-1].end - truth[-1][1]) < 0.3

    parsed_srt = list(srt.parse(subtitles.subtitles_for(".srt", cues)))
    parsed_vtt = webvtt.from_buffer(io.StringIO(subtitles.subtitles_for(".VTT", cues)))
    assert [s.index for s in parsed_srt] == list(range(1, len(cues) + 1))
    srt_times = [(s.start.total_seconds(), s.end.total_seconds()) for s in parsed_srt]
    vtt_times = [(vtt_seconds(c.start), vtt_seconds(c.end)) for c in parsed_vtt]
    for times in (srt_times, vtt_times):
        assert times == [pytest.approx((c.start, c.end), abs=0.0006) for c in cues]
        flat = [t for pair in times for t in pair]
        assert flat == sorted(flat)
    assert words_of(s.content for s in parsed_srt) == words_of(SENTENCES)
    assert words_of(html.unescape(c.text) for c in parsed_vtt) == words_of(SENTENCES)
    for s in parsed_srt:
        assert len(s.content.split("\n")) <= 2
        assert all(len(line) <= 42 for line in s.content.split("\n"))


def test_a_long_chunk_shares_its_time_by_characters(spoken):
    wav, spans = join([spoken[s] for s in LONG_SENTENCES], pause_s=0.0)
    chunk = " ".join(LONG_SENTENCES)
    assert len(chunk) > 300
    cues = subtitles.make_cues(wav, SR, [(chunk, 0.0, len(wav) / SR)])
    check_cues(cues)
    assert [c.text.replace("\n", " ") for c in cues] == LONG_SENTENCES

    letters = [len(c.text.replace(" ", "").replace("\n", "")) for c in cues]
    durations = [c.end - c.start for c in cues]
    speech = cues[-1].end - cues[0].start
    assert durations == [pytest.approx(speech * n / sum(letters), abs=1e-6) for n in letters]
    for before, after in zip(cues, cues[1:]):
        assert after.start == pytest.approx(before.end, abs=1e-9)

    truth = [(start + speech_extent(spoken[s])[0], start + speech_extent(spoken[s])[1])
             for s, (start, _end) in zip(LONG_SENTENCES, spans)]
    boundaries = [c.end for c in cues[:-1]]
    start_errors = [abs(b - t[0]) * 1000 for b, t in zip(boundaries, truth[1:])]
    end_errors = [abs(b - t[1]) * 1000 for b, t in zip(boundaries, truth)]
    # how far outside the pause between the two sentences (0: inside it)
    outside = [max(0.0, before[1] - b, b - after[0]) * 1000
               for b, before, after in zip(boundaries, truth, truth[1:])]
    print(f"\ncue boundaries by characters vs espeak-ng's sentence boundaries "
          f"({len(cues)} cues, {speech:.1f} s of speech, pauses between sentences "
          f"{np.mean([a[0] - b[1] for b, a in zip(truth, truth[1:])]) * 1000:.0f} ms): "
          f"from the next sentence's start mean {np.mean(start_errors):.0f} ms, "
          f"max {max(start_errors):.0f} ms; from the previous sentence's end mean "
          f"{np.mean(end_errors):.0f} ms, max {max(end_errors):.0f} ms; outside the pause "
          f"mean {np.mean(outside):.0f} ms, max {max(outside):.0f} ms")
    assert max(start_errors + end_errors) < 1000


def test_cues_follow_a_faster_speech_rate(take):
    wav, pieces, _truth = take
    rate = 1.5
    fast = audio.stretch(wav, SR, rate)
    fast_pieces = [(text, start / rate, end / rate) for text, start, end in pieces]
    slow_cues = subtitles.make_cues(wav, SR, pieces)
    fast_cues = subtitles.make_cues(fast, SR, fast_pieces)
    assert [c.text for c in fast_cues] == [c.text for c in slow_cues]
    for slow, quick in zip(slow_cues, fast_cues):
        assert quick.start == pytest.approx(slow.start / rate, abs=0.1)
        assert quick.end == pytest.approx(slow.end / rate, abs=0.1)


def test_a_chunk_without_speech_keeps_its_text_over_its_span():
    wav = np.zeros(3 * SR, np.float32)
    cues = subtitles.make_cues(wav, SR, [("Nothing was heard.", 0.5, 2.0),
                                         ("[laugh]", 2.0, 2.5)])
    assert cues == [Cue(0.5, 2.0, "Nothing was heard.")]


# 81 characters: fills a cue of two 42-character lines, so it shares one with nothing
LONE_SENTENCE = "This sentence is long enough to need a cue of its own, so it shares it with none."


def test_short_cues_last_the_minimum_when_the_span_has_room():
    tone = 0.5 * np.sin(2 * np.pi * 200 * np.arange(SR) / SR).astype(np.float32)
    wav = np.concatenate([np.zeros(SR // 2, np.float32), tone[: SR // 10],
                          np.zeros(SR, np.float32)])
    cues = subtitles.make_cues(wav, SR, [("Oh.", 0.0, 1.6)])
    assert len(cues) == 1
    assert cues[0].start == pytest.approx(0.5 - subtitles.LEAD_S, abs=0.011)
    assert cues[0].end - cues[0].start == pytest.approx(subtitles.MIN_CUE_S)
    # no room: the cue stops at the span's end rather than run into the next chunk
    squeezed = subtitles.make_cues(wav, SR, [("Oh.", 0.45, 0.65), ("Next.", 0.65, 1.6)])
    assert (squeezed[0].start, squeezed[0].end) == pytest.approx((0.45, 0.65))
    assert squeezed[1].start >= squeezed[0].end
    # two cues over 0.1 s of sound: each gets the minimum, taken from the quiet around it
    pair = subtitles.make_cues(wav, SR, [("Yes. " + LONE_SENTENCE, 0.0, 1.6)])
    assert [c.text.replace("\n", " ") for c in pair] == ["Yes.", LONE_SENTENCE]
    assert [c.end - c.start for c in pair] == pytest.approx([subtitles.MIN_CUE_S] * 2)
    assert pair[0].start == pytest.approx(cues[0].start)


def test_each_of_several_cues_gets_the_minimum():
    tone = 0.5 * np.sin(2 * np.pi * 200 * np.arange(SR) / SR).astype(np.float32)
    text = "Yes. " + LONE_SENTENCE + " " + LONE_SENTENCE
    cues = subtitles.make_cues(tone, SR, [(text, 0.0, 1.0)])
    check_cues(cues)
    assert len(cues) == 3
    assert cues[0].text == "Yes."
    assert cues[0].end - cues[0].start == pytest.approx(subtitles.MIN_CUE_S)
    assert cues[1].end - cues[1].start == pytest.approx(cues[2].end - cues[2].start)
    assert cues[-1].end == pytest.approx(1.0)


# --- cue text --------------------------------------------------------------------------

def test_caption_text_removes_tags_and_pauses_only():
    text = ('Well [laugh] that was [clear throat] fun. [pause 1.5s] [PAUSE 2s] '
            '<break time="800ms"/><break time="1s" /> Array [0] stays, as does [Note].')
    assert subtitles.caption_text(text) == \
        "Well that was fun. Array [0] stays, as does [Note]."


@pytest.mark.parametrize("max_line", [12, 20, 32, 42])
def test_cue_text_keeps_every_word_in_lines_that_fit(max_line):
    words = [f"word{n}" * (1 + n % 3) for n in range(60)]
    words[17] = "x" * (max_line + 5)                 # too long for any line
    text = " ".join(words[:20]) + ". " + ", ".join(words[20:40]) + "; " + \
        " - ".join(words[40:])
    tone = 0.5 * np.sin(2 * np.pi * 200 * np.arange(20 * SR) / SR).astype(np.float32)
    cues = subtitles.make_cues(tone, SR, [(text, 0.0, 20.0)], max_line=max_line)
    check_cues(cues, max_line=max_line)
    assert words_of(c.text for c in cues) == words_of([text])
    assert "x" * (max_line + 5) in [line for c in cues for line in c.text.split("\n")]


def test_a_sentence_too_long_for_one_cue_is_cut_at_clauses_first():
    text = ("When the narrator reads a long sentence aloud, with a pause in the middle, "
            "the cue breaks at the comma rather than between two arbitrary words.")
    cues = subtitles.make_cues(np.ones(10 * SR, np.float32) * 0.3, SR, [(text, 0.0, 10.0)])
    assert [c.text.replace("\n", " ") for c in cues] == [
        "When the narrator reads a long sentence aloud, with a pause in the middle,",
        "the cue breaks at the comma rather than between two arbitrary words."]


def test_two_lines_are_balanced():
    cue_text = subtitles.make_cues(np.ones(SR, np.float32) * 0.3, SR, [(
        "Subtitles read best when both of their lines are about as long.", 0.0, 1.0)])[0].text
    top, bottom = cue_text.split("\n")
    assert abs(len(top) - len(bottom)) <= 8, cue_text


# --- file formats ----------------------------------------------------------------------

CUES = [Cue(1.0, 2.5, "Fish & chips\n<cheap> --> good"), Cue(3661.0004, 3662.9996, "Later.")]


def test_srt_format():
    assert subtitles.to_srt(CUES) == (
        "1\n00:00:01,000 --> 00:00:02,500\nFish & chips\n<cheap> --> good\n\n"
        "2\n01:01:01,000 --> 01:01:03,000\nLater.\n\n")


def test_vtt_format_escapes_markup():
    assert subtitles.to_vtt(CUES) == (
        "WEBVTT\n\n"
        "00:00:01.000 --> 00:00:02.500\nFish &amp; chips\n&lt;cheap&gt; --&gt; good\n\n"
        "01:01:01.000 --> 01:01:03.000\nLater.\n\n")
    parsed = webvtt.from_string(subtitles.to_vtt(CUES))
    assert [html.unescape(c.text) for c in parsed] == [c.text for c in CUES]


def test_vtt_chapters_run_to_the_next_chapter():
    track = subtitles.to_vtt_chapters([(0.0, "Opening"), (65.5, "Rock & roll")], 120.25)
    assert track == ("WEBVTT\n\n00:00:00.000 --> 00:01:05.500\nOpening\n\n"
                     "00:01:05.500 --> 00:02:00.250\nRock &amp; roll\n\n")
    assert [c.end for c in webvtt.from_string(track)] == ["00:01:05.500", "00:02:00.250"]


@pytest.mark.parametrize("suffix", [".ass", ".txt", "", "srt"])
def test_unknown_subtitle_suffix_is_an_invalid_setting(suffix):
    with pytest.raises(InvalidSetting) as error:
        subtitles.subtitles_for(suffix, CUES)
    assert ".srt" in error.value.solution and ".vtt" in error.value.solution

"""Subtitles through the public API (issue 25): a take's and a project's .srt / .vtt,
timed from the real audio of the random-weight checkpoint, parsed by the standard
`srt` and `webvtt-py` packages. cbx/subtitles.py's own timing accuracy on speech with
known boundaries is tests/test_subtitles.py's.
"""
from __future__ import annotations

import io

import pytest
import srt                  # dev dependencies: python setup_env.py --dev installs them
import webvtt

import cbx

TEXT = "Hello there, my friend. [pause 1s] This is the second part [laugh] of it."
SPOKEN = "Hello there, my friend. This is the second part of it."


def words(cues) -> str:
    return " ".join(" ".join(text.split()) for text in cues)


@pytest.mark.model
def test_a_takes_subtitles_follow_its_audio_pauses_and_rate(loaded, tmp_path):
    result = cbx.speak(TEXT, seed=3)
    cues = list(srt.parse(result.save(tmp_path / "take.srt").read_text("utf-8")))
    assert words(c.content for c in cues) == SPOKEN
    starts = [c.start.total_seconds() for c in cues]
    ends = [c.end.total_seconds() for c in cues]
    assert starts == sorted(starts) and all(a <= b for a, b in zip(ends, starts[1:]))
    assert abs(ends[-1] - result.duration) <= 0.3
    # the second chunk's cue starts after the pause, which follows the first chunk
    first_end = result.spans[0][1]
    assert any(start >= first_end + 1.0 - 1e-3 for start in starts)

    vtt = webvtt.from_buffer(io.StringIO(result.save(tmp_path / "take.vtt")
                                         .read_text("utf-8")))
    assert words(c.text for c in vtt) == SPOKEN

    faster = cbx.speak(TEXT, seed=3, rate=1.5)
    quick = list(srt.parse(faster.save(tmp_path / "quick.srt").read_text("utf-8")))
    assert quick[-1].end.total_seconds() == pytest.approx(ends[-1] / 1.5, abs=0.15)


@pytest.mark.model
def test_a_project_exports_its_subtitles_and_chapters(loaded, tmp_path):
    job = cbx.project("subtitled", text="# One\nFirst line here. [pause 2s] Second line "
                      "here.\n\n# Two\nThird line.", seed=4, text_format="markdown")
    job.run()
    cues = list(srt.parse(job.export(tmp_path / "book.srt").read_text("utf-8")))
    wav, rate = job.audio()
    assert words(c.content for c in cues) == \
        "One. First line here. Second line here. Two. Third line."
    assert abs(cues[-1].end.total_seconds() - len(wav) / rate) <= 0.3
    gaps = [b.start.total_seconds() - a.end.total_seconds() for a, b in zip(cues, cues[1:])]
    assert max(gaps) >= 2.0 - 0.1                       # the pause tag's silence
    with pytest.raises(cbx.errors.OutputExists):
        job.export(tmp_path / "book.srt")
    chapters = list(webvtt.from_buffer(io.StringIO(
        job.export(tmp_path / "book.chapters.vtt").read_text("utf-8"))))
    assert [c.text for c in chapters] == ["One", "Two"]
    assert chapters[0].start == "00:00:00.000"
    hours, minutes, seconds = chapters[-1].end.split(":")
    assert int(hours) * 3600 + int(minutes) * 60 + float(seconds) == \
        pytest.approx(len(wav) / rate, abs=1e-3)

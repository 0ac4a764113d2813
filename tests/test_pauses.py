"""Pause markup (issue 25): "[pause 1.5s]", "[pause 800ms]" and SSML's
<break time="1.5s"/> are silence of that length and a chunk boundary, never read aloud;
a malformed one is invalid_text naming it and where it is.
"""
from __future__ import annotations

import numpy as np
import pytest

import cbx
from cbx import text as textmod
from cbx.dev import fixture
from cbx.engine.synth import PAUSE_SECONDS
from cbx.errors import InvalidText
from cbx.longform import sources

RATE = 24_000
ONE_CHUNK = fixture.expected_samples("original")


def test_pauses_split_the_text_and_are_chunks_of_their_own():
    chunks = textmod.split_text('Hello there. [pause 1.5s] And more. <break time="800ms"/>'
                                " End [PAUSE 0.25S] now.")
    assert chunks == ["Hello there.", "[pause 1.5s]", "And more.", "[pause 0.8s]", "End",
                      "[pause 0.25s]", "now."]
    assert [textmod.pause_seconds(c) for c in chunks] == [None, 1.5, None, 0.8, None,
                                                          0.25, None]
    # the first chunk stays short after a leading pause, as it would without one
    words = "Short. " + "A longer sentence follows it here, and on it goes. " * 6
    assert textmod.split_text("[pause 1s] " + words)[1:] == textmod.split_text(words)
    assert len(textmod.split_text(words)[0]) <= textmod.DEFAULT_FIRST_CHUNK_CHARS


def test_the_estimate_counts_the_pauses_and_not_their_letters():
    plain = textmod.estimate_seconds("Hello there.")
    assert textmod.estimate_seconds("Hello there. [pause 2s]") == pytest.approx(plain + 2)
    assert textmod.estimate_seconds("Hello [pause 2s] there.", rate=2.0) == \
        pytest.approx((plain + 2) / 2)


@pytest.mark.parametrize("bad, where", [
    ("Hi [pause] there.", "at character 4"),
    ("Hi [pause 11s] there.", "longer than 10 s"),
    ("Hi [pause 2 sec] there.", "at character 4"),
    ("Hi <break time='soon'/> there.", "at character 4"),
    ("Hi [pause 2s there.", "at character 4"),
])
def test_a_malformed_pause_is_invalid_text_naming_it(bad, where):
    with pytest.raises(InvalidText) as err:
        textmod.split_text(bad)
    assert where in err.value.message and err.value.code == "invalid_text"
    assert "[pause 1.5s]" in err.value.solution
    with pytest.raises(InvalidText):
        cbx.speak(bad)                       # before any model is loaded


def test_turbo_tags_live_beside_pauses():
    assert textmod.split_text("Ha [laugh] yes. [pause 1s] Oh [sigh] no.") == \
        ["Ha [laugh] yes.", "[pause 1s]", "Oh [sigh] no."]


def test_a_project_turns_pauses_into_the_silence_after_a_chunk():
    pieces = sources.pieces("Hello there. [pause 2s] More words. [pause 1s][pause 1s] End.")
    assert [(p.text, p.pause_after) for p in pieces] == [
        ("Hello there.", 2.0), ("More words.", 2.0), ("End.", sources.PAUSE_SECONDS)]
    with pytest.raises(InvalidText, match="starts with a pause"):
        sources.pieces("[pause 1s] Hello.")


@pytest.mark.model
def test_a_pause_of_two_seconds_adds_two_seconds_of_silence(loaded):
    """Each chunk of the random-weight checkpoint is ONE_CHUNK samples: the pause is the
    whole gap between two chunks (no breath beside it), at the speech rate."""
    joined = cbx.speak("Hello there. [pause 2s] Good bye.", seed=1)
    assert joined.chunks == ["Hello there.", "[pause 2s]", "Good bye."]
    assert len(joined.wav) == 2 * ONE_CHUNK + 2 * RATE
    gap = joined.wav[ONE_CHUNK:ONE_CHUNK + 2 * RATE]
    assert not gap.any()
    breath = cbx.speak("Hello there. Good bye.", seed=1, max_chunk_chars=15)
    assert len(joined.wav) - len(breath.wav) == pytest.approx((2 - PAUSE_SECONDS) * RATE,
                                                              abs=0.1 * RATE)
    streamed = np.concatenate([block.wav for block in
                               cbx.stream("Hello there. [pause 2s] Good bye.", seed=1)])
    assert len(streamed) == len(joined.wav), "the blocks join into speak()'s length"
    assert not streamed[ONE_CHUNK:ONE_CHUNK + 2 * RATE].any()
    faster = cbx.speak("Hello there. [pause 2s] Good bye.", seed=1, rate=1.5)
    assert np.count_nonzero(faster.wav == 0) >= round(2 / 1.5 * RATE)
    assert len(faster.wav) < len(joined.wav)

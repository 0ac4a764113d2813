"""Projects on disk (issue 12) without a model: cbx.engine.synth.speak is replaced by espeak-ng
speech of the chunk's text (deterministic per seed), so resume, atomic writes,
regenerate, edits on reopen, hostile names, text files and the babble guard's retries
are checked in seconds. tests/test_project_model.py runs the real speak path."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

import cbx
from pathlib import Path

from cbx.dev import clips
from cbx import files, paths
from cbx.engine import synth
from cbx.errors import CbxError, InvalidSetting, InvalidText
from cbx.engine.synth import CancelToken, Result, sidecar_path

SR = 24_000
TEXT = ("The first sentence is here. The second one follows it. A third sentence now. "
        "Then comes the fourth. And the fifth ends it.")


@pytest.fixture
def fake_speak(monkeypatch):
    """speak(): espeak speech of the text, its level set by the seed; 'BABBLE' in the
    text adds 20 s of noise for seeds in `calls.bad_seeds`."""
    if not clips.espeak_available():
        pytest.skip("espeak-ng is not installed")
    calls = []
    calls_bad = set()

    def speak(text, voice=None, *, seed, max_chunk_chars, first_chunk_chars, progress,
              cancel, **options):
        calls.append((text, seed))
        if progress is not None:
            progress(synth.Progress(1, 1, 0, 0.0, None, "chunk_done"))
        wav = clips.espeak_speech(text.replace("BABBLE", "")) * (0.5 + (seed % 10) / 40)
        if "BABBLE" in text and seed in calls_bad:
            noise = np.random.default_rng(seed).uniform(-0.3, 0.3, 20 * SR)
            wav = np.concatenate([wav, noise.astype(np.float32)])
        return Result(wav=wav.astype(np.float32), sample_rate=SR, text=text, voice="v",
                      variant="original", seed=seed, settings=options, chunks=[text],
                      timings={}, device="cpu", dtype="float32")

    monkeypatch.setattr(synth, "speak", speak)
    speak.calls, speak.bad_seeds = calls, calls_bad
    return speak


def chunk_bytes(job):
    return [Path(row["wav"]).read_bytes() for row in job.overview() if row["wav"]]


def test_run_makes_files_status_and_exports(fake_speak, tmp_path):
    job = cbx.project("Chapter 1", text=TEXT, seed=7, max_chunk_chars=30)
    assert job.folder.parent == paths.output_dir() / "projects"
    assert job.folder.name.startswith("Chapter-1-")
    assert job.status() == {"chunks": 5, "done": 0, "flagged": [], "missing": [0, 1, 2, 3, 4],
                            "damaged": [], "seconds": 0, "holder": None}
    seen, events = [], []
    status = job.run(on_chunk=lambda i, n, wav, sr: seen.append((i, n)),
                     progress=events.append)
    assert seen == [(i, 5) for i in range(5)]
    assert [(e.chunk, e.total) for e in events] == [(i, 5) for i in range(1, 6)]
    assert status["done"] == 5 and status["missing"] == [] and status["flagged"] == []
    assert [s for _t, s in fake_speak.calls] == [7, 8, 9, 10, 11]
    assert [row["seed"] for row in job.overview()] == [7, 8, 9, 10, 11]
    record = job.chunk(2)
    assert record["seed_used"] == 9 and record["flags"] == []
    out = job.export(tmp_path / "book.mp3")
    info = sf.info(str(out))
    wav, sr = job.audio()
    assert info.format == "MP3" and abs(info.frames - len(wav)) <= 1152
    meta = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    assert meta["seed"] == 7 and len(meta["chunks"]) == 5
    assert job.run()["done"] == 5 and len(fake_speak.calls) == 5     # nothing to redo
    assert cbx.projects()[0]["name"] == "Chapter 1"


def test_export_rate_and_incomplete_projects(fake_speak, tmp_path):
    job = cbx.project("rated", text=TEXT, seed=1, max_chunk_chars=30)
    with pytest.raises(CbxError) as caught:
        job.export(tmp_path / "early.wav")
    assert caught.value.code == "project_incomplete" and "run" in caught.value.solution
    job.run()
    normal, _ = job.audio()
    fast, _ = job.audio(rate=2.0)
    assert len(fast) == pytest.approx(len(normal) / 2, rel=0.01)
    out = job.export(tmp_path / "fast.flac", rate=2.0)
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["speech_rate"] == 2.0


def test_cancelled_then_resumed_equals_uninterrupted(fake_speak, tmp_path):
    clean = cbx.project("clean", text=TEXT, seed=3, max_chunk_chars=30)
    clean.run()
    cancel = CancelToken()
    job = cbx.project("halted", text=TEXT, seed=3, max_chunk_chars=30)
    job.run(cancel=cancel, on_chunk=lambda i, n, w, s: i == 1 and cancel.cancel())
    assert job.status()["done"] == 2
    again = cbx.project("halted")                       # reopened by name
    again.run()
    assert [t for t, _s in fake_speak.calls].count(TEXT.split(". ")[0] + ".") == 2
    assert again.export(tmp_path / "a.wav").read_bytes() == \
        clean.export(tmp_path / "b.wav").read_bytes()


def test_a_kill_between_temp_file_and_replace_leaves_a_readable_project(
        fake_speak, monkeypatch, tmp_path):
    clean = cbx.project("clean", text=TEXT, seed=5, max_chunk_chars=30)
    clean.run()
    job = cbx.project("torn", text=TEXT, seed=5, max_chunk_chars=30)
    real_replace = os.replace
    third = clean.chunk(2)["wav_sha256"]

    def dying_replace(src, dst):
        if str(dst).endswith(f"{third}.wav"):
            raise KeyboardInterrupt("killed mid-write")     # nothing after this runs
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        job.run()
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert not list((job.folder / "takes").glob(".*")), "the torn temp file is removed"
    reopened = cbx.project("torn")
    assert reopened.status()["missing"] == [2, 3, 4]
    reopened.run()
    assert reopened.export(tmp_path / "a.wav").read_bytes() == \
        clean.export(tmp_path / "b.wav").read_bytes()


def test_regenerate_changes_only_that_chunk(fake_speak):
    job = cbx.project("reroll", text=TEXT, seed=20, max_chunk_chars=30)
    job.run()
    before = chunk_bytes(job)
    record = job.regenerate(3)
    after = chunk_bytes(job)
    assert record["seed"] == 24 and record["seed_used"] == 24
    assert [a == b for a, b in zip(before, after)] == [True, True, True, False, True]
    assert len(job.takes(3)) == 2, "the old take is kept"
    job.regenerate(1, text="An edited second chunk.")
    final = chunk_bytes(job)
    assert [a == b for a, b in zip(after, final)] == [True, False, True, True, True]
    assert job.chunk(1)["text"] == "An edited second chunk."
    with pytest.raises(InvalidSetting):
        job.regenerate(9)


def test_reopen_with_changed_text_remakes_only_those_chunks(fake_speak):
    job = cbx.project("edit", text=TEXT, seed=2, max_chunk_chars=30)
    job.run()
    job.regenerate(0)                                   # a re-rolled take is kept too
    before = chunk_bytes(job)
    edited = TEXT.replace("Then comes the fourth.", "Then comes a new fourth.")
    reopened = cbx.project("edit", text=edited, max_chunk_chars=30)
    assert reopened.changes.changed == (3,) and "text" in reopened.changes.reason
    assert reopened.status()["missing"] == [3]
    assert len(job.takes(3)) == 1, "the old take is kept as history"
    calls = len(fake_speak.calls)
    reopened.run()
    assert fake_speak.calls[calls:] == [("Then comes a new fourth.", 5)]
    after = chunk_bytes(reopened)
    assert [a == b for a, b in zip(before, after)] == [True, True, True, False, True]


def test_reopen_with_another_voice_remakes_everything(fake_speak, speech_wav):
    job = cbx.project("voiced", text=TEXT, seed=2, max_chunk_chars=30)
    job.run()
    other = cbx.project("voiced", text=TEXT, voice=speech_wav, max_chunk_chars=30)
    assert other.changes.changed == (0, 1, 2, 3, 4) and "voice" in other.changes.reason
    assert other.status()["done"] == 0
    assert [len(other.takes(i)) for i in range(5)] == [1] * 5


def test_babble_is_retried_with_the_next_seeds_then_flagged_never_dropped(fake_speak):
    text = "A calm sentence. BABBLE here it goes."
    fake_speak.bad_seeds.update({41, 42})             # chunk 1: seeds 41, 42 bad, 43 ok
    job = cbx.project("babble", text=text, seed=40, max_chunk_chars=20)
    job.run()
    record = job.chunk(1)
    assert [a["seed"] for a in record["attempts"]] == [41, 42, 43]
    assert record["attempts"][0]["flags"] and record["flags"] == []
    assert record["seed_used"] == 43 and record["duration"] < 5
    fake_speak.bad_seeds.update({44, 45, 46})
    record = job.regenerate(1)                         # seeds 44, 45, 46: all bad
    assert record["seed_used"] == 44 and len(record["attempts"]) == 3
    assert any("noise" in f for f in record["flags"])
    assert record["duration"] < 5, "trailing noise trimmed to a natural pause"
    assert job.status()["flagged"] == [1] and job.status()["done"] == 2


@pytest.mark.parametrize("name", ["../../x", "con", "CON.txt", "lpt1", "a/b\\c", "..",
                                  "///", "x" * 200, "Ünïcødé 章节 ①", " spaced  out "])
def test_hostile_names_stay_inside_the_projects_folder(fake_speak, name):
    job = cbx.project(name, text="Short text.", seed=1)
    root = (paths.output_dir() / "projects").resolve()
    assert job.folder.resolve().parent == root
    assert len(job.folder.name.encode("utf-8")) <= 51
    assert job.folder.name.split(".")[0].upper() not in {"CON", "LPT1"}
    job.run()
    assert cbx.project(name).name == name
    for path in paths.output_dir().rglob("*"):
        assert root in path.resolve().parents or path.resolve() == root


@pytest.mark.parametrize("name", ["", "   ", None, 7, "x" * 201])
def test_names_without_letters_are_refused(name):
    with pytest.raises(InvalidSetting):
        cbx.project(name, text="Text.")


def test_markdown_and_srt_files(fake_speak, tmp_path):
    md = tmp_path / "book.md"
    md.write_text("# Chapter One\n\nIt was a **dark** night.\n\n# Chapter Two\n\n"
                  "The [sun](http://x) rose.\n", encoding="utf-8")
    job = cbx.project("md", text=md, seed=1)
    rows = job.overview()
    chapters = [c["chapter"] for c in rows if c["chapter"]]
    assert chapters == ["Chapter One", "Chapter Two"]
    assert all("*" not in c["text"] and "http" not in c["text"] for c in rows)
    before_two = rows[[c["chapter"] for c in rows].index("Chapter Two") - 1]
    assert before_two["pause_after"] > rows[0]["pause_after"]
    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:01,000 --> 00:00:02,000\nHello\nthere.\n\n"
                   "2\n00:00:02,500 --> 00:00:04,000\n<i>Second</i> one.\n", encoding="utf-8")
    job = cbx.project("srt", text=srt, seed=1)
    assert [c["text"] for c in job.overview()] == ["Hello there.", "Second one."]


@pytest.mark.parametrize("name,data,words", [
    ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
    ("latin.txt", "Caf\u00e9 cr\u00e8me".encode("latin-1"), "UTF-8"),
    ("empty.md", b"   \n", "empty"),
    ("bad.srt", b"just some words\n", "SubRip"),
    ("story.docx", b"PK\x03\x04", ".txt"),
])
def test_bad_text_files_are_invalid_text_with_a_fix(tmp_path, name, data, words):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InvalidText) as caught:
        cbx.project("bad", text=path)
    assert caught.value.code == "invalid_text" and words in str(caught.value)
    assert caught.value.solution
    assert not (paths.output_dir() / "projects").exists(), "nothing written"


def test_reopening_a_project_that_does_not_exist(tmp_path):
    with pytest.raises(InvalidText, match="no project"):
        cbx.project("nothing-here")

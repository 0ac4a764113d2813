"""Projects you can trust (issue 20): the ways finished work was lost or mixed, each
tried through the public API, with real processes where the fault needs two (a writer
holding the lock, a writer killed mid-write) and a real file-size limit for a full
disk. The model is replaced by tests/fake_speech.py (a tone per chunk), so every run
is deterministic and takes milliseconds."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import cbx
import fake_speech
from cbx import paths
from cbx.errors import CbxError, InvalidSetting, OutputNotSaved, ProjectLocked
from cbx.longform import names

TESTS = Path(__file__).resolve().parent
TEXT = " ".join(f"This is sentence number {n} of the book." for n in range(1, 13))
CHUNK = 50           # one sentence of TEXT a chunk: 12 chunks


def new(name: str, text: str = TEXT, **options):
    return cbx.project(name, text=text, max_chunk_chars=CHUNK, **options)


@pytest.fixture
def calls(monkeypatch):
    made: list = []
    fake_speech.install(calls=made, monkeypatch=monkeypatch)
    return made


def _script(body: str, delay: float = 0.0) -> list[str]:
    prelude = (f"import sys; sys.path.insert(0, {str(TESTS)!r}); import fake_speech; "
               f"fake_speech.install(delay={delay}); import cbx\n")
    return [sys.executable, "-c", prelude + body]


def _wait_for(predicate, timeout: float = 60.0, what: str = "the other process"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _holder_of(name: str):
    found = [p for p in cbx.projects() if p["name"] == name]
    return found[0].get("holder") if found else None


# ------------------------------------------------------------------ 1. names
def test_names_that_once_shared_a_folder_are_two_projects(calls):
    stem = "The Very Long Title Of A Series, Volume One: The Beginning Of It All, Chapter"
    first = cbx.project(f"{stem} 1", text="Chapter one is here.", seed=1)
    second = cbx.project(f"{stem} 2", text="Chapter two is here.", seed=1)
    slash = cbx.project("my/book", text="A book with a slash.", seed=1)
    plain = cbx.project("my book", text="A book with a space.", seed=1)
    folders = {first.folder, second.folder, slash.folder, plain.folder}
    assert len(folders) == 4
    assert not second.changes and not plain.changes, "a second name never replans a first"
    listed = {p["name"]: p["chunks"] for p in cbx.projects()}
    assert listed == {f"{stem} 1": 1, f"{stem} 2": 1, "my/book": 1, "my book": 1}
    assert cbx.project(f"{stem} 1").overview()[0]["text"] == "Chapter one is here."
    for folder in folders:
        assert len(folder.name.encode("utf-8")) <= names.SLUG_BYTES + 1 + names.HASH_CHARS


def test_combining_marks_are_kept_and_limits_count_bytes(calls):
    job = cbx.project("कि कहानी", text="A story.", seed=1)
    assert job.folder.name.startswith("कि-कहानी-")
    assert cbx.project("कि कहानी").name == "कि कहानी"
    too_long = "章" * 70                                   # 70 characters, 210 bytes
    with pytest.raises(InvalidSetting, match="bytes"):
        cbx.project(too_long, text="Text.")
    with pytest.raises(InvalidSetting, match="control"):
        cbx.project("tab\there", text="Text.")
    assert {p["name"] for p in cbx.projects()} == {"कि कहानी"}, "nothing else written"


# ------------------------------------------------------------------ 2. voice identity
def test_a_replaced_voice_is_refused_never_mixed(calls, speech_wav, long_speech_wav):
    from cbx import voices

    voice = cbx.voice(speech_wav, "narrator")
    job = new("voiced", voice=voice, seed=3)
    token = cbx.CancelToken()
    job.run(cancel=token, on_chunk=lambda i, *_: i == 1 and token.cancel())
    assert job.status()["done"] == 2
    voices.delete_voice("narrator")
    cbx.voice(long_speech_wav, "narrator")                 # another clip, same name
    for attempt in (job.run, lambda: job.regenerate(0)):
        with pytest.raises(CbxError) as caught:
            attempt()
        assert caught.value.code == "voice_changed"
        assert "cbx.project('voiced', voice='narrator')" in caught.value.solution
    assert job.status()["done"] == 2 and len(calls) == 2, "nothing made in the new voice"
    replanned = cbx.project("voiced", voice="narrator")
    assert replanned.changes.changed == tuple(range(12)) and "voice" in replanned.changes.reason
    assert replanned.status()["done"] == 0


def test_a_deleted_voice_is_restored_from_the_projects_own_copy(calls, speech_wav):
    from cbx import voices

    voice = cbx.voice(speech_wav, "reader")
    job = new("kept voice", voice=voice, seed=3)
    copies = list((job.folder / "voice").iterdir())
    assert [p.read_bytes() for p in copies] == [voice.path.read_bytes()]
    voices.delete_voice("reader")
    assert job.run()["done"] == 12
    assert cbx.saved_voices()[0].sha256 == voice.sha256


# ------------------------------------------------------------------ 3. verified audio
def _take_path(job, index: int) -> Path:
    return Path(job.chunk(index)["wav"])


@pytest.mark.parametrize("damage", ["16 kHz", "60 s", "0 samples", "same size"])
def test_a_damaged_take_is_found_remade_and_never_exported(calls, tmp_path, damage):
    clean = new("clean", seed=9)
    clean.run()
    job = new("damaged", seed=9)
    job.run()
    path = _take_path(job, 4)
    stat = path.stat()
    if damage == "16 kHz":
        sf.write(str(path), fake_speech.tone("x" * 40, 1), 16_000, subtype="PCM_16")
    elif damage == "60 s":
        sf.write(str(path), np.zeros(60 * 24_000, np.float32), 24_000, subtype="PCM_16")
    elif damage == "0 samples":
        sf.write(str(path), np.zeros(0, np.float32), 24_000, subtype="PCM_16")
    else:                      # same size and time stamp: only the sha256 can tell
        data = bytearray(path.read_bytes())
        data[-2:] = bytes([data[-2] ^ 0xFF, data[-1] ^ 0xFF])
        path.write_bytes(bytes(data))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    if damage != "same size":
        assert job.status()["damaged"] == [4] and job.status()["missing"] == [4]
        assert job.overview(4, 5)[0]["state"] == "damaged"
    with pytest.raises(CbxError) as caught:
        job.export(tmp_path / "book.wav")
    assert caught.value.code == "project_incomplete" and "damaged" in caught.value.message
    assert not (tmp_path / "book.wav").exists()
    assert job.status()["damaged"] == [4]
    made = len(calls)
    assert job.run()["done"] == 12
    assert calls[made:] == [(job.overview(4, 5)[0]["text"], 9 + 4)]
    assert job.export(tmp_path / "book.wav").read_bytes() == \
        clean.export(tmp_path / "clean.wav").read_bytes()


# ------------------------------------------------------------------ 4. the writer lock
def test_every_writer_waits_for_the_lock_holder_in_another_process(calls):
    job = new("shared", seed=5)
    holder = subprocess.Popen(_script("cbx.project('shared').run()", delay=0.5),
                              env=os.environ.copy())
    try:
        _wait_for(lambda: _holder_of("shared") is not None, what="the writer")
        assert _holder_of("shared")["pid"] == holder.pid
        assert job.status()["holder"]["action"] == "run"
        attempts = {
            "run": job.run,
            "regenerate": lambda: job.regenerate(0),
            "edit text": lambda: job.regenerate(0, text="Edited."),
            "reopen with new text": lambda: new("shared", TEXT + " More."),
            "reopen with a seed": lambda: cbx.project("shared", seed=99),
            "reopen with settings": lambda: cbx.project("shared", exaggeration=0.7),
            "delete": job.delete,
        }
        for what, attempt in attempts.items():
            with pytest.raises(ProjectLocked) as caught:
                attempt()
            assert caught.value.code == "project_busy", what
            assert f"process {holder.pid}" in caught.value.message, what
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert job.holder() is None, "a killed holder's lock and record are gone"
    reopened = new("shared", TEXT.replace("number 3 ", "number three "))
    reopened.run()
    texts = [row["record"]["text"] for row in reopened.overview()]
    assert texts == [row["text"] for row in reopened.overview()]
    assert "number three" in texts[2]


# ------------------------------------------------------------------ 6. failed writes
def test_a_full_disk_keeps_finished_chunks_and_leaves_no_debris(calls, tmp_path):
    short = "A sentence of a hundred and twenty characters, give or take a few, " \
            "which the splitter keeps as one chunk of its own."
    text = f"{short} {short} {short} {short * 2}"
    cbx.project("full disk", text=text, seed=2, max_chunk_chars=len(short) * 2)
    # three short takes fit under the file-size limit; the fourth, longer one cannot
    limit = 600_000
    body = ("import resource, signal\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
            "try:\n"
            "    cbx.project('full disk').run()\n"
            "except cbx.CbxError as exc:\n"
            "    print(exc.code, exc.message, exc.solution, sep='|')\n")
    out = subprocess.run(_script(body), env=os.environ.copy(), capture_output=True,
                         text=True, timeout=120)
    code, message, solution = out.stdout.strip().split("|")
    assert code == "output_not_saved" and "takes" in message and "Free disk space" in solution
    job = cbx.project("full disk")
    assert job.status()["done"] == 3 and job.status()["missing"] == [3]
    debris = [p for p in job.folder.rglob("*") if p.name.endswith((".cbxtmp", ".tmp"))]
    assert debris == []
    assert len(list((job.folder / "takes").iterdir())) == 3, "no take without its row"
    assert job.run()["done"] == 4


def test_a_writer_killed_between_file_and_row_is_swept_and_resumes_bit_identically(
        calls, tmp_path):
    clean = new("clean", seed=4)
    clean.run()
    new("killed", seed=4)
    body = ("import os, signal\n"
            "from cbx.longform import store\n"
            "real = store.Store.add_take\n"
            "def dying(db, take):\n"
            "    if take['idx'] == 5:\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return real(db, take)\n"
            "store.Store.add_take = staticmethod(dying)\n"
            "cbx.project('killed').run()\n")
    died = subprocess.run(_script(body), env=os.environ.copy(), timeout=120)
    assert died.returncode == -signal.SIGKILL
    job = cbx.project("killed")
    assert job.status()["done"] == 5
    assert len(list((job.folder / "takes").iterdir())) == 6, "the orphan file is there"
    job.run()
    assert len(list((job.folder / "takes").iterdir())) == 12
    assert job.export(tmp_path / "a.wav").read_bytes() == \
        clean.export(tmp_path / "b.wav").read_bytes()


def test_project_writes_that_fail_are_output_not_saved(calls, monkeypatch):
    job = new("readonly", seed=1)
    takes = job.folder / "takes"
    takes.parent.mkdir(exist_ok=True)
    takes.write_text("a file where the takes folder belongs")
    with pytest.raises(OutputNotSaved) as caught:
        job.run()
    assert "takes" in caught.value.message
    assert "Free disk space" not in caught.value.solution


# ------------------------------------------------------------------ 7. checked inputs
def test_the_largest_seed_wraps_instead_of_breaking_chunk_two(calls):
    job = new("max seed", seed=2**32 - 1)
    assert [row["seed"] for row in job.overview(0, 3)] == [2**32 - 1, 0, 1]
    assert job.run()["done"] == 12


@pytest.mark.parametrize("settings,word", [
    ({"exaggeration": float("nan")}, "exaggeration"),
    ({"exageration": 0.5}, "exageration"),
    ({"temperature": 99}, "temperature"),
    ({"variant": "bogus"}, "bogus"),
    ({"language": "xx", "variant": "multilingual"}, "xx"),
])
def test_bad_settings_are_refused_before_anything_is_written(settings, word):
    with pytest.raises(InvalidSetting, match=word):
        new("bad settings", **settings)
    assert cbx.projects() == []


def test_reopening_with_a_seed_rate_or_settings_replans_and_says_so(calls, tmp_path):
    job = new("reopen", seed=1)
    job.run()
    rated = cbx.project("reopen", rate=1.5)
    assert rated.rate == 1.5 and "rate" in rated.changes.reason
    assert rated.changes.changed == () and rated.status()["done"] == 12
    reseeded = cbx.project("reopen", seed=100)
    assert reseeded.changes.changed == tuple(range(12))
    assert "seed" in reseeded.changes.reason
    assert reseeded.overview(0, 1)[0]["seed"] == 100
    reseeded.run()
    tuned = cbx.project("reopen", exaggeration=0.8)
    assert tuned.changes.changed == tuple(range(12)) and "settings" in tuned.changes.reason
    assert tuned.plan()["options"] == {"exaggeration": 0.8}
    assert tuned.plan()["seed"] == 100, "what is not given is kept"


# ------------------------------------------------------------------ 9. malformed stores
def test_a_malformed_record_or_store_is_coded_and_hides_no_other_project(calls):
    good = new("good", seed=1)
    good.run()
    bad = new("bad record", seed=1)
    bad.run()
    with sqlite3.connect(bad.folder / "project.db") as db:
        db.execute("UPDATE takes SET record = '{' WHERE idx = 2")
        db.execute("UPDATE takes SET flags = 'null' WHERE idx = 3")
    broken = new("broken store", seed=1)
    broken.close()
    (broken.folder / "project.db").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (broken.folder / f"project.db{suffix}").unlink(missing_ok=True)
    listed = {p["name"]: p for p in cbx.projects()}
    assert listed["good"]["done"] == 12
    assert listed[names.folder_name("broken store")]["error"]["error"] == "invalid_text"
    assert bad.status()["damaged"] == [3]
    assert [row["state"] for row in bad.overview(1, 5)] == ["done", "done", "damaged", "done"]
    assert bad.chunk(2) is None and bad.chunk(3) is None, "an unreadable record is not done"
    made = len(calls)
    bad.run()
    assert [index for _text, index in calls[made:]] == [1 + 2, 1 + 3], "both remade"
    assert bad.status()["done"] == 12 and bad.status()["damaged"] == []
    with pytest.raises(CbxError) as caught:
        cbx.project("broken store")
    assert caught.value.code == "invalid_text"
    for key, value in (("options", "[1]"), ("voice", "7"), ("seed", '"x"'), ("name", "null")):
        job = new(f"bad {key}")
        job.close()
        with sqlite3.connect(job.folder / "project.db") as db:
            db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
        listed = {p["folder"]: p for p in cbx.projects()}
        assert listed[str(job.folder)]["error"]["error"] == "invalid_text", key
        assert key in listed[str(job.folder)]["error"]["message"]


# ------------------------------------------------------------------ format 1
def test_a_project_made_by_the_previous_format_is_imported_whole(tmp_path):
    root = paths.output_dir() / "projects"
    root.mkdir(parents=True)
    shutil.copytree(TESTS / "data" / "projects_v1" / "Old-book-part-1",
                    root / "Old-book-part-1")
    originals = {p.relative_to(root / "Old-book-part-1"): p.read_bytes()
                 for p in (root / "Old-book-part-1").rglob("*") if p.is_file()}
    listed = cbx.projects()
    assert [(p["name"], p["chunks"], p["done"]) for p in listed] == [("Old book: part 1", 3, 3)]
    job = cbx.project("Old book: part 1")
    assert job.plan()["options"] == {"exaggeration": 0.6} and job.plan()["seed"] == 11
    assert [len(job.takes(i)) for i in range(3)] == [1, 2, 1], "the superseded take too"
    kept = job.folder / "imported-v1"
    assert {p.relative_to(kept): p.read_bytes()
            for p in kept.rglob("*") if p.is_file()} == originals, "nothing lost"
    old_chunk = originals[Path("chunks/0001.wav")]
    assert Path(job.chunk(1)["wav"]).read_bytes() == old_chunk
    wav, sr = job.audio()
    assert sr == 24_000 and len(wav) > 3 * 0.25 * sr
    assert json.loads(job.export(tmp_path / "old.wav").with_name("old.wav.json")
                      .read_text())["seed"] == 11


# ------------------------------------------------------------------ 7 and 11. text in
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_book_files_are_read_whole_or_refused_never_hung_or_mangled(calls, tmp_path):
    fenced = tmp_path / "notes.md"
    fenced.write_text("# One\n\nBefore the fence.\n\n```\nInside the open fence.\n\n"
                      "After it, the rest of the book.\n", encoding="utf-8")
    words = " ".join(row["text"] for row in cbx.project("fenced", text=fenced).overview())
    assert "Inside the open fence." in words and "the rest of the book." in words
    packed = tmp_path / "packed.srt"
    packed.write_text("1\n00:00:01,000 --> 00:00:02,000\nHello there.\n"
                      "2\n00:00:02,500 --> 00:00:04,000\nSecond line.\n", encoding="utf-8")
    texts = [row["text"] for row in cbx.project("packed", text=packed).overview()]
    assert " ".join(texts).replace("  ", " ") == "Hello there. Second line."
    with pytest.raises(CbxError) as caught:
        cbx.project("silent", text="Real words here.\n\n♪ ♪\n\nMore words.",
                    max_chunk_chars=20)
    assert caught.value.code == "invalid_text" and "♪" in caught.value.message
    fifo = tmp_path / "book.txt"
    os.mkfifo(fifo)
    with pytest.raises(CbxError) as caught:
        cbx.project("fifo", text=fifo)                 # refused at once, never opened
    assert caught.value.code == "invalid_text"
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    with pytest.raises(CbxError) as caught:
        cbx.project("zero", text=tmp_path / "zero.txt")
    assert caught.value.code == "invalid_text"
    assert {p["name"] for p in cbx.projects()} == {"fenced", "packed"}

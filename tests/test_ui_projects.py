"""The dashboard's Projects section (issue 12) on the fake backend: the controller's
rules and the widgets, with the real cbx.longform on disk and only the model faked."""
from __future__ import annotations

import base64
import re
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ipywidgets")

from cbx.errors import InvalidText  # noqa: E402
from cbx.ui.controller import DashboardController  # noqa: E402
from cbx.ui.view import Dashboard  # noqa: E402
from tests.test_ui_controller import (SR, FakeBackend, FakeClock, backend,  # noqa: E402,F401
                                      env, wait_for)

BOOK = (b"# Chapter one\n\nThe first line is here. The *second* one follows.\n\n"
        b"# Chapter two\n\nAnd a [last](http://x) line.\n")
TWO = "The first line is said here. The second line is said here."   # 2 chunks of 50
CHUNKS = ["Chapter one.", "The first line is here. The second one follows.",
          "Chapter two.", "And a last line."]


def controller(backend, **kwargs) -> DashboardController:
    kwargs.setdefault("schedule", FakeClock())
    c = DashboardController(backend, idle_unload_minutes=15, **kwargs)
    c.set_max_chunk_chars(50)
    return c


def fail_from_call(backend, number: int) -> None:
    """Make the backend's speak() fail from its `number`-th call on (1-based)."""
    from cbx.errors import GenerationFailed

    speak = backend.speak

    def failing(*args, **kwargs):
        if len(backend.speak_calls) + 1 >= number:
            raise GenerationFailed("The fake model failed.", "Try again.")
        return speak(*args, **kwargs)

    backend.speak = failing


def made_texts(backend) -> list[str]:
    return [call["text"] for call in backend.speak_calls]


def test_upload_markdown_generate_as_project_lists_every_chunk(backend, env):
    c = controller(backend, threaded=False)
    assert c.upload_project_text(BOOK, "My Book.md")
    assert c.project_source[0] == "My Book.md" and c.project_source[2] == "markdown"
    c.text = "The text box is not the source while a file is."
    assert c.generate_project()
    assert c.error is None, c.error
    project = c.project
    assert project.name == "My Book" and project.finished
    assert [chunk.text for chunk in project.chunks] == CHUNKS == made_texts(backend)
    assert all(chunk.duration == pytest.approx(0.5, abs=0.01) and not chunk.flags
               for chunk in project.chunks)
    seeds = [chunk.seed for chunk in project.chunks]
    assert seeds == list(range(seeds[0], seeds[0] + 4)), "chunk i has seed + i"
    assert (env / "outputs" / "projects" / "My-Book" / "chunks" / "0003.wav").is_file()
    assert "complete: 4 chunks" in c.status_line
    assert c.projects[0]["name"] == "My Book" and c.projects[0]["missing"] == []


def test_a_bad_text_file_is_invalid_text_and_keeps_the_source(backend):
    c = controller(backend, threaded=False)
    assert c.upload_project_text(BOOK, "book.md")
    assert not c.upload_project_text(b"\x00\x01binary", "book.txt")
    assert isinstance(c.error, InvalidText) and "binary" in c.error.message
    assert not c.upload_project_text(b"text", "book.docx")
    assert ".txt, .md and .srt" in c.error.message
    c.refuse_project_upload("huge.md", 30 * 2**20)
    assert isinstance(c.error, InvalidText) and "30 MB" in c.error.message
    assert c.project_source[0] == "book.md"


def test_stopped_mid_way_then_resumed_on_a_fresh_page_makes_only_the_rest(backend):
    """A reload or kernel restart is a new controller: it finds the unfinished project
    on disk and Resume makes only the missing chunks."""
    c = controller(backend)
    c.text = "One small line. Two small lines. Three small lines."
    backend.gate = threading.Event()
    assert c.generate_project()
    assert backend.chunk_started.wait(10)
    backend.chunk_started.clear()
    backend.gate.set()                                # chunk 1 finishes
    assert backend.chunk_started.wait(10)             # chunk 2 has started
    assert c.cancel()
    backend.gate.set()                                # chunk 2 sees the cancel
    assert c.wait(10)
    assert "Resume" in c.status_line and c.project.done == 1
    backend.gate = None

    fresh = controller(backend, threaded=False)      # the reloaded page
    assert fresh.unfinished_projects == ["One-small-line-Two"]
    assert fresh.open_project("One-small-line-Two")
    assert fresh.project.done == 1 and not fresh.project.finished
    calls = len(backend.speak_calls)
    assert fresh.resume_project()
    assert fresh.project.finished and fresh.error is None
    assert made_texts(backend)[calls:] == ["Three small lines."]
    assert fresh.unfinished_projects == []


def test_regenerate_and_edit_change_only_that_chunk(backend):
    c = controller(backend, threaded=False)
    c.text = ("The first line is said here. The second line is said here. "
              "The third line is said here.")
    c.generate_project()
    before = c.project.chunks
    assert c.regenerate_chunk(1)
    after = c.project.chunks
    assert after[1].seed == before[1].seed + 1 and after[1].key != before[1].key
    assert [after[i].key for i in (0, 2)] == [before[i].key for i in (0, 2)]
    assert "Chunk 2 made again" in c.status_line

    assert c.regenerate_chunk(2, text="A new third line.")
    edited = c.project.chunks
    assert edited[2].text == "A new third line." and edited[2].key != after[2].key
    assert [edited[i].key for i in (0, 1)] == [after[i].key for i in (0, 1)]
    assert made_texts(backend)[-1] == "A new third line."
    assert not c.regenerate_chunk(0, text="   ")
    assert c.error.code == "invalid_setting" and c.project.chunks[0].key == edited[0].key
    assert c.regenerate_chunk(0, text="A sentence that is long. " * 4)
    assert c.error.code == "invalid_text" and "not one" in c.error.message
    assert c.project.chunks[0] == edited[0], "a refused edit moves nothing aside"


def test_export_mp3_at_a_speech_rate_reads_back_with_the_right_length(backend, tmp_path):
    import soundfile as sf

    c = controller(backend, threaded=False)
    c.text = TWO
    c.generate_project()
    c.set_export(suffix=".mp3", rate=2.0)
    assert c.export_project()
    assert c.error is None, c.error
    export = c.export
    assert export.filename.endswith(".mp3") and export.mime == "audio/mpeg"
    path = tmp_path / export.filename
    path.write_bytes(export.data)
    audio, rate = sf.read(str(path))
    # two 0.5 s chunks and one 0.3 s pause, all at 2x
    assert rate == SR and len(audio) / rate == pytest.approx(1.3 / 2, abs=0.03)
    with pytest.raises(Exception, match="No export format"):
        c.set_export(suffix=".wma")


def test_export_refuses_an_unfinished_project_with_the_fix(backend):
    c = controller(backend, threaded=False)
    c.text = TWO
    fail_from_call(backend, 2)
    c.generate_project()
    assert c.error.code == "generation_failed" and c.project.done == 1
    assert c.export_project()
    assert c.error.code == "project_incomplete" and "Resume" in c.error.solution
    assert c.export is None


def test_one_off_generations_get_the_speech_rate_and_still_reach_the_history(backend):
    c = controller(backend, threaded=False)
    c.text = "Hello there."
    c.set_rate(1.5)
    c.generate()
    assert backend.speak_calls[-1]["rate"] == 1.5
    assert c.history[0].duration == pytest.approx(0.5 / 1.5, abs=0.01)
    assert '"speech_rate": 1.5' in c.history[0].sidecar_json
    c.generate_project()
    c.generate()
    assert [e.number for e in c.history] == [2, 1], "projects stay out of the history"
    with pytest.raises(Exception, match="rate"):
        c.set_rate(3.0)


# ------------------------------------------------------------------ widgets

def _audio(widget) -> list:
    found = [widget] if type(widget).__name__ == "Audio" else []
    for child in getattr(widget, "children", ()):
        found += _audio(child)
    return found


def test_projects_card_rows_players_resume_and_download(backend):
    view = Dashboard(controller(backend, threaded=False))
    card = view.projects
    assert card.export_box.layout.display == "none" and not _audio(card.box)
    assert [o[1] for o in card.format.options] == [".wav", ".flac", ".mp3", ".ogg", ".opus"]
    assert (card.rate.min, card.rate.max) == (0.5, 2.0)
    assert (view.rate.min, view.rate.max, view.rate.value) == (0.5, 2.0, 1.0)
    view.text.value = TWO
    card.generate.click()
    rows = card.chunks.children
    assert len(rows) == 2
    assert "The first line" in rows[0].children[0].value and "seed" in rows[0].children[0].value
    players = _audio(card.box)
    assert len(players) == 2 and all(p.value[:4] == b"RIFF" and not p.loop
                                     and not p.autoplay for p in players)
    assert card.resume.layout.display == "none" and not card.export.disabled
    assert card.progress.value == 1.0

    first_player = rows[0].children[1].children[0]
    row = card._rows[1]
    row.buttons[0].click()                          # Regenerate chunk 2
    assert card.chunks.children[0].children[1].children[0] is first_player, \
        "other rows keep their players"
    row = card._rows[1]
    row.buttons[1].click()                          # Edit text
    assert row.edit_box.layout.display is None
    row.editor.value = "Two edited lines."
    row.buttons[2].click()
    assert "Two edited lines." in card.chunks.children[1].children[0].value

    card.format.value = ".flac"
    card.export.click()
    link = re.search(r"href='data:audio/flac;base64,([^']+)'", card.download.value)
    assert link and "download='The-first-line-is.flac'" in card.download.value
    assert base64.b64decode(link.group(1))[:4] == b"fLaC"
    view.close()


def test_a_reloaded_page_offers_resume_for_the_unfinished_project(backend):
    first = controller(backend, threaded=False)
    first.text = TWO
    fail_from_call(backend, 2)
    first.generate_project()
    del backend.speak                     # the model works again
    view = Dashboard(controller(backend, threaded=False))
    card = view.projects
    assert ("The-first-line-is (1/2 chunks, unfinished)", "The-first-line-is") in \
        card.saved.options
    card.saved.value = "The-first-line-is"
    assert card.resume.layout.display is None and not card.resume.disabled
    assert card.export.disabled
    assert len(_audio(card.box)) == 1, "only the made chunk has a player"
    card.resume.click()
    assert view.c.project.finished and len(_audio(card.box)) == 2
    assert card.resume.layout.display == "none"
    view.close()


def test_resume_while_another_kernel_holds_the_project_follows_it_then_takes_over(
        backend, monkeypatch):
    """After a reload, the old kernel may still be making the project (Voila does not
    always stop it): Resume waits, showing its chunks, instead of failing."""
    from filelock import FileLock

    from cbx.ui import projects

    monkeypatch.setattr(projects, "PROJECT_LOCK_POLL_SECONDS", 0.2)
    first = controller(backend, threaded=False)
    first.text = TWO
    fail_from_call(backend, 2)
    first.generate_project()
    del backend.speak
    folder = backend.list_projects()[0]["folder"]
    other_kernel = FileLock(str(Path(folder) / ".lock"))
    other_kernel.acquire()
    c = controller(backend)
    assert c.open_project("The-first-line-is") and c.resume_project()
    wait_for(lambda: "Another kernel" in c.status_line)
    assert c.busy == "generating" and c.project.done == 1
    other_kernel.release()
    assert c.wait(10)
    assert c.project.finished and c.error is None
    assert "complete" in c.status_line

"""The dashboard's Projects section (issues 12 and 20) on the fake backend: the
controller's rules and the widgets, with the real cbx.longform on disk and only the
model faked."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("ipywidgets")

from cbx.errors import InvalidText  # noqa: E402
from cbx.ui import projects  # noqa: E402
from cbx.ui.controller import DashboardController  # noqa: E402
from cbx.ui.view import Dashboard  # noqa: E402
from tests.support.dashboard import FakeClock, wait_for  # noqa: E402
from tests.support.fake_backend import SR, backend, env  # noqa: E402,F401

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


def served_file(backend, url: str) -> Path:
    """The file a download link names (the server serves the output folder)."""
    path = unquote(urlsplit(url).path)
    assert path.startswith("/cbx/outputs/"), url
    return Path(backend.output_dir()) / path.removeprefix("/cbx/outputs/")


def fire_polls(clock: FakeClock) -> int:
    """Let every pending holder poll run once; how many ran."""
    polls = [h for h in clock.pending if h.delay == projects.HOLDER_POLL_SECONDS]
    for handle in polls:
        callback, handle.callback = handle.callback, None
        callback()
    return len(polls)


@contextlib.contextmanager
def another_process_holds(backend, name: str):
    """A second process holding the project's writer lock, as another tab's kernel
    making it would (its pid and host recorded in the store)."""
    folder = next(p["folder"] for p in backend.list_projects() if p["name"] == name)
    script = ("import sys\nfrom pathlib import Path\n"
              "from cbx.longform.store import Store, writer\n"
              f"folder = Path({folder!r})\nstore = Store(folder)\n"
              f"with writer(folder, store, {name!r}, 'run'):\n"
              "    print('held', flush=True)\n    sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            cwd=str(Path(__file__).resolve().parent.parent))
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.stdin.close()
        proc.wait(30)


def test_upload_markdown_generate_as_project_lists_every_chunk(backend, env):
    c = controller(backend, threaded=False)
    assert c.upload_project_text(BOOK, "My Book.md")
    assert c.project_source[0] == "My Book.md" and c.project_source[2] == "markdown"
    c.text = "The text box is not the source while a file is."
    assert c.generate_project()
    assert c.error is None, c.error
    project = c.project
    assert project.name == "My Book" and project.finished and project.total == 4
    assert [chunk.text for chunk in project.chunks] == CHUNKS == made_texts(backend)
    assert all(chunk.duration == pytest.approx(0.5, abs=0.01) and not chunk.flags
               and chunk.state == "done" for chunk in project.chunks)
    seeds = [chunk.seed for chunk in project.chunks]
    assert seeds == list(range(seeds[0], seeds[0] + 4)), "chunk i has seed + i"
    takes = {chunk.wav.parent for chunk in project.chunks}
    assert len(takes) == 1 and takes.pop().parent.parent == env / "outputs" / "projects"
    assert all(chunk.wav.name == f"{chunk.key}.wav" for chunk in project.chunks)
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
    assert c.project.chunks[0] == edited[0], "a refused edit changes nothing"


def test_cancel_during_save_and_remake_or_regenerate_keeps_the_earlier_take(backend):
    c = controller(backend)
    card = Dashboard(c).projects
    c.text = TWO
    assert c.generate_project() and c.wait(10)
    assert card.cancel.layout.display == "none"
    before = c.project.chunks[1]
    backend.gate = threading.Event()
    backend.chunk_started.clear()
    card.rows[1].edit.click()
    card.editor.text.value = "The second line is said again."
    card.editor.save.click()                           # "Save and remake"
    assert backend.chunk_started.wait(10)
    assert c.can_cancel and c.project_running, "Cancel works while a chunk is remade"
    wait_for(lambda: card.cancel.layout.display is None and not card.cancel.disabled)
    card.cancel.click()
    backend.gate.set()
    assert c.wait(10)
    assert c.error is None, c.error
    assert c.status_line == "Cancelled. Chunk 2 keeps its earlier take."
    assert c.project.chunks[1] == before and c.project.finished
    assert backend.speak_calls[-1]["text"] == "The second line is said again."
    wait_for(lambda: card.cancel.layout.display == "none")

    backend.chunk_started.clear()
    assert c.regenerate_chunk(1)                       # and Regenerate, its next seed
    assert backend.chunk_started.wait(10)
    assert c.cancel()
    backend.gate.set()
    assert c.wait(10)
    assert c.status_line == "Cancelled. Chunk 2 keeps its earlier take."
    assert c.project.chunks[1] == before
    assert backend.speak_calls[-1]["seed"] == before.seed + 1, "the next seed was tried"


def test_export_mp3_at_a_speech_rate_downloads_from_the_output_folder(backend, env):
    import soundfile as sf

    c = controller(backend, threaded=False)
    c.text = TWO
    c.generate_project()
    c.set_export(suffix=".mp3", rate=2.0)
    assert c.export_project()
    assert c.error is None, c.error
    export = c.export
    assert export.filename == "The-first-line-is.mp3"
    assert export.url.startswith("/cbx/outputs/projects/") and export.url.endswith(
        "/exports/The-first-line-is.mp3?download=1")
    path = served_file(backend, export.url)
    audio, rate = sf.read(str(path))
    # two 0.5 s chunks and one 0.3 s pause, all at 2x
    assert rate == SR and len(audio) / rate == pytest.approx(1.3 / 2, abs=0.03)
    assert str(env) not in c.status_line, "no path of the machine on the page"
    assert c.export_project() and c.export.filename == "The-first-line-is-2.mp3", \
        "a second export never replaces the first"
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


def make_long_project(backend, chunks: int, made: int) -> DashboardController:
    """A project of `chunks` one-sentence chunks of which the first `made` are made."""
    c = controller(backend, threaded=False)
    c.text = " ".join(f"Sentence number {i} is said here." for i in range(chunks))
    fail_from_call(backend, made + 1)
    c.generate_project()
    del backend.speak                     # the model works again
    assert c.project.total == chunks and c.project.done == made
    return c


def test_a_long_project_is_shown_a_page_at_a_time(backend):
    c = make_long_project(backend, 120, 70)
    project = c.project
    assert project.start == 0 and len(project.chunks) == projects.PAGE_SIZE
    assert project.missing == tuple(range(70, 120))
    c.turn_page(1)
    assert (c.project.start, c.project.stop) == (50, 100)
    assert [ch.state for ch in c.project.chunks[19:21]] == ["done", "missing"]
    c.turn_page(1)
    assert (c.project.start, c.project.stop) == (100, 120)
    c.turn_page(1)
    assert c.project.start == 100, "no page after the last"
    c.jump_to("missing")
    assert c.project.start == 50, "the first missing chunk's page, from the last page"
    c.jump_to("missing")
    assert c.project.start == 100, "the next missing chunk after the page shown"
    c.show_chunks(10_000)
    assert c.project.start == 100
    c.jump_to("flagged")
    assert c.project.start == 100, "nothing flagged: nowhere to go"


def test_a_damaged_take_shows_as_damaged_with_why_and_resume_remakes_it(backend):
    c = controller(backend, threaded=False)
    c.text = TWO
    c.generate_project()
    take = c.project.chunks[1].wav
    take.write_bytes(take.read_bytes()[:100])            # a disk error, a bad copy
    fresh = controller(backend, threaded=False)
    assert fresh.open_project("The-first-line-is")
    chunk = fresh.project.chunks[1]
    assert chunk.state == "damaged" and "bytes" in chunk.why and chunk.wav is None
    assert fresh.project.damaged == (1,) and fresh.project.missing == (1,)
    assert not fresh.project.finished
    view = Dashboard(fresh)
    card = view.projects
    assert "damaged:" in card.rows[1].info.value and "Resume makes it again" in \
        card.rows[1].info.value
    assert "1 damaged" in card.summary.value
    assert card.pages.jumps["damaged"].layout.display is None
    assert card.rows[1].play.disabled and card.rows[1].regenerate.disabled
    card.resume.click()
    assert fresh.project.finished and fresh.project.chunks[1].state == "done"
    view.close()


def test_chunks_made_are_drawn_a_few_times_a_second_and_always_at_the_end(backend):
    clock = FakeClock()
    c = controller(backend, threaded=False, schedule=clock)
    c.text = " ".join(f"Sentence number {i} is said here." for i in range(12))
    reads = []
    overview = backend.project_overview
    backend.project_overview = lambda *a, **k: reads.append(a) or overview(*a, **k)
    events = []
    c.observe(lambda event: event == "project" and events.append(c.project.done))
    c.generate_project()
    assert c.project.finished and c.project.done == 12
    # shown once when created, once for the first chunk (then the rest fold into a
    # trailing redraw, dropped at the end), and once with the final state
    assert len(reads) == 3, reads
    assert events[-1] == 12
    assert not [h for h in clock.pending if h.delay < projects.HOLDER_POLL_SECONDS], \
        "no redraw left pending after the run"


def test_the_holder_poll_reads_only_the_holder_while_nobody_changes_the_project(backend):
    clock = FakeClock()
    c = controller(backend, threaded=False, schedule=clock)
    c.text = TWO
    c.generate_project()
    calls = []
    for method in ("project_overview", "project_holder"):
        real = getattr(backend, method)
        setattr(backend, method,
                lambda *a, real=real, method=method, **k: calls.append(method) or real(*a, **k))
    events = []
    c.observe(events.append)
    for _ in range(3):
        assert fire_polls(clock) == 1, "one poll chain, rescheduled each time"
    assert calls == ["project_holder"] * 3 and events == []
    c.close()
    assert fire_polls(clock) == 0, "a closed page polls no more"


def test_another_process_making_the_project_disables_its_changes_until_it_is_done(
        backend):
    """Issue 20: two tabs (two kernels) on one project. While the other one holds it,
    the page says who and disables Regenerate, Edit and Resume; a click that races
    still gets project_busy from the store, losing nothing; then it all comes back."""
    clock = FakeClock()
    first = controller(backend, threaded=False, schedule=clock)
    first.text = TWO
    fail_from_call(backend, 2)
    first.generate_project()
    del backend.speak
    c = controller(backend, threaded=False, schedule=clock)
    view = Dashboard(c)
    card = view.projects
    card.saved.value = "The-first-line-is"
    row = card.rows[0]
    assert c.project.holder is None and not row.regenerate.disabled
    assert not card.resume.disabled
    with another_process_holds(backend, "The-first-line-is") as pid:
        fire_polls(clock)
        assert c.project.holder["pid"] == pid
        summary = card.summary.value
        assert f"Being made by another tab or process (pid {pid}" in summary
        assert row.regenerate.disabled and row.edit.disabled and card.resume.disabled
        assert not row.play.disabled, "listening changes nothing"
        key = c.project.chunks[0].key
        assert c.regenerate_chunk(0)                   # a click that raced the poll
        assert c.error.code == "project_busy" and str(pid) in c.error.message
        assert c.project.chunks[0].key == key
        assert c.resume_project()
        assert c.error.code == "project_busy" and c.project.done == 1
    fire_polls(clock)
    assert c.project.holder is None
    assert "another tab" not in card.summary.value
    assert not row.regenerate.disabled and not card.resume.disabled
    card.resume.click()
    assert c.project.finished and c.error is None
    view.close()


# ------------------------------------------------------------------ widgets

def _audio(widget) -> list:
    found = [widget] if type(widget).__name__ == "Audio" else []
    for child in getattr(widget, "children", ()):
        found += _audio(child)
    return found


def test_projects_card_rows_play_regenerate_edit_and_download(backend):
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
    assert "The first line" in card.rows[0].info.value and "seed" in card.rows[0].info.value
    assert not _audio(card.box), "no chunk's audio reaches the page before Play"
    assert card.resume.layout.display == "none" and not card.export.disabled
    assert card.progress.value == 1.0
    assert "chunks 1&ndash;2 of 2" in card.pages.where.value
    assert card.pages.previous.disabled and card.pages.next.disabled

    card.rows[1].play.click()
    players = _audio(card.box)
    assert len(players) == 1 and players[0].autoplay and not players[0].loop
    assert players[0].value == view.c.project.chunks[1].wav.read_bytes()
    assert _audio(card.rows[1].box) == players, "the one player opens under its row"
    card.rows[0].play.click()
    assert [p.value for p in _audio(card.box)] == [view.c.project.chunks[0].wav.read_bytes()]
    assert _audio(card.rows[0].box) and not _audio(card.rows[1].box)

    first_box = card.rows[0].box
    card.rows[1].regenerate.click()
    assert card.chunks.children[0] is first_box, "rows are reused, not rebuilt"
    card.rows[1].edit.click()
    assert card.editor.box in card.rows[1].box.children
    card.editor.text.value = "Two edited lines."
    card.editor.save.click()
    assert "Two edited lines." in card.rows[1].info.value
    card.editor.close_button.click()
    assert card.editor.box not in card.rows[1].box.children

    card.format.value = ".flac"
    card.export.click()
    link = card.download.value
    assert "data:" not in link
    assert "download='The-first-line-is.flac'" in link and "?download=1'" in link
    url = link.split("href='")[1].split("'")[0]
    assert served_file(backend, url).read_bytes()[:4] == b"fLaC"
    view.close()


def test_a_long_project_draws_one_page_of_rows(backend):
    c = make_long_project(backend, 120, 70)
    view = Dashboard(c)
    card = view.projects
    assert len(card.chunks.children) == projects.PAGE_SIZE == len(card.rows)
    assert "chunks 1&ndash;50 of 120" in card.pages.where.value
    assert "70 of 120 chunks made" in card.summary.value
    assert card.pages.previous.disabled and not card.pages.next.disabled
    assert card.pages.jumps["missing"].description == "Next missing (50)"
    assert card.pages.jumps["flagged"].layout.display == "none"
    boxes = card.chunks.children
    card.rows[3].play.click()
    card.rows[5].edit.click()
    assert _audio(card.rows[3].box) and card.editor.box in card.rows[5].box.children
    card.pages.next.click()
    assert not _audio(card.box) and card.editor.row is None, \
        "the player and the editor leave with their chunks' page"
    assert "chunks 51&ndash;100 of 120" in card.pages.where.value
    assert card.chunks.children == boxes, "the same rows show the next page"
    assert card.rows[0].info.value.startswith("<div class='cbx-chunk-info'><b>51.</b>")
    assert card.rows[25].regenerate.disabled and card.rows[25].play.disabled  # chunk 76
    card.pages.next.click()
    assert len(card.chunks.children) == 20 and card.pages.next.disabled
    card.pages.jumps["missing"].click()
    assert "chunks 51&ndash;100" in card.pages.where.value
    card.pages.previous.click()
    assert _audio(card.rows[3].box), "and come back with it"
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
    assert [row.play.disabled for row in card.rows] == [False, True]
    card.resume.click()
    assert view.c.project.finished and not card.rows[1].play.disabled
    assert card.resume.layout.display == "none"
    view.close()


def test_the_page_builds_beside_damaged_projects_and_lists_the_rest(backend):
    """Issue 20 (9): one malformed project once made the dashboard fail to build with a
    KeyError. The page builds, lists the sound projects, and the damaged ones are left
    out of the list without hiding the others."""
    import sqlite3

    import cbx

    good = cbx.project("good book", text=TWO)
    garbage = cbx.project("garbage", text=TWO)
    odd = cbx.project("odd settings", text=TWO)
    for job in (good, garbage, odd):
        job.close()
    (garbage.folder / "project.db").write_bytes(b"not a database" * 64)
    with sqlite3.connect(odd.folder / "project.db") as db:
        db.execute("UPDATE meta SET value = '[1]' WHERE key = 'options'")
    view = Dashboard(controller(backend, threaded=False))
    listed = [value for _label, value in view.projects.saved.options if value]
    assert listed == ["good book"]
    assert view.c.error is None
    view.close()

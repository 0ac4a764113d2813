"""The dashboard's state machine driven by a fake backend (fast, no model, no browser).

The fake (tests/support/fake_backend.py) replaces only the model: status, voices, text
splitting, Result, saving and WAV encoding are the real cbx code, so what these tests
see is what the page shows.
"""
from __future__ import annotations

import io
import json
import threading
import time
import wave

import numpy as np
import pytest

from cbx.errors import GenerationFailed, InvalidVoiceFile
from cbx.engine.synth import sidecar_path
from cbx.state import ModelState
from cbx.text import DEFAULT_FIRST_CHUNK_CHARS, split_text
from cbx.ui import playback, render
from cbx.ui.session import BUILTIN, GENERATING, parse_seed
from cbx.variants import VARIANTS
from tests.support.dashboard import FakeClock, clip_bytes, make_controller, wait_for
from tests.support.fake_backend import SR, FakeBackend
from tests.support.fake_backend import backend, env  # noqa: F401 (fixtures)


# --------------------------------------------------------------------------- tests

def test_initial_state_and_idle_unload_wired(backend):
    c, _ = make_controller(backend)
    assert c.can_generate and c.can_load
    assert not c.can_cancel and not c.can_unload
    assert backend.idle_minutes == 15
    assert backend.listeners, "the controller must listen to the model manager"
    assert c.problems() == []
    assert c.health.weights["original"].complete


def test_missing_weights_is_a_problem_with_the_fix(env):
    backend = FakeBackend(env / "empty_models", env / "outputs")
    c, _ = make_controller(backend)
    codes = [p.code for p in c.problems()]
    assert codes == ["model_files_missing"]
    assert "setup_env.py" in c.problems()[0].solution


def test_a_pasted_novel_is_counted_once_typing_pauses_not_on_every_keystroke(backend):
    """Issue 15 (14): the chunk count ran on every keystroke; for a long text it waits
    for a pause, on the timer, and only the last text is counted."""
    from cbx.ui.textactions import INSTANT_COUNT_CHARS

    clock = FakeClock()
    c, events = make_controller(backend, schedule=clock)
    counted = []
    real_split = backend.split_text
    backend.split_text = lambda text, *a, **k: counted.append(len(text)) or \
        real_split(text, *a, **k)
    novel = "It was a dark and stormy night. " * (INSTANT_COUNT_CHARS // 16)
    for end in range(len(novel) - 5, len(novel) + 1):      # six keystrokes
        c.set_text(novel[:end])
        assert c.text == novel[:end], "the text itself is kept at once"
    assert counted == [] and c.text_info["chunks"] is None
    assert "counting chunks" in render.text_info_html(c.text_info)
    while clock.pending:
        clock.fire()
    assert counted == [len(novel)], "only the last text is counted"
    assert c.text_info["chunks"] > 100 and c.text_info["chars"] == len(novel)
    c.set_text("Short again.")
    assert c.text_info["chunks"] == 1, "short texts are counted at once"


def test_text_info_counts_chunks(backend):
    c, events = make_controller(backend)
    c.set_max_chunk_chars(60)
    c.set_text("First sentence is here. Second sentence is here. Third one ends it all.")
    assert c.text_info["chars"] == 71
    assert c.text_info["chunks"] >= 2
    assert c.text_info["seconds"] > 0
    assert "text" in events


def test_generate_runs_in_background_and_lands_in_history(backend, env):
    c, events = make_controller(backend)
    assert c.upload_voice(clip_bytes(env), "My Voice!.wav")
    c.set_max_chunk_chars(60)
    c.set_text("First sentence is here. Second sentence is here. Third one ends it all.")
    c.seed_text = "42"
    backend.gate = threading.Event()
    assert c.generate()
    backend.chunk_started.wait(5)
    assert c.busy == GENERATING
    assert not c.can_generate and c.can_cancel and not c.can_load
    assert c.generate() is False, "a second click must not queue work"
    wait_for(lambda: c.progress and c.progress["chunk"] == 1)
    assert c.progress["total"] == c.text_info["chunks"]
    for _ in range(c.text_info["chunks"]):
        backend.gate.set()
        time.sleep(0.05)
    assert c.wait(10)
    assert c.busy is None and c.can_generate and not c.can_cancel
    assert c.error is None, c.error
    assert len(c.history) == 1 and c.current is c.history[0]
    entry = c.current
    assert entry.seed == 42 and entry.voice == c.voice_choice
    assert backend.speak_calls[0]["voice"].name == c.voice_choice
    with wave.open(io.BytesIO(entry.wav_bytes)) as wf:
        assert wf.getframerate() == SR
        assert wf.getnframes() == int(0.5 * SR) * c.text_info["chunks"]
    assert entry.saved_path.is_file()
    assert entry.saved_path.parent == env / "outputs"
    sidecar = json.loads(sidecar_path(entry.saved_path).read_text())
    assert sidecar["seed"] == 42
    assert entry.url == f"/cbx/outputs/{entry.saved_path.name}?download=1"
    assert entry.sidecar_url == f"/cbx/outputs/{entry.saved_path.name}.json?download=1"
    assert f"Saved as {entry.saved_path}" in c.status_line, "a folder outside the checkout"
    assert json.loads(entry.sidecar_json)["seed"] == 42
    assert "progress" in events and "chunk" in events and "history" in events
    assert "Done" in c.status_line


def test_generate_loads_on_first_use_with_status_line(backend):
    c, _ = make_controller(backend)
    seen = []
    c.observe(lambda ev: ev == "status" and seen.append(c.status_line))
    c.set_text("Hello there.")
    c.generate()
    c.wait(10)
    assert any("loads the model on first use" in s for s in seen), seen
    assert c.model.state is ModelState.READY


def test_cancel_stops_and_keeps_everything(backend, env):
    c, _ = make_controller(backend)
    c.set_max_chunk_chars(60)
    c.set_text("First sentence is here. Second sentence is here. Third one ends it all.")
    backend.gate = threading.Event()
    c.generate()
    backend.chunk_started.wait(5)
    assert c.cancel()
    assert not c.can_cancel, "Cancel is pressed once"
    backend.gate.set()
    assert c.wait(10)
    assert "Cancelled" in c.status_line
    assert c.history == [] and c.error is None
    assert c.can_generate and not c.can_cancel
    assert c.text.startswith("First sentence")


def test_errors_keep_text_voice_and_history(backend, env):
    c, _ = make_controller(backend)
    c.upload_voice(clip_bytes(env), "keeper.wav")
    c.set_text("Hello there.")
    c.generate()
    c.wait(10)
    assert len(c.history) == 1
    try:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
    except RuntimeError as exc:
        backend.fail_with = GenerationFailed.from_exception(exc, "Use float16.")
    c.generate()
    c.wait(10)
    assert c.error is not None and c.error.code == "generation_failed"
    assert "RuntimeError" in c.error.traceback
    assert c.text == "Hello there." and c.voice_choice == "keeper"
    assert len(c.history) == 1
    assert c.can_generate


def test_unexpected_exception_becomes_generation_failed(backend):
    c, _ = make_controller(backend)
    backend.fail_with = ZeroDivisionError("boom")
    c.set_text("Hello.")
    c.generate()
    c.wait(10)
    assert c.error.code == "generation_failed"
    assert "ZeroDivisionError" in c.error.traceback


def test_bad_seed_is_shown_and_nothing_starts(backend):
    c, _ = make_controller(backend)
    c.set_text("Hello.")
    c.seed_text = "forty-two"
    assert c.generate() is False
    assert c.error.code == "invalid_setting"
    assert backend.speak_calls == []
    assert parse_seed("") is None and parse_seed(" 7 ") == 7
    with pytest.raises(Exception):
        parse_seed("-1")


def test_invalid_upload_shows_invalid_voice_file(backend, env):
    c, _ = make_controller(backend)
    c.upload_voice(clip_bytes(env), "good.wav")
    assert c.upload_voice(b"this is a text file, not audio\n" * 20, "notes.wav") is False
    assert isinstance(c.error, InvalidVoiceFile)
    assert c.error.code == "invalid_voice_file"
    assert c.voice_choice == "good", "the previous voice stays selected"


def test_upload_is_validated_saved_and_selected(backend, env):
    c, _ = make_controller(backend)
    assert c.voice_options() == []
    assert c.upload_voice(clip_bytes(env), "../../evil name.wav")
    assert ".." not in c.voice_choice and "/" not in c.voice_choice
    assert c.voice_info.path.is_file()
    assert [v for _, v in c.voice_options()] == [c.voice_choice]
    c.select_voice(BUILTIN)
    assert c.voice_info is None


def test_variant_switch_resets_defaults(backend):
    c, _ = make_controller(backend)
    c.set_setting("temperature", 1.7)
    c.set_variant("turbo")
    assert c.settings == VARIANTS["turbo"].defaults
    assert set(c.ignored_settings()) == {"exaggeration", "cfg_weight", "min_p"}
    c.set_variant("multilingual")
    assert c.language == "en"
    c.set_text("Bonjour.")
    c.language = "fr"
    c.generate()
    c.wait(10)
    call = backend.speak_calls[-1]
    assert call["language"] == "fr" and call["variant"] == "multilingual"


def test_ignored_settings_are_not_sent(backend):
    c, _ = make_controller(backend)
    c.set_variant("turbo")
    c.set_text("Hello.")
    c.generate()
    c.wait(10)
    assert not {"exaggeration", "cfg_weight", "min_p"} & set(backend.speak_calls[-1]["settings"])


def test_load_and_unload_report_memory(backend):
    c, _ = make_controller(backend)
    assert c.load()
    c.wait(10)
    assert c.model.ready and c.can_unload
    assert "loaded" in c.status_line
    assert c.unload()
    c.wait(10)
    assert c.model.state is ModelState.NOT_LOADED
    assert "3000 -> 900" in c.model_note
    assert not c.can_unload


def test_load_prepares_the_selected_voice_so_the_first_click_does_not(backend, env):
    """Issue 21: a user's first Generate after Load was slower than the library's
    first call; Load now computes the saved voice's conditionals, the built-in voice
    needs none, and a voice that cannot be prepared is reported with its code."""
    c, _ = make_controller(backend)
    assert c.load() and c.wait(10)
    assert backend.prepared == [] and "loaded on" in c.status_line      # built-in voice
    assert c.unload() and c.wait(10)
    assert c.upload_voice(clip_bytes(env), "narrator.wav")
    c.set_setting("exaggeration", 0.8)
    assert c.load() and c.wait(10)
    assert backend.prepared == [(c.voice_choice, 0.8)]
    assert c.error is None and "loaded on" in c.status_line
    assert c.unload() and c.wait(10)
    backend.prepare_voice = lambda voice, exaggeration: (_ for _ in ()).throw(
        InvalidVoiceFile("The clip changed on disk.", "Add the clip again."))
    assert c.load() and c.wait(10)
    assert c.model.ready and c.error.code == "invalid_voice_file"


def test_idle_unload_from_another_thread_updates_the_page(backend):
    c, events = make_controller(backend)
    c.load()
    c.wait(10)
    events.clear()
    t = threading.Thread(target=backend.unload)   # what the manager's watcher does
    t.start()
    t.join()
    assert "model" in events
    assert c.model.state is ModelState.NOT_LOADED
    assert "Unloaded original" in c.model_note


def test_end_session_unloads_then_exits(backend):
    exited = threading.Event()
    c, _ = make_controller(backend, exit_process=exited.set)
    c.load()
    c.wait(10)
    assert c.end_session()
    assert backend.state.state is ModelState.NOT_LOADED
    assert exited.wait(5)
    assert not c.can_generate and not c.can_load
    assert "Reload the page" in c.status_line


def test_history_play_puts_entry_back(backend):
    c, _ = make_controller(backend)
    for text in ("One.", "Two."):
        c.set_text(text)
        c.generate()
        c.wait(10)
    assert [e.number for e in c.history] == [2, 1]
    c.play(1)
    assert c.current.text == "One."


def test_history_keeps_the_newest_results_audio_in_memory_and_reads_older_from_disk(
        backend, monkeypatch):
    from cbx.ui.generation import HISTORY_AUDIO_IN_MEMORY

    c, _ = make_controller(backend, threaded=False)
    made = HISTORY_AUDIO_IN_MEMORY + 3
    for number in range(made):
        c.set_text(f"Result {number} is here.")
        c.generate()
    assert [e.number for e in c.history] == list(range(made, 0, -1))
    kept = [e.wav_bytes is not None for e in c.history]
    assert kept == [True] * HISTORY_AUDIO_IN_MEMORY + [False] * 3
    oldest = c.history[-1]
    c.play(oldest.number)
    assert c.current is oldest and oldest.audio() == oldest.saved_path.read_bytes()
    assert oldest.audio()[:4] == b"RIFF" and oldest.url.endswith(".wav?download=1")

    monkeypatch.setattr(backend, "output_dir", lambda: "/proc/no/such/folder")
    for number in range(HISTORY_AUDIO_IN_MEMORY + 1):
        c.set_text(f"Unsaved {number}.")
        c.generate()
    unsaved = c.history[HISTORY_AUDIO_IN_MEMORY]
    assert unsaved.saved_path is None and unsaved.audio() is None
    c.play(unsaved.number)
    assert c.error.code == "output_not_saved" and f"seed {unsaved.seed}" in c.error.solution
    assert c.current is not unsaved


# ------------------------------------------------------- short first chunk, live play

FIVE_SENTENCES = ("The morning train was late again, so Maria walked along the river. "
                  "She noticed the fog lifting slowly over the old stone bridge. "
                  "A fisherman waved and pointed to the herons near the bank. "
                  "By the time she reached the office, the sun was out. "
                  "It was the best part of her day.")


def test_chunk_hint_and_generation_use_the_short_first_chunk(backend):
    c, _ = make_controller(backend)
    c.set_text(FIVE_SENTENCES)
    assert backend.split_calls[-1] == DEFAULT_FIRST_CHUNK_CHARS
    assert c.text_info["chunks"] == len(split_text(FIVE_SENTENCES)) == 2
    assert len(split_text(FIVE_SENTENCES, first_chunk_chars=None)) == 1
    totals = []
    c.observe(lambda ev: ev == "progress" and c.progress and totals.append(c.progress["total"]))
    assert c.generate() and c.wait(10)
    call = backend.speak_calls[-1]
    assert call["first_chunk_chars"] == DEFAULT_FIRST_CHUNK_CHARS
    assert call["max_chunk_chars"] == c.max_chunk_chars
    assert set(totals) - {0} == {2}, "the progress total matches the hint"
    assert c.current.text == FIVE_SENTENCES


class RecordingPlayer:
    """Stands in for the browser's player: notes each call the live feed makes."""

    def __init__(self):
        self.calls: list[tuple] = []

    def begin(self):
        self.calls.append(("begin",))

    def add(self, block):
        self.calls.append(("add", block))

    def finish(self):
        self.calls.append(("finish",))

    def stop(self):
        self.calls.append(("stop",))

    @property
    def blocks(self) -> list:
        return [call[1] for call in self.calls if call[0] == "add"]

    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]


def live_controller(backend, text: str = "First sentence is here. Second sentence is "
                    "here. Third one ends it all.", max_chars: int = 60
                    ) -> tuple[object, RecordingPlayer]:
    """A controller with a recording player on its live feed and `text` typed in."""
    c, _ = make_controller(backend)
    player = RecordingPlayer()
    c.live.connect(player)
    c.set_max_chunk_chars(max_chars)
    c.set_text(text)
    return c, player


def test_blocks_reach_the_player_as_they_are_made_and_join_into_the_result(backend):
    c, player = live_controller(backend, "First sentence is here. Second sentence is here. "
                                         "Third one ends it all. And a fourth sentence, at last.", 50)
    assert c.text_info["chunks"] == 3
    assert c.live.state == playback.NOT_STARTED and player.calls == []
    backend.gate = threading.Event()
    assert c.generate()
    wait_for(lambda: player.kinds() == ["begin"])
    backend.gate.set()                                   # chunk 1 finishes
    wait_for(lambda: len(player.blocks) == 2)
    assert c.busy == GENERATING, "first audio reaches the player while the rest is made"
    assert [b.chunk for b in player.blocks] == [1, 1] and c.live.state == playback.STREAMING
    for made in (4, 6):
        backend.gate.set()
        wait_for(lambda: len(player.blocks) == made)
    assert c.wait(10)
    assert c.error is None
    assert player.kinds() == ["begin"] + ["add"] * 6 + ["finish"]
    blocks = player.blocks
    assert [b.chunk for b in blocks] == [1, 1, 2, 2, 3, 3]
    assert [b.last for b in blocks] == [False] * 5 + [True]
    ends = np.cumsum([0] + [len(b.wav) for b in blocks[:-1]]) / blocks[0].sample_rate
    assert [b.start_s for b in blocks] == pytest.approx(list(ends)), "blocks are contiguous"
    with wave.open(io.BytesIO(c.current.wav_bytes)) as saved:
        assert sum(len(b.wav) for b in blocks) == saved.getnframes(), "they join into it"
    assert c.live.state == playback.FINISHED and c.live.blocks == 6
    assert c.live.seconds == pytest.approx(c.current.duration)
    assert c.current is not None, "the finished result keeps its own player and history"


def test_cancel_stops_the_player_and_drops_later_blocks(backend):
    c, player = live_controller(backend)
    backend.gate = threading.Event()
    c.generate()
    backend.gate.set()
    wait_for(lambda: len(player.blocks) == 2)
    assert c.cancel()
    assert player.kinds()[-1] == "stop" and c.live.state == playback.STOPPED
    c.live.add(player.blocks[0])                         # a block made as Cancel arrived
    backend.gate.set()
    assert c.wait(10)
    assert player.kinds() == ["begin", "add", "add", "stop"], "nothing reaches it after"


def test_unload_and_close_stop_a_player_that_still_plays_a_finished_generation(backend):
    c, player = live_controller(backend)
    assert c.generate() and c.wait(10)
    assert player.kinds()[-1] == "finish"
    assert c.unload() and c.wait(10)
    assert player.kinds()[-1] == "stop" and c.live.state == playback.STOPPED
    assert c.generate() and c.wait(10)
    assert player.kinds()[-2:] == ["add", "finish"]
    c.close()
    assert player.kinds()[-1] == "stop"
    c.close()
    assert player.kinds().count("stop") == 2, "a second stop says nothing"


def test_blocks_made_before_a_failure_still_play(backend):
    c, player = live_controller(backend)
    backend.fail_after = 1
    assert c.generate() and c.wait(10)
    assert c.error is not None and c.error.code == "generation_failed"
    assert player.kinds() == ["begin", "add", "add", "finish"]


def test_a_new_generation_begins_the_player_afresh(backend):
    c, player = live_controller(backend)
    assert c.generate() and c.wait(10)
    assert c.generate() and c.wait(10)
    assert player.kinds() == ["begin"] + ["add"] * 4 + ["finish"] + ["begin"] + \
        ["add"] * 4 + ["finish"]
    assert c.live.blocks == 4, "the counts start again with each generation"


def test_cancel_as_the_last_chunk_finishes_never_sticks_in_cancelling(backend):
    """Issue 15 (20): Cancel pressed just as the last chunk finished left the page
    "cancelling" with every button disabled (the state was set outside the lock, after
    the worker had already finished). Here the cancel reaches the backend only once the
    worker is done, the worst timing."""
    c, _events = make_controller(backend)
    c.set_text("Hello there.")
    backend.gate = threading.Event()
    real_cancel = backend.cancel_running

    def slow_cancel():
        backend.gate.set()               # let the generation finish now ...
        assert c.wait(10)                # ... and end before the cancel goes on
        real_cancel()

    backend.cancel_running = slow_cancel
    assert c.generate()
    backend.chunk_started.wait(5)
    c.cancel()
    assert c.wait(10)
    assert c.busy is None and c.can_generate and not c.can_cancel
    assert "Cancelling" not in c.status_text
    assert c.cancel() is False, "nothing to cancel once idle"


def test_cancel_before_and_after_a_generation_does_nothing(backend):
    c, _events = make_controller(backend)
    assert c.cancel() is False and c.busy is None
    c.set_text("Hello there.")
    assert c.generate()
    assert c.wait(10)
    assert c.cancel() is False and c.busy is None and c.can_generate


def test_each_failing_action_has_a_code_that_says_what_happened(backend, monkeypatch):
    """Issue 9 (6): a failed load is not generation_failed; nor is a failed health
    check, an upload the decoder chokes on, or a result that could not be saved."""
    c, _events = make_controller(backend)

    def broken(*_args, **_kwargs):
        raise RuntimeError("something inside broke")

    with monkeypatch.context() as patch:
        patch.setattr(backend, "load", broken)
        assert c.load() and c.wait(10)
    assert c.error.code == "model_load_failed" and "something inside broke" in c.error.message

    with monkeypatch.context() as patch:
        patch.setattr(backend, "status", broken)
        c.refresh_health()
    assert c.health_error.code == "health_check_failed"

    with monkeypatch.context() as patch:
        patch.setattr(backend, "save_voice", broken)
        assert c.upload_voice(b"RIFF....", "clip.wav") is False
    assert c.error.code == "invalid_voice_file" and "RuntimeError" in c.error.details

    monkeypatch.setattr(backend, "output_dir", lambda: "/proc/no/such/folder")
    c.set_text("Hello there.")
    assert c.generate() and c.wait(10)
    assert c.error.code == "output_not_saved" and c.current is not None

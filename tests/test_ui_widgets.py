"""The ipywidgets view, in-process (no browser): what each widget shows and whether it
is enabled, for every state the controller goes through."""
from __future__ import annotations

import io
import re
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ipywidgets")

from cbx.ui.view import PAGE_UPDATES_PER_SECOND, Dashboard  # noqa: E402
from tests.support.dashboard import clip_bytes, make, wait_for  # noqa: E402
from tests.support.fake_backend import FakeBackend  # noqa: E402
from tests.support.fake_backend import backend, env  # noqa: E402,F401 (fixtures)


def upload(view: Dashboard, data: bytes, name: str) -> None:
    """What the browser's upload button sends for a file within the limit: its name and
    size, and the bytes in parts of `part_bytes`, one binary buffer each."""
    part = view.upload.part_bytes
    upload_id = f"{name} {time.monotonic_ns()}"    # each upload its own, as the page's
    for offset in range(0, max(len(data), 1), part):
        view.upload._received(view.upload, {
            "kind": "part", "id": upload_id, "name": name, "size": len(data),
            "offset": offset}, [memoryview(data[offset:offset + part])])


def test_page_sections_and_initial_buttons(backend):
    view = make(backend)
    text = " ".join(getattr(w, "value", "") for w in _walk(view.root)
                    if isinstance(getattr(w, "value", None), str))
    for section in ("Voice", "Text", "Settings", "Generate", "Output", "History", "Model",
                    "Health"):
        assert section in text
    assert view.generate.description == "Generate" and not view.generate.disabled
    assert view.cancel.description == "Cancel" and view.cancel.disabled
    assert view.load.description == "Load" and not view.load.disabled
    assert view.unload.description == "Unload" and view.unload.disabled
    assert view.upload.accept == ".wav,.flac,.ogg,.mp3"
    assert "WAV, FLAC, OGG or MP3" in view.voice_hint.value
    assert view.problems.value == ""
    assert "Not loaded" in view.health.value
    assert "all installed" in view.health.value or "Missing" in view.health.value
    assert "after 15 min idle" in view.health.value


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def test_no_weights_banner_shows_code_and_fix(env):
    view = make(FakeBackend(env / "nothing", env / "outputs"))
    assert "model_files_missing" in view.problems.value
    assert "python setup_env.py" in view.problems.value
    assert "not downloaded" in view.health.value


def test_buttons_and_progress_while_generating(backend, env):
    view = make(backend)
    view.chunk_chars.value = 60
    view.text.value = "First sentence is here. Second sentence is here. Third one ends it all."
    assert "2</b> chunks" in view.text_info.value
    backend.gate = threading.Event()
    view.generate.click()
    backend.chunk_started.wait(5)
    deadline = time.monotonic() + 5
    while "Chunk 1 of 2" not in view.progress_text.value and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "Chunk 1 of 2" in view.progress_text.value
    assert view.generate.disabled and not view.cancel.disabled
    assert view.load.disabled and view.unload.disabled
    assert view.progress.layout.visibility == "visible"
    backend.gate.set()
    deadline = time.monotonic() + 5
    while len(view.preview.children) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(view.preview.children) >= 2, "a finished chunk is playable at once"
    wait_for(lambda: view.progress.value >= 0.5)    # progress is drawn at most 4 times/s
    backend.gate.set()
    view.c.wait(10)
    assert not view.generate.disabled and view.cancel.disabled
    assert view.progress.layout.visibility == "hidden"
    assert view.result_audio.value[:4] == b"RIFF"
    links = dict(re.findall(r"download='([^']+)'[^>]* href='/cbx/outputs/([^'?]+)\?download=1'",
                            view.downloads.value))
    by_suffix = {Path(name).suffix: name for name in links}
    wav, sidecar, subtitles = by_suffix[".wav"], by_suffix[".json"], by_suffix[".srt"]
    assert links[wav] == wav and links[sidecar] == sidecar == wav + ".json", links
    assert links[subtitles] == subtitles == wav[:-len(".wav")] + ".srt", links
    saved = (backend.output_dir() / wav).read_bytes()
    assert saved[:4] == b"RIFF" and len(saved) == len(view.result_audio.value)
    assert "data:" not in view.downloads.value, "files download by URL, never inline"
    assert len(view.history.children) == 1
    assert "seed" in view.history.children[0].children[0].value
    assert view.preview.children == ()


def cancel_a_running_generation(view: Dashboard, backend) -> None:
    """Start a 2-chunk generation, press Cancel during chunk 1, let it end."""
    view.chunk_chars.value = 60
    view.text.value = "First sentence is here. Second sentence is here. Third one ends it all."
    backend.gate = threading.Event()
    view.generate.click()
    backend.chunk_started.wait(5)
    view.cancel.click()
    assert view.cancel.disabled
    backend.gate.set()


def test_cancel_button(backend):
    view = make(backend)
    cancel_a_running_generation(view, backend)
    view.c.wait(10)
    assert "Cancelled" in view.status.value
    assert not view.generate.disabled
    assert view.history.children == ()


def test_error_card_has_code_message_solution_and_traceback_toggle(backend):
    view = make(backend)
    backend.fail_with = ValueError("weird failure")
    view.text.value = "Hello."
    view.generate.click()
    view.c.wait(10)
    html = view.error.value
    assert "generation_failed" in html and "weird failure" in html
    assert "How to fix:" in html
    assert "<details>" in html and "Traceback" in html
    assert html.index("<details>") < html.index("ValueError: weird failure\n")
    assert view.text.value == "Hello."


def test_upload_widget_saves_and_plays_voice(backend, env):
    view = make(backend)
    upload(view, clip_bytes(env), "Alice sample.wav")
    assert view.error.value == ""
    assert view.voice_pick.value == view.c.voice_choice
    assert view.voice_pick.value.lower().startswith("alice")
    assert view.voice_audio.value[:4] == b"RIFF"
    assert "6.0 s" in view.voice_info.value
    assert not view.upload.busy


def test_an_upload_in_many_parts_is_one_voice(backend, env):
    """A plain JupyterLab caps websocket messages at 10 MiB, so a clip travels in parts;
    the kernel joins them in order, and a part that does not continue the file (a new
    upload started) discards the unfinished one."""
    view = make(backend)
    data = clip_bytes(env)
    view.upload.part_bytes = 1000                  # a 6 s clip in ~300 parts
    view.upload._received(view.upload, {"kind": "part", "id": "old", "name": "old.wav",
                                        "size": 9000, "offset": 0}, [b"x" * 1000])
    upload(view, data, "Alice sample.wav")
    assert view.error.value == ""
    assert view.voice_pick.value.lower().startswith("alice")
    assert view.voice_audio.value[:4] == b"RIFF"
    assert "6.0 s" in view.voice_info.value
    assert not view.upload.busy and view.upload._parts == bytearray()


def test_an_upload_over_the_limit_is_refused_with_size_and_limit(backend, env):
    """Issue 15 (18): a 110 MiB upload dropped the websocket and showed nothing. The
    browser sends only the name and size of a file over the limit; the page names both."""
    view = make(backend)
    upload(view, clip_bytes(env), "Alice sample.wav")
    chosen = view.voice_pick.value
    assert view.upload.max_bytes == 50 * 2**20
    view.upload._received(view.upload, {"kind": "too_large", "name": "huge.wav",
                                        "size": 110 * 2**20}, [])
    assert "invalid_voice_file" in view.error.value
    assert "110.0 MB" in view.error.value and "limit is 50 MB" in view.error.value
    assert "huge.wav" in view.error.value
    assert view.voice_pick.value == chosen, "the voice chosen before stays"


def test_non_audio_upload_shows_invalid_voice_file(backend):
    view = make(backend)
    upload(view, b"hello, I am a text file\n" * 50, "notes.txt")
    assert "invalid_voice_file" in view.error.value
    assert "How to fix:" in view.error.value


def test_ignored_settings_disabled_with_tooltip(backend):
    view = make(backend)
    assert not view.sliders["cfg_weight"].disabled
    assert view.language.layout.display == "none"
    hidden = [w for w in (view.variant, view.advanced, *view.sliders.values())
              if w.layout.display == "none"]
    assert hidden == [], "hiding the language picker must hide nothing else"
    view.variant.value = "turbo"
    for name in ("exaggeration", "cfg_weight", "min_p"):
        assert view.sliders[name].disabled
        assert "ignores" in view.sliders[name].tooltip
    assert not view.sliders["temperature"].disabled
    assert view.sliders["top_p"].value == pytest.approx(0.95)
    view.variant.value = "multilingual"
    assert view.language.layout.display is None
    assert not view.sliders["cfg_weight"].disabled


def test_unload_shows_memory_and_health_not_loaded(backend):
    view = make(backend)
    view.load.click()
    view.c.wait(10)
    assert "Ready" in view.health.value and not view.unload.disabled
    view.unload.click()
    view.c.wait(10)
    assert "Not loaded" in view.health.value
    assert "3000 -&gt; 900 MiB" in view.model_note.value
    assert view.unload.disabled


def test_end_session_needs_confirmation(backend):
    exited = threading.Event()
    view = make(backend, exit_process=exited.set)
    assert view.end_confirm.layout.display == "none"
    view.end.click()
    assert view.end_confirm.layout.display is None
    view.end_confirm.click()
    assert exited.wait(5)
    assert view.generate.disabled and view.load.disabled
    assert "Reload the page" in view.model_note.value


def test_progress_and_status_are_throttled_while_generating_and_flushed_after(backend):
    """Issue 13: a burst of progress callbacks reaches the page at most 4 times a second,
    the last state is never lost, and the page is drawn at once when generation ends."""
    view = make(backend)
    sent = []
    view.progress_text.observe(lambda change: sent.append(change["new"]), names="value")
    view.status.observe(lambda change: sent.append(change["new"]), names="value")
    view.c.busy = "generating"
    started = time.monotonic()
    for chunk in range(1, 201):
        view.c.progress = {"chunk": chunk, "total": 200, "tokens": chunk, "elapsed": 0.0,
                           "eta": None, "stage": "tokens"}
        view.c.status_line = f"Generating chunk {chunk} of 200..."
        view.c.emit("progress", "status")
    burst = time.monotonic() - started
    assert len(sent) <= 2 * (burst * PAGE_UPDATES_PER_SECOND + 1), \
        f"{len(sent)} updates in {burst:.2f} s"
    wait_for(lambda: "Chunk 200 of 200" in view.progress_text.value)
    wait_for(lambda: "chunk 200 of 200" in view.status.value)
    view.c.progress = {"chunk": 1, "total": 1, "tokens": 1, "elapsed": 0.0, "eta": None,
                       "stage": "tokens"}
    view.c.emit("progress")                 # may be folded into a trailing draw ...
    view.c.busy = None
    view.c.status_line = "Done."
    view.c.emit("busy", "status")           # ... which the end of the burst draws now
    assert "Chunk 1 of 1" in view.progress_text.value
    assert "Done." in view.status.value


def _audio_widgets(view):
    return [w for w in _walk(view.root) if isinstance(w, view.w.Audio)]


def test_no_player_without_audio_none_loops_and_none_autoplays(backend, env):
    """Issue 13: an <audio> element with no audio in it, or one that loops, keeps the
    browser busy; every state the page can be left in is checked."""
    view = make(backend)

    def check(state):
        players = _audio_widgets(view)
        for player in players:
            assert player.value[:4] == b"RIFF", f"{state}: a player without audio"
            assert not player.loop, f"{state}: a looping player"
            assert not player.autoplay, f"{state}: a player that starts by itself"
        return players

    assert check("fresh") == []
    upload(view, clip_bytes(env), "Alice sample.wav")
    assert len(check("voice uploaded")) == 1
    view.load.click()
    view.c.wait(10)
    check("loaded")
    view.text.value = "Hello there."
    for _ in range(3):
        view.generate.click()
        assert view.c.wait(10)
    check("history of several results")
    assert len(view.history.children) == 3
    assert view.result_audio.value == view.c.current.audio()
    cancel_a_running_generation(view, backend)
    assert view.c.wait(10)
    assert "Cancelled" in view.status.value
    check("cancelled")
    view.unload.click()
    view.c.wait(10)
    check("unloaded")
    view.close()


def record_player(view) -> list[tuple[dict, list]]:
    """Keep what the live player sends to the browser (content, binary buffers)."""
    sent: list[tuple[dict, list]] = []
    view.live_player.send = lambda content, buffers=None: sent.append((content, buffers))
    return sent


def test_live_player_sends_each_block_as_float32_pcm_while_the_rest_is_made(backend):
    view = make(backend)
    player = view.live_player
    assert player.state == "idle" and player.blocks == 0
    assert "createBufferSource" in player._esm and ".start(when)" in player._esm
    sent = record_player(view)
    view.chunk_chars.value = 60
    view.text.value = "First sentence is here. Second sentence is here. Third one ends it all."
    backend.gate = threading.Event()
    view.generate.click()
    wait_for(lambda: [c["kind"] for c, _ in sent] == ["begin"])
    backend.gate.set()
    wait_for(lambda: len(sent) == 3)
    assert view.c.busy == "generating", "the first blocks leave before the last is made"
    backend.gate.set()
    assert view.c.wait(10)
    kinds = [content["kind"] for content, _ in sent]
    assert kinds == ["begin", "block", "block", "block", "block", "finish"]
    gen = sent[0][0]["gen"]
    assert all(content["gen"] == gen for content, _ in sent)
    blocks = [(content, buffers) for content, buffers in sent if content["kind"] == "block"]
    pcm = np.concatenate([np.frombuffer(bytes(b[0]), dtype="<f4") for _, b in blocks])
    assert [c["chunk"] for c, _ in blocks] == [1, 1, 2, 2]
    assert [c["last"] for c, _ in blocks] == [False, False, False, True]
    assert all(c["rate"] == 24_000 for c, _ in blocks)
    with wave.open(io.BytesIO(view.c.current.wav_bytes)) as saved:
        assert len(pcm) == saved.getnframes(), "the blocks are the whole result"
        ints = np.frombuffer(saved.readframes(saved.getnframes()), dtype="<i2")
    assert np.abs(pcm - ints / 32767.0).max() < 1e-3, "the samples themselves travel"
    assert view.result_audio.value == view.c.current.audio(), "the result player stays"
    # a new generation begins the browser's player again, under a new number
    backend.gate = None
    view.generate.click()
    assert view.c.wait(10)
    assert sent[6][0] == {"kind": "begin", "gen": gen + 1}


def test_cancel_unload_and_close_stop_the_live_player(backend):
    view = make(backend)
    sent = record_player(view)
    view.chunk_chars.value = 60
    view.text.value = "First sentence is here. Second sentence is here. Third one ends it all."
    backend.gate = threading.Event()
    view.generate.click()
    backend.gate.set()
    wait_for(lambda: len(sent) == 3)
    view.cancel.click()
    assert sent[-1][0]["kind"] == "stop"
    backend.gate.set()
    assert view.c.wait(10)
    assert [c["kind"] for c, _ in sent] == ["begin", "block", "block", "stop"]
    backend.gate = None
    view.generate.click()
    assert view.c.wait(10)
    assert sent[-1][0]["kind"] == "finish"
    view.unload.click()
    assert view.c.wait(10)
    assert sent[-1][0]["kind"] == "stop", "Unload silences what is still buffered"
    view.generate.click()
    assert view.c.wait(10)
    view.close()
    assert sent[-1][0]["kind"] == "stop", "closing the page stops it"

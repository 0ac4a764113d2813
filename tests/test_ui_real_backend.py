"""The dashboard's controller and widgets on the real backend (cbx manager, voices,
speak) with the random-weight checkpoint: the same code path the Voila page runs,
without a browser."""
from __future__ import annotations

import io
import json
import threading
import time

import pytest
import soundfile as sf

from cbx.engine.manager import get_manager
from cbx.engine.synth import sidecar_path
from cbx.ui import playback
from cbx.ui.backend import CbxBackend
from cbx.ui.controller import DashboardController
from cbx.dev import fixture

pytestmark = pytest.mark.model

TWO_CHUNKS = "The sun rose over the quiet hills. Birds sang in the tall old trees."


@pytest.fixture
def controller(checkpoint_root):
    manager = get_manager()
    c = DashboardController(CbxBackend(), idle_unload_minutes=15)
    c.device = "cpu"
    yield c
    c.wait(120)
    c.close()
    manager.remove_listener(c.model_actions._on_model_change)
    manager.start_idle_unload(15)
    manager.unload()


def test_generate_with_uploaded_voice_then_unload(controller, speech_wav):
    c = controller
    progress = []
    c.observe(lambda ev: ev == "progress" and c.progress and progress.append(dict(c.progress)))
    assert c.upload_voice(speech_wav.read_bytes(), "speaker one.wav"), c.error
    assert c.load() and c.wait(300) and c.error is None, c.error
    # Load prepared the voice, so the first Generate starts decoding at once
    assert (c.voice_info.sha256, "original") in get_manager().loaded.conds_cache
    c.set_max_chunk_chars(50)
    c.set_text(TWO_CHUNKS)
    assert c.text_info["chunks"] == 2
    c.seed_text = "5"
    assert c.generate()
    assert not c.can_generate and c.can_cancel
    assert c.wait(300)
    assert c.error is None, c.error.to_dict()
    entry = c.current
    audio, rate = sf.read(io.BytesIO(entry.wav_bytes))
    pause = int(0.3 * rate)          # the joined chunks have one short pause between them
    assert len(audio) == 2 * fixture.expected_samples("original") + pause
    assert entry.seed == 5 and entry.voice == c.voice_choice
    assert entry.saved_path.is_file() and sidecar_path(entry.saved_path).is_file()
    stages = {p["stage"] for p in progress}
    assert {"loading", "tokens", "chunk_done"} <= stages
    assert max(p["chunk"] for p in progress) == 2 and progress[-1]["total"] == 2
    # the live feed passed on every block: together they are the whole result
    assert c.live.state == playback.FINISHED and c.live.blocks >= 2
    assert c.live.seconds == pytest.approx(len(audio) / rate)
    assert c.model.ready and c.can_unload
    assert c.health.model["state"] == "ready"

    assert c.unload()
    assert c.wait(120)
    assert c.model.state == "not_loaded"
    assert "all model memory released" in c.model_note
    assert c.health.model["state"] == "not_loaded"


def test_default_chunking_splits_off_a_short_first_chunk(controller):
    c = controller
    text = TWO_CHUNKS + " A cold wind came down from the north that night."
    c.set_text(text)
    assert c.max_chunk_chars == 300 and c.text_info["chunks"] == 2
    assert c.generate() and c.wait(300)
    assert c.error is None, c.error.to_dict()
    assert len(c.current.text) > 100
    assert json.loads(c.current.sidecar_json)["chunks"] == [
        TWO_CHUNKS, "A cold wind came down from the north that night."]


def test_cancel_stops_within_a_chunk(controller):
    c = controller
    c.set_max_chunk_chars(50)
    c.set_text(TWO_CHUNKS + " A third sentence. And a fourth one here.")
    started = threading.Event()
    c.observe(lambda ev: ev == "progress" and c.progress
              and c.progress["stage"] == "tokens" and started.set())
    assert c.generate()
    assert started.wait(300), "generation never reached the token loop"
    assert c.cancel()
    t0 = time.monotonic()
    assert c.wait(120)
    assert time.monotonic() - t0 < 60
    assert "Cancelled" in c.status_line and c.error is None
    assert c.history == []
    assert c.can_generate and not c.can_cancel


def test_idle_auto_unload_reaches_the_page(controller):
    c = controller
    seen = []
    c.observe(lambda ev: ev == "model" and seen.append(c.model.state))
    assert c.load()
    assert c.wait(300)
    assert c.model.state == "ready"
    get_manager().start_idle_unload(0.02)        # ~1 s without use
    deadline = time.monotonic() + 30
    while c.model.state != "not_loaded" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert c.model.state == "not_loaded"
    assert "idle" in c.model_note
    assert seen[-1] == "not_loaded"

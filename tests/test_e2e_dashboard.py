"""End to end: a real Voila server (started the way users start it, `python -m cbx.ui`)
serving the dashboard to headless Chromium, with a random-weight checkpoint.

Covers the page a user sees: upload a clip through the file chooser, type text,
Generate, watch progress and the live player, play and download the WAV, Unload; the
page without weights; a non-audio upload; Cancel. Screenshots of each state go to tests/artifacts/.

Needs Debian's chromium (/usr/bin/chromium) and Playwright's Python package; without
them the tests skip, unless CBX_REQUIRE_BROWSER=1 (CI), where they fail.
"""
from __future__ import annotations

import json
import time

import pytest
import srt                # a dev dependency (setup_env.py --dev)

from cbx.dev import clips
from cbx.dev.pageserver import (VoilaServer, audio_duration, set_chunk_size, type_text,
                                upload_file, wait_text)
from tests.support.browser import (ARTIFACTS, GENERATION_TIMEOUT_MS, PAGE_TIMEOUT_MS,
                                   assert_no_idle_players, open_page, require_browser,
                                   shot)
from tests.support.browser import browser  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.model, pytest.mark.e2e]


@pytest.fixture(scope="module")
def model_server(checkpoint_root, tmp_path_factory):
    require_browser()
    server = VoilaServer(checkpoint_root, tmp_path_factory.mktemp("voila_model"), "model",
                         log_dir=ARTIFACTS)
    yield server
    server.close()


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory):
    require_browser()
    work = tmp_path_factory.mktemp("voila_empty")
    (work / "models").mkdir()
    server = VoilaServer(work / "models", work, "empty", log_dir=ARTIFACTS)
    yield server
    server.close()


@pytest.fixture(scope="module")
def model_page(browser, model_server):
    context, page = open_page(browser, model_server)
    yield page
    context.close()


def test_happy_path_upload_generate_play_download_unload(model_page, tmp_path):
    page = model_page
    wait_text(page, ".cbx-health-panel", "Not loaded")
    assert page.locator(".cbx-problems .cbx-error").count() == 0
    assert page.locator("audio").count() == 0, "no player before there is audio"
    shot(page, "01_start")

    clip = clips.speech_clip(tmp_path / "Reference Speaker.wav", 8.0)
    upload_file(page, clip)
    wait_text(page, ".cbx-card", "Saved voice")
    assert page.locator("audio.cbx-voice-player").count() == 1
    shot(page, "02_voice_uploaded")

    # 107 characters: one chunk of 120 at most, but the short first chunk (whole
    # sentences up to 100 characters) splits off the last sentence, as speak() will.
    set_chunk_size(page, 120)
    type_text(page, "The sun rose over the quiet hills. Birds sang in the tall old trees. "
                    "A cold wind came down from the north.")
    wait_text(page, ".cbx-textinfo", "2 chunks")
    generate = page.locator("button.cbx-generate")
    cancel = page.locator("button.cbx-cancel")
    assert generate.is_enabled() and cancel.is_disabled()
    generate.click()
    page.wait_for_function("() => document.querySelector('button.cbx-generate').disabled")
    wait_text(page, ".cbx-status-line", "loads the model on first use")
    assert cancel.is_enabled()
    wait_text(page, ".cbx-progress-text", "Chunk 1 of 2", GENERATION_TIMEOUT_MS)
    shot(page, "03_generating")
    wait_text(page, ".cbx-progress-text", "Chunk 2 of 2", GENERATION_TIMEOUT_MS)
    wait_text(page, ".cbx-result-info", "s of audio", GENERATION_TIMEOUT_MS)
    page.wait_for_function("() => !document.querySelector('button.cbx-generate').disabled")
    assert cancel.is_disabled()
    assert page.locator(".cbx-error-box .cbx-error").count() == 0
    duration = audio_duration(page, "audio.cbx-player")
    assert duration > 0.5
    # The live player (Web Audio, no <audio>) played both chunks' blocks to the end.
    page.wait_for_function("() => document.querySelector('.cbx-live').dataset.state"
                           " === 'ended'", timeout=GENERATION_TIMEOUT_MS)
    live = page.eval_on_selector(".cbx-live", "el => Object.assign({}, el.dataset)")
    assert int(live["blocks"]) == 2, live
    assert abs(float(live["played_s"]) - duration) < 0.05, live
    assert_no_idle_players(page)
    shot(page, "04_result")

    for link in ("wav", "json", "srt"):    # served from the output folder, never inline
        href = page.get_attribute(f".cbx-download a.cbx-download-{link}", "href")
        assert href.startswith("/cbx/outputs/") and href.endswith("?download=1"), href
    with page.expect_download() as info:
        page.click(".cbx-download a.cbx-download-wav")
    wav_path = tmp_path / info.value.suggested_filename
    info.value.save_as(str(wav_path))
    assert wav_path.suffix == ".wav"
    import soundfile as sf

    audio, rate = sf.read(str(wav_path))
    assert rate == 24_000
    assert abs(len(audio) / rate - duration) < 0.05
    with page.expect_download() as info:
        page.click(".cbx-download a.cbx-download-json")
    side = tmp_path / info.value.suggested_filename
    info.value.save_as(str(side))
    meta = json.loads(side.read_text(encoding="utf-8"))
    assert meta["voice"].lower().startswith("reference")
    assert meta["chunks"] == ["The sun rose over the quiet hills. Birds sang in the tall old "
                              "trees.", "A cold wind came down from the north."]
    with page.expect_download() as info:
        page.click(".cbx-download a.cbx-download-srt")
    subtitles = tmp_path / info.value.suggested_filename
    info.value.save_as(str(subtitles))
    cues = list(srt.parse(subtitles.read_text(encoding="utf-8")))
    assert subtitles.stem == wav_path.stem and cues
    assert " ".join(" ".join(c.content.split()) for c in cues) == " ".join(meta["chunks"])
    assert cues[-1].end.total_seconds() <= duration + 0.05

    page.click("button.cbx-unload")
    wait_text(page, ".cbx-model-note", "Unloaded", GENERATION_TIMEOUT_MS)
    wait_text(page, ".cbx-health-panel", "Not loaded")
    assert "MiB" in page.locator(".cbx-model-note").inner_text()
    shot(page, "05_unloaded")


def test_cancel_stops_a_long_generation(model_page):
    page = model_page
    history_before = page.locator(".cbx-history-row").count()
    type_text(page, "One short line here. Two short lines now. Three lines are "
                    "spoken. Four lines in all. Five makes it long.")
    page.click("button.cbx-generate")
    wait_text(page, ".cbx-progress-text", "Chunk 1 of", GENERATION_TIMEOUT_MS)
    started = time.monotonic()
    page.click("button.cbx-cancel")
    wait_text(page, ".cbx-status-line", "Cancelled", GENERATION_TIMEOUT_MS)
    took = time.monotonic() - started
    shot(page, "06_cancelled")
    assert took < 90, f"cancel took {took:.0f} s"
    assert "of 5 chunks" in page.locator(".cbx-status-line").inner_text() or \
        "chunks" in page.locator(".cbx-status-line").inner_text()
    assert page.locator(".cbx-history-row").count() == history_before
    assert page.locator("button.cbx-generate").is_enabled()
    assert page.locator("button.cbx-cancel").is_disabled()
    assert page.eval_on_selector(".cbx-live", "el => el.dataset.state") == "stopped", \
        "cancel stops the live player"
    assert_no_idle_players(page)


def test_reloading_the_page_shuts_its_old_kernel_down(browser, checkpoint_root, tmp_path):
    """Reload (or close) the tab = that kernel is gone, with whatever model it held:
    Voila's shutdown beacon must get through (it was refused with 403 for lack of an
    _xsrf cookie, and the old kernel lived on beside the new one)."""
    server = VoilaServer(checkpoint_root, tmp_path / "work", "reload", log_dir=ARTIFACTS)
    context, page = open_page(browser, server)
    try:
        first = server.kernel_pids()
        assert len(first) == 1, first
        page.reload(timeout=PAGE_TIMEOUT_MS)
        page.wait_for_selector(".cbx-health-panel table", timeout=PAGE_TIMEOUT_MS)
        deadline = time.monotonic() + 30
        while server.kernel_pids() & first and time.monotonic() < deadline:
            time.sleep(0.5)
        now = server.kernel_pids()
        assert not now & first, "the reloaded page's old kernel is still running"
        assert len(now) == 1, now                      # the new page's own kernel
        page.close(run_before_unload=True)              # closing the tab: the same
        deadline = time.monotonic() + 30
        while server.kernel_pids() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert server.kernel_pids() == set(), "the closed tab's kernel is still running"
        assert "403 POST" not in server.log_path.read_text(encoding="utf-8")
    finally:
        context.close()
        server.close()


def test_no_weights_page_explains_the_fix(browser, empty_server, tmp_path):
    context, page = open_page(browser, empty_server)
    try:
        problems = page.locator(".cbx-problems")
        assert "model_files_missing" in problems.inner_text()
        assert "python setup_env.py" in problems.inner_text()
        assert "not downloaded" in page.locator(".cbx-health-panel").inner_text()
        shot(page, "07_no_weights")

        bad = tmp_path / "not_audio.wav"
        bad.write_text("This is a text file pretending to be a WAV.\n" * 40)
        upload_file(page, bad)
        wait_text(page, ".cbx-error-box", "invalid_voice_file")
        assert "How to fix" in page.locator(".cbx-error-box").inner_text()
        shot(page, "08_invalid_upload")

        # Issue 15 (18): a file over the cap used to drop the websocket silently. The
        # browser checks the size and only the name and size reach the kernel.
        huge = tmp_path / "huge.wav"
        with open(huge, "wb") as handle:           # sparse: 110 MiB, nothing written
            handle.truncate(110 * 2**20)
        upload_file(page, huge)
        wait_text(page, ".cbx-error-box", "110.0 MB")
        error = page.locator(".cbx-error-box").inner_text()
        assert "invalid_voice_file" in error and "limit is 50 MB" in error
        assert "huge.wav" in error

        type_text(page, "Hello there.")
        page.click("button.cbx-generate")
        wait_text(page, ".cbx-error-box", "model_files_missing", GENERATION_TIMEOUT_MS)
        assert page.locator(".cbx-text textarea").input_value() == "Hello there."
        assert "Traceback (most recent call last)" not in page.inner_text("body")
    finally:
        context.close()

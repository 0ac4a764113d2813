"""The browser's live player (issue 11) on a real Voila server and headless Chromium:
blocks arrive while the model works, the Web Audio timeline plays them back to back,
Cancel silences it. Every figure is read from the player's own counters on the widget
model (the player mirrors them into data-* attributes of its element).

Two random-weight checkpoints, because the fixture that stops after 8 speech tokens per
chunk is below the first in-chunk block (20 tokens): there each chunk is one block, so
the gapless and 3-chunk checks run on chunk-level blocks. The "first sound before the
first chunk is done" check needs in-chunk blocks, so it runs on the fixture that never
stops by itself (the per-chunk token budget ends each chunk).
"""
from __future__ import annotations

import pytest

from cbx.dev import fixture
from cbx.dev.pageserver import VoilaServer, live_counters, wait_text
from cbx.dev.pageserver import set_chunk_size, type_text
from tests.support.browser import ARTIFACTS, GENERATION_TIMEOUT_MS, open_page, shot
from tests.support.browser import browser  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.model, pytest.mark.e2e]

THREE_CHUNKS = ("The first line is spoken here. The second line follows after it. "
                "And the third line ends it all.")


def wait_state(page, state: str, timeout: int = GENERATION_TIMEOUT_MS) -> None:
    page.wait_for_function(
        "s => { const el = document.querySelector('.cbx-live');"
        " return el && el.dataset.state === s; }", arg=state, timeout=timeout)


def watch(page) -> None:
    """Note (epoch ms) when chunk 1's preview appears (the kernel's on_chunk: chunk 1
    is done) and when the player's state turns 'stopped'."""
    page.evaluate(
        "() => { window.__cbx = {chunk1: 0, stopped: 0};"
        " new MutationObserver(() => {"
        "  const live = document.querySelector('.cbx-live');"
        "  if (!window.__cbx.stopped && live && live.dataset.state === 'stopped')"
        "   window.__cbx.stopped = Date.now();"
        "  if (!window.__cbx.chunk1 && document.querySelector('.cbx-preview')"
        "      .textContent.includes('Chunk 1 of')) window.__cbx.chunk1 = Date.now();"
        " }).observe(document.body, {subtree: true, childList: true, attributes: true,"
        "  characterData: true}); }")


def generate(page, text: str, chunks: int) -> None:
    set_chunk_size(page, 50)
    type_text(page, text)
    wait_text(page, ".cbx-textinfo", f"{chunks} chunks")
    watch(page)
    page.click("button.cbx-generate")
    wait_state(page, "playing")


def test_three_chunks_play_gaplessly_to_the_end(browser, checkpoint_root, tmp_path):
    """Paused from the first block on, the buffer grows while the model works; then the
    whole timeline plays without a gap over 50 ms and ends by itself."""
    server = VoilaServer(checkpoint_root, tmp_path / "work", "stream_gapless",
                         log_dir=ARTIFACTS)
    context, page = open_page(browser, server)
    try:
        generate(page, THREE_CHUNKS, 3)
        page.click(".cbx-live-toggle")                     # Pause
        wait_state(page, "paused")
        wait_text(page, ".cbx-result-info", "s of audio", GENERATION_TIMEOUT_MS)
        duration = float(page.locator(".cbx-result-info").inner_text()
                         .split(" s of audio")[0].split()[-1])
        paused = live_counters(page)
        assert paused["blocks"] >= 3 and paused["played_s"] < 0.2, paused
        assert paused["buffered_s"] == pytest.approx(duration, abs=0.06), \
            "the buffer grew to the whole result while paused"
        page.click(".cbx-live-toggle")                     # Play
        wait_state(page, "ended", int(duration * 1000) + 30_000)
        done = live_counters(page)
        shot(page, "stream_ended")
        assert done["max_gap_ms"] <= 50, done
        assert done["late_gaps"] == 0, done
        assert done["played_s"] == pytest.approx(done["buffered_s"], abs=0.02), done
        assert page.locator("audio.cbx-player").count() == 1, "the result keeps its player"
    finally:
        context.close()
        server.close()


def test_first_sound_before_the_first_chunk_is_done_and_cancel_stops_it(browser,
                                                                         tmp_path):
    """On the never-stopping fixture the first chunk runs to its token budget; the first
    block (20 tokens) plays long before. Cancel then silences the player."""
    root = fixture.cached_checkpoint_root(("original",), stop_after=2000)
    server = VoilaServer(root, tmp_path / "work", "stream_first", log_dir=ARTIFACTS)
    context, page = open_page(browser, server)
    try:
        generate(page, THREE_CHUNKS, 3)
        page.wait_for_function(
            "() => Number(document.querySelector('.cbx-live').dataset.first_played_at) > 0",
            timeout=GENERATION_TIMEOUT_MS)
        first = live_counters(page)["first_played_at"]
        chunk1 = page.evaluate("() => window.__cbx.chunk1")
        assert chunk1 == 0 or first < chunk1, "the player started after chunk 1 was done"
        # it is sounding now: wait until the played counter moves on, then Cancel
        played = live_counters(page)["played_s"]
        page.wait_for_function(
            "p => Number(document.querySelector('.cbx-live').dataset.played_s) > p",
            arg=played, timeout=10_000)
        clicked = page.evaluate("() => Date.now()")
        page.click("button.cbx-cancel")
        wait_state(page, "stopped", 5_000)
        took = page.evaluate("() => window.__cbx.stopped") - clicked
        shot(page, "stream_cancelled")
        assert took <= 500, f"the player stopped {took} ms after Cancel"
        stopped = live_counters(page)
        page.wait_for_timeout(600)
        assert live_counters(page)["played_s"] == stopped["played_s"], "nothing plays after"
        wait_text(page, ".cbx-status-line", "Cancelled", GENERATION_TIMEOUT_MS)
        chunk1 = page.evaluate("() => window.__cbx.chunk1")
        assert chunk1 == 0 or first < chunk1
    finally:
        context.close()
        server.close()

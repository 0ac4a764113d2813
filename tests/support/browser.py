"""What every browser test shares: Chromium through Playwright (skipped, or failed
under CBX_REQUIRE_BROWSER=1, when it is missing), a page opened on a server, the
screenshots, and the check that no idle <audio> element is left on the page.

Test modules take the fixture by importing it:
`from tests.support.browser import browser  # noqa: F401`.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from cbx.dev.pageserver import CHROMIUM, CHROMIUM_ARGS

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
PAGE_TIMEOUT_MS = 120_000      # notebook execution imports torch on a slow CPU
GENERATION_TIMEOUT_MS = 240_000


def require_browser():
    """Skip (or fail in CI) with the exact reason when the browser stack is missing."""
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the playwright Python package is not installed (pip install playwright)"
    if reason is None and not Path(CHROMIUM).is_file():
        reason = (f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set "
                  "CBX_CHROMIUM)")
    if reason is not None:
        if os.environ.get("CBX_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CBX_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def open_page(browser, server):
    """A new browser context on `server`'s page, once the page has drawn its health
    panel; (context, page)."""
    # tall enough that a screenshot shows the whole page (Voila scrolls inside its body)
    context = browser.new_context(accept_downloads=True,
                                  viewport={"width": 1400, "height": 2100})
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(server.url, timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector(".cbx-health-panel table", timeout=PAGE_TIMEOUT_MS)
    return context, page


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"e2e_{name}.png"), full_page=True)


def assert_no_idle_players(page) -> None:
    """Issue 13: no <audio> element without real audio, none looping, and none playing
    unless it plays a real result (a blob with a length)."""
    players = page.evaluate(
        "() => Array.from(document.querySelectorAll('audio')).map(a => ({"
        " cls: a.className, src: a.currentSrc || a.src, paused: a.paused, loop: a.loop,"
        " error: a.error ? a.error.code : null, duration: a.duration}))")
    for player in players:
        assert player["src"].startswith("blob:"), f"a player without audio: {player}"
        assert not player["loop"], f"a looping player: {player}"
        assert player["error"] is None, f"a player the browser rejected: {player}"
        if not player["paused"]:
            assert player["duration"] and player["duration"] > 0, player

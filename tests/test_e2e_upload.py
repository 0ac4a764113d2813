"""End to end (issue 21, item 3, against the real server): a page that raises the upload
limit for itself cannot make the kernel take more than its limit.

The real dashboard (`python -m cbx.ui`, no weights needed) in headless Chromium. First
an honest clip in 64 KiB parts becomes a voice: the page's parts add up. Then page
JavaScript reaches the voice card's upload model through Voila's widget manager and
sends the forged update of the issue (`limit_hint` and `max_bytes` at 1 TiB): the kernel
keeps its limit and puts the page's hint back. The page then raises its hint for itself
only (no save) and chooses a 60 MiB file: its own code now sends the file in 4 MiB
parts, and the kernel refuses it at the first part as over its 50 MB limit. A part that
holds more than its upload declared, sent straight through the model, is refused as
well. Playwright counts the websocket frames, so the parts really left the page.
"""
from __future__ import annotations

import pytest

from cbx.dev import clips
from cbx.dev.pageserver import VoilaServer, upload_file, wait_text
from tests.support.browser import ARTIFACTS, PAGE_TIMEOUT_MS, require_browser, shot
from tests.support.browser import browser  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e

TIB = 2**40

# The voice card's upload model, found through Voila's widget manager (ipywidgets 8
# keeps each model's promise in `_models`) and kept as window.__cbxUpload.
FIND_UPLOAD = """async () => {
  const models = await Promise.all(Object.values(window.jupyterapp.widgetManager._models));
  const upload = models.find((m) => m.get("limit_hint") !== undefined &&
                                    m.get("label") === "Upload clip");
  window.__cbxUpload = upload;
  return upload.get("limit_hint");
}"""

# `state` set in the page's copy of the model only, or also sent to the kernel
SET_LOCALLY = "(state) => { window.__cbxUpload.set(state); }"
SET_AND_SAVE = """(state) => {
  window.__cbxUpload.set(state);
  window.__cbxUpload.save_changes();
}"""
HINT_IS = "(limit) => window.__cbxUpload.get('limit_hint') === limit"

# declares 1,000 bytes, sends 4 MiB in its first part
OVER_DECLARED = """() => window.__cbxUpload.send(
  { kind: "part", id: "forged", name: "liar.wav", size: 1000, offset: 0 },
  undefined, [new ArrayBuffer(4 * 2 ** 20)])"""


@pytest.fixture()
def empty_server(tmp_path):
    require_browser()
    (tmp_path / "models").mkdir()
    server = VoilaServer(tmp_path / "models", tmp_path, "upload_forged", log_dir=ARTIFACTS)
    yield server
    server.close()


def test_a_forged_limit_and_forged_parts_are_refused_by_the_kernel(browser, empty_server,
                                                                    tmp_path):
    context = browser.new_context(viewport={"width": 1400, "height": 2100})
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    sent_parts = []                 # sizes of the frames that carried an upload's part

    def on_socket(socket):
        socket.on("framesent", lambda payload: sent_parts.append(len(payload))
                  if isinstance(payload, bytes) and b'"part"' in payload else None)

    page.on("websocket", on_socket)
    try:
        page.goto(empty_server.url, timeout=PAGE_TIMEOUT_MS)
        page.wait_for_selector(".cbx-health-panel table")
        assert page.evaluate(FIND_UPLOAD) == 50 * 2**20
        page.evaluate(SET_LOCALLY, {"part_bytes": 64 * 2**10})
        clip = clips.speech_clip(tmp_path / "Honest Speaker.wav", 8.0)   # ~375 KiB
        upload_file(page, clip)
        wait_text(page, ".cbx-ok", "Saved voice")
        assert len(sent_parts) == 6 and page.locator(".cbx-error-box").inner_text() == ""
        sent_parts.clear()

        page.evaluate(SET_AND_SAVE, {"limit_hint": TIB, "max_bytes": TIB})
        page.wait_for_function(HINT_IS, arg=50 * 2**20)   # the kernel put it back
        page.evaluate(SET_LOCALLY, {"limit_hint": TIB, "part_bytes": 4 * 2**20})

        huge = tmp_path / "huge.wav"
        with open(huge, "wb") as handle:                   # sparse: 60 MiB, nothing written
            handle.truncate(60 * 2**20)
        upload_file(page, huge)
        wait_text(page, ".cbx-error-box", "60.0 MB")
        error = page.locator(".cbx-error-box").inner_text()
        assert "invalid_voice_file" in error and "limit is 50 MB" in error, error
        assert "huge.wav" in error
        page.wait_for_timeout(1000)                        # late parts, if any, arrive
        assert len(sent_parts) == 15 and min(sent_parts) >= 4 * 2**20, (
            "the page's own code sent the file in parts, the browser check bypassed")
        assert page.locator(".cbx-error-box").inner_text() == error, "refused once"
        shot(page, "upload_forged_limit")

        page.evaluate(OVER_DECLARED)
        wait_text(page, ".cbx-error-box", "liar.wav")
        error = page.locator(".cbx-error-box").inner_text()
        assert "invalid_voice_file" in error
        assert "more than the 1,000 bytes it declared" in error, error

        saved = sorted(p.name for p in (tmp_path / "voices").iterdir())
        assert saved and all(name.startswith("Honest") for name in saved), saved
    finally:
        context.close()

"""End to end in JupyterLab 4: a real `jupyter lab` server (own config, runtime and
settings folders, a token, a free port) and headless Chromium. Someone who opens
notebooks/dashboard.ipynb in JupyterLab and runs it gets the same working dashboard as
in Voila: upload a clip, generate on the random-weight checkpoint, the result plays and
downloads (through cbx's server extension, which LabServer's config enables). The
experiment notebook's players (cbx.Result in a notebook) play there too.

Needs what tests/test_e2e_dashboard.py needs (Chromium, Playwright); skips without them
unless CBX_REQUIRE_BROWSER=1.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from cbx.dev import clips
from cbx.dev.pageserver import (LabServer, assert_plays, audio_duration, lab_run_notebook,
                            live_counters, type_text, upload_file, wait_text)
from tests.support.browser import (ARTIFACTS, GENERATION_TIMEOUT_MS, PAGE_TIMEOUT_MS,
                                   require_browser)
from tests.support.browser import browser  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.model, pytest.mark.e2e]

# The first Generate also loads the model: one chunk took 238 s here on a shared 2-core
# machine under load (load average about 10).
FIRST_GENERATION_MS = 2 * GENERATION_TIMEOUT_MS


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 12 MB clip (34 s of 48 kHz stereo float WAV, as a recorder might save it): over
    tornado's 10 MiB websocket cap, which a plain JupyterLab keeps."""
    import numpy as np
    import soundfile as sf

    folder = tmp_path_factory.mktemp("lab_clip")
    speech, rate = sf.read(str(clips.speech_clip(folder / "speech.wav", 8.5)),
                           dtype="float32")
    doubled = np.repeat(np.tile(speech, 4), 48_000 // rate)
    path = folder / "Lab Speaker.wav"
    sf.write(str(path), np.stack([doubled, doubled], axis=1), 48_000, subtype="FLOAT")
    assert path.stat().st_size > 11 * 2**20
    return path


@pytest.fixture(scope="module")
def lab(checkpoint_root, clip, tmp_path_factory):
    require_browser()
    server = LabServer(checkpoint_root, tmp_path_factory.mktemp("lab"), "model",
                       env={"CBX_EXAMPLE_VOICE": str(clip)}, log_dir=ARTIFACTS)
    yield server
    server.close()


@pytest.fixture
def lab_page(browser, lab, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1600},
                                  accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page, errors
    ARTIFACTS.mkdir(parents=True, exist_ok=True)    # the last state, passed or failed
    page.screenshot(path=str(ARTIFACTS / f"lab_{request.node.name}.png"), full_page=True)
    context.close()
    lab.shutdown_kernels()        # each notebook's kernel holds its own model


def test_dashboard_in_jupyterlab_uploads_generates_plays_and_downloads(lab, lab_page,
                                                                       clip, tmp_path):
    page, errors = lab_page
    lab_run_notebook(page, lab, "dashboard.ipynb")
    page.wait_for_selector(".jp-OutputArea .cbx-health-panel table")
    wait_text(page, ".cbx-health-panel", "Not loaded")
    assert page.locator(".jp-OutputArea-output .cbx-problems .cbx-error").count() == 0
    assert page.locator(".jp-OutputArea [data-mime-type='application/vnd.jupyter.stderr']"
                        ).count() == 0, "the cell printed an error"

    upload_file(page, clip)
    wait_text(page, ".cbx-card", "Saved voice")
    assert page.locator("audio.cbx-voice-player").count() == 1

    type_text(page, "The sun rose over the quiet hills.")
    wait_text(page, ".cbx-textinfo", "1 chunk")
    clicked = page.evaluate("() => Date.now()")
    page.click("button.cbx-generate")
    wait_text(page, ".cbx-result-info", "s of audio", FIRST_GENERATION_MS)
    page.wait_for_function("() => !document.querySelector('button.cbx-generate').disabled")
    assert page.locator(".cbx-error-box .cbx-error").count() == 0
    assert "Lab Speaker" in page.locator(".cbx-result-info").inner_text()
    # the live player (an anywidget) played the blocks on JupyterLab's Web Audio too
    page.wait_for_function("() => document.querySelector('.cbx-live').dataset.state"
                           " === 'ended'", timeout=30_000)
    live = live_counters(page)
    duration = float(page.locator(".cbx-result-info").inner_text()
                     .split(" s of audio")[0].split()[-1])
    assert live["blocks"] >= 1 and live["first_played_at"] > clicked, live
    assert live["buffered_s"] == pytest.approx(duration, abs=0.06), live
    assert live["played_s"] == pytest.approx(live["buffered_s"], abs=0.02), live
    assert live["max_gap_ms"] <= 50 and live["late_gaps"] == 0, live
    assert audio_duration(page, "audio.cbx-player") > 0.2
    source = assert_plays(page, "audio.cbx-player")
    assert source.startswith("blob:")
    # Download: JupyterLab serves the output folder through cbx's server extension
    with page.expect_download() as info:
        page.click(".jp-OutputArea .cbx-download a.cbx-download-wav")
    wav = tmp_path / info.value.suggested_filename
    info.value.save_as(str(wav))
    assert wav.suffix == ".wav" and wav.read_bytes()[:4] == b"RIFF"
    assert errors == [], f"JavaScript errors on the page: {errors}"


def test_experiment_notebook_in_jupyterlab_plays_its_results(lab, lab_page):
    """Run All, then wait for section 4's two takes side by side (status, load and two
    generations before them): Result's own notebook player must play in JupyterLab.
    The rest of the notebook (five more chunks) runs top to bottom in
    tests/test_notebooks.py; here the kernel is stopped after the players are checked."""
    page, errors = lab_page
    lab_run_notebook(page, lab, "experiment.ipynb")
    page.wait_for_function("() => document.querySelectorAll("
                           "'.jp-OutputArea-output audio').length >= 2",
                           timeout=2 * FIRST_GENERATION_MS)
    assert page.locator(".jp-OutputArea-output[data-mime-type="
                        "'application/vnd.jupyter.error']").count() == 0
    body = page.locator(".jp-NotebookPanel").inner_text()
    assert "Using original" in body and "calm (exaggeration 0.3)" in body
    # a player of a Result: its HTML names the seed the take was made with
    take = page.locator(".jp-OutputArea-output", has_text="seed 42").locator("audio").first
    take.evaluate("a => a.classList.add('cbx-under-test')")
    assert audio_duration(page, "audio.cbx-under-test") > 0.2
    source = assert_plays(page, "audio.cbx-under-test")
    assert source.startswith(("data:audio/", "blob:")), source[:80]
    assert errors == [], f"JavaScript errors on the page: {errors}"

"""End to end, the Projects section (issue 12) in headless Chromium against a real
Voila server on the random-weight fixture: upload a Markdown file, Generate as a
project, reload the page mid-way, Resume, regenerate one chunk, export MP3 and
download it. Three short chunks keep it as quick as a browser test can be."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cbx.audio import FORMATS
from cbx.pageserver import VoilaServer, wait_text
from tests.test_e2e_dashboard import (ARTIFACTS, PAGE_TIMEOUT_MS, _open,  # noqa: F401
                                      _require_browser, assert_no_idle_players, browser,
                                      shot)

pytestmark = [pytest.mark.model, pytest.mark.e2e]

BOOK = "# Dawn\n\nThe sun rose.\n\n## Noon\n"      # three chunks: Dawn. / The sun rose. / Noon.
NAME = "dawn"
# a model load plus a few chunks in one kernel, on a shared 2-core machine
GENERATION_TIMEOUT_MS = 600_000


@pytest.fixture(scope="module")
def server(checkpoint_root, tmp_path_factory):
    _require_browser()
    work = tmp_path_factory.mktemp("voila_projects")
    server = VoilaServer(checkpoint_root, work, "projects", log_dir=ARTIFACTS)
    server.work = work
    yield server
    server.close()


def chunks_made(page) -> int:
    """The made chunks the summary counts, once each has its player on the page (new
    widgets appear a moment after the summary's text changes)."""
    import re

    made = int(re.search(r"(\d+) of \d+ chunks made",
                         page.locator(".cbx-project-summary").inner_text()).group(1))
    page.wait_for_function(
        "n => document.querySelectorAll('.cbx-chunk-row audio.cbx-chunk-player').length"
        " === n", arg=made)
    return made


def test_markdown_project_survives_a_reload_resumes_regenerates_and_exports_mp3(
        browser, server, tmp_path):
    import soundfile as sf

    context, page = _open(browser, server, tmp_path)
    try:
        book = tmp_path / f"{NAME}.md"
        book.write_text(BOOK, encoding="utf-8")
        with page.expect_file_chooser() as chooser:
            page.click(".cbx-text-upload button")
        chooser.value.set_files(str(book))
        wait_text(page, ".cbx-project-source", f"{NAME}.md")
        page.click("button.cbx-project-generate")
        wait_text(page, ".cbx-project-summary", "1 of 3 chunks made", GENERATION_TIMEOUT_MS)
        shot(page, "p1_first_chunk")

        page.reload(timeout=PAGE_TIMEOUT_MS)          # a new kernel; the project is on disk
        page.wait_for_selector(".cbx-health-panel table", timeout=PAGE_TIMEOUT_MS)
        pick = page.locator(".cbx-project-pick select")
        option = pick.locator("option", has_text=NAME)
        assert "chunks" in option.inner_text()
        pick.select_option(label=option.inner_text())
        wait_text(page, ".cbx-project-summary", "chunks made")
        done_after_reload = chunks_made(page)
        assert 1 <= done_after_reload <= 3
        if done_after_reload < 3:                      # else the old kernel finished it
            resume = page.locator("button.cbx-project-resume")
            resume.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
            assert resume.is_enabled()
            resume.click()
        wait_text(page, ".cbx-project-summary", "3 of 3 chunks made", GENERATION_TIMEOUT_MS)
        page.wait_for_function(
            "() => !document.querySelector('button.cbx-project-generate').disabled",
            timeout=GENERATION_TIMEOUT_MS)
        assert chunks_made(page) == 3
        assert page.locator(".cbx-error-box .cbx-error").count() == 0
        assert page.locator("button.cbx-project-resume").is_hidden()
        shot(page, "p2_resumed")

        folder = server.work / "outputs" / "projects" / NAME
        seed_before = json.loads((folder / "chunks" / "0001.json").read_text())["seed_used"]
        page.locator(".cbx-chunk-row").nth(1).locator("button.cbx-chunk-regenerate").click()
        wait_text(page, ".cbx-status-line", "Chunk 2 made again", GENERATION_TIMEOUT_MS)
        record = json.loads((folder / "chunks" / "0001.json").read_text())
        assert record["seed_used"] > seed_before
        assert f"seed {record['seed_used']}" in page.locator(".cbx-chunk-row").nth(1).inner_text()

        page.locator(".cbx-export-format select").select_option(label=FORMATS[".mp3"].label)
        page.click("button.cbx-project-export")
        page.wait_for_selector(".cbx-export-download a.cbx-export-link",
                               timeout=GENERATION_TIMEOUT_MS)
        with page.expect_download() as info:
            page.click(".cbx-export-download a.cbx-export-link")
        mp3 = tmp_path / info.value.suggested_filename
        info.value.save_as(str(mp3))
        assert mp3.suffix == ".mp3"
        assert sf.info(str(mp3)).format == "MP3"
        audio, rate = sf.read(str(mp3))
        plan = json.loads((folder / "project.json").read_text())
        expected = sum(sf.info(str(folder / "chunks" / f"{i:04d}.wav")).frames
                       for i in range(3)) / rate
        expected += sum(c["pause_after"] for c in plan["chunks"][:-1])
        assert rate == 24_000 and abs(len(audio) / rate - expected) < 0.05
        assert np.abs(audio).max() > 0
        assert_no_idle_players(page)
        shot(page, "p3_exported")
    except Exception:
        shot(page, "p_failed")                      # what the page showed when it failed
        raise
    finally:
        context.close()

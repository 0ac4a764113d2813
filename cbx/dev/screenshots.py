"""`python -m cbx.dev.screenshots`: make the README's pictures of the dashboard again, from
the page a user sees: the real server (`python -m cbx.ui`, as the start scripts run it)
in headless Chromium, with the model where setup puts it, in the checkout's
`model_cache/`.

Weights: real weights cannot be downloaded on the machines that build this project, so
when `model_cache/original/` is absent the random-weight checkpoint (cbx/dev/fixture.py, the
same layout as the real one) is linked there for the shots and the link is removed after.
A link, not a temporary folder shown under another name: the page then reads the very
folder a user's page reads, and the health panel shows its real folder and sizes. A
`model_cache/original/` that is already there (real weights) is used as it is and never
touched. The voice is a made-up speech clip (cbx/dev/clips.py), saved in a temporary voice
library. Results are saved where a user's are, in the checkout's outputs/, and the files
this run added there are deleted at its end. The page names folders in the checkout
relative to it ("outputs/..."), and a shot that shows a path of this machine (the
checkout's, the temporary folder's, the home folder) is refused: the pictures go into
the repository.

Writes docs/dashboard.png (voice uploaded, text typed, ready) and
docs/dashboard_history.png (a finished three-chunk generation and the session's history).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

from . import clips, fixture
from .pageserver import (CHROMIUM, CHROMIUM_ARGS, VoilaServer, set_chunk_size, type_text, upload_file, wait_text)
from ..paths import REPO_ROOT

MODEL_CACHE = REPO_ROOT / "model_cache"
FIRST_TEXT = "Hello! This is my cloned voice, made on my own computer."
LONG_TEXT = ("Chatterbox reads long text one group of sentences at a time. Each group gets "
             "its own seed, derived from the one you give. The pieces are joined with a "
             "short breath in between, so nothing is ever cut off.")
GENERATION_TIMEOUT_MS = 600_000


@contextlib.contextmanager
def weights_in_model_cache(cache: Path = MODEL_CACHE):
    """`cache` with an `original/` in it for as long as the block runs: the user's own,
    or the random-weight checkpoint linked in and unlinked afterwards."""
    source = fixture.cached_checkpoint_root(("original",)) / "original"
    target = cache / "original"
    stale = target.is_symlink() and target.resolve() == source.resolve()  # a killed run's
    if target.exists() and not stale:
        yield cache
        return
    if stale:
        target.unlink()
    target.symlink_to(source, target_is_directory=True)
    try:
        yield cache
    finally:
        target.unlink()


def take(out_dir: Path, work: Path) -> list[Path]:
    """Drive the page through upload, text, two generations; returns the files written."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    outputs = REPO_ROOT / "outputs"
    made_outputs = not outputs.exists()
    outputs.mkdir(exist_ok=True)
    before = set(outputs.iterdir())
    with weights_in_model_cache() as cache:
        server = VoilaServer(cache, work / "user", "screenshots", log_dir=work,
                             env={"CBX_OUTPUT_DIR": str(outputs)})
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                # tall enough for the whole page: Voila scrolls inside its body, and
                # what lies below the viewport is not painted
                page = browser.new_page(viewport={"width": 1400, "height": 3200})
                page.set_default_timeout(120_000)
                page.goto(server.url)
                wait_text(page, ".cbx-health-panel", "Not loaded")
                upload_file(page, clips.speech_clip(work / "My Voice.wav", 8.0))
                wait_text(page, ".cbx-card", "Saved voice")
                type_text(page, FIRST_TEXT)
                wait_text(page, ".cbx-textinfo", "1 chunk")
                written.append(_shot(page, out_dir / "dashboard.png", (str(work),)))

                _generate(page, "#1 ")
                set_chunk_size(page, 120)
                page.get_by_text("Advanced settings").click()        # closed again
                type_text(page, LONG_TEXT)
                wait_text(page, ".cbx-textinfo", "3 chunks")
                _generate(page, "#2 ")
                page.evaluate("() => document.activeElement && document.activeElement.blur()")
                written.append(_shot(page, out_dir / "dashboard_history.png",
                                     (str(work),)))
                browser.close()
        finally:
            server.close()
            for added in set(outputs.iterdir()) - before:
                added.unlink()
            if made_outputs:
                outputs.rmdir()
    return written


def _generate(page, number: str) -> None:
    page.click("button.cbx-generate")
    wait_text(page, ".cbx-result-info", number, GENERATION_TIMEOUT_MS)
    page.wait_for_function("() => !document.querySelector('button.cbx-generate').disabled")
    if page.locator(".cbx-error-box .cbx-error").count():
        raise RuntimeError("the page shows an error: "
                           + page.locator(".cbx-error-box").inner_text())


def _shot(page, path: Path, private: tuple[str, ...] = ()) -> Path:
    """The dashboard itself, not the empty page around it; never one that shows where
    this machine keeps things."""
    shown = page.locator(".cbx-app").inner_text()
    found = [place for place in (str(REPO_ROOT), str(Path.home()), *private)
             if place in shown]
    if found:
        raise RuntimeError(f"the page shows a path of this machine ({found[0]}); the "
                           "README's pictures must not")
    page.locator(".cbx-app").screenshot(path=str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbx.dev.screenshots",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs",
                        help="folder for the PNG files (default: docs/)")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        print(f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set "
              "CBX_CHROMIUM)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cbx_screenshots_") as tmp:
        for path in take(args.out, Path(tmp)):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

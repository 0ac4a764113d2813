"""What the dashboard costs the user's machine: `python -m cbx.dev.bench_page`.

Why it exists: the page runs in a browser on the same machine as the kernel. A page
that keeps the browser busy takes CPU from PyTorch, and a CPU generation then takes
several times longer than the same call in a plain kernel. So this drives the real
dashboard (`python -m cbx.ui`, the real Voila server) in Debian's Chromium with
Playwright, and prints:

- Chromium's CPU (all its processes, % of one core) while the page sits idle in every
  state a user leaves it in: fresh, voice uploaded, loaded, after several results,
  after Cancel, after Unload; beside a trivial Voila page (Button, Textarea,
  FloatProgress, HTML) on the same server settings;
- the time from the Generate click to the first audio playing in the page, beside
  the time to `cbx.speak`'s first `on_block` block for the same text, voice and seed
  in a plain Jupyter kernel: once cold (the first generation after loading, a user's
  first click), then warm (after one warm-up generation on both sides; medians). The
  two sides take turns, so a machine that drifts during the run moves both alike.

Without `--model-dir` it uses the random-weight test fixture (cbx/dev/fixture.py),
so it needs the dev install (`python setup_env.py --dev`: Playwright) and Chromium.
The last line of output is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .. import paths
from . import bench
from .pageserver import CHROMIUM, CHROMIUM_ARGS, VoilaServer, wait_text

SEED = 7
# 154 characters in two chunks (the short first chunk splits off), as in issue 13
TEXT = ("The sun rose over the quiet hills and the birds began to sing. A cold wind came "
        "down from the north, and the old miller went out to open the gates.")
TRIVIAL_NOTEBOOK_SOURCE = (
    "import ipywidgets as w\n"
    "w.VBox([w.Button(description='Go'), w.Textarea(), w.FloatProgress(value=0.3),"
    " w.HTML('<b>hello</b>')])")
PAGE_TIMEOUT_MS = 180_000
GENERATION_TIMEOUT_MS = 600_000
RESULT_MARKER = "CBX_BENCH_PAGE_RESULT "
WARM_UP_TEXT = "Warm up."   # one untimed generation on each side first


# ----------------------------------------------------------------------- measuring
def browser_cpu_seconds(user_data_dir: str) -> float:
    """CPU seconds used so far by every Chromium process of this browser instance."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["cmdline", "cpu_times"]):
        cmdline = proc.info["cmdline"] or []
        if any(user_data_dir in arg for arg in cmdline):
            times = proc.info["cpu_times"]
            if times is not None:
                total += times.user + times.system
    return total


def idle_cpu_percent(user_data_dir: str, seconds: float, settle: float = 2.0) -> float:
    """Chromium's CPU, % of one core, over `seconds` of the page left alone."""
    time.sleep(settle)
    before, started = browser_cpu_seconds(user_data_dir), time.monotonic()
    time.sleep(seconds)
    used = browser_cpu_seconds(user_data_dir) - before
    return 100.0 * used / (time.monotonic() - started)


# ------------------------------------------------------------------------ the page
def _wait_idle(page) -> None:
    page.wait_for_function("() => !document.querySelector('button.cbx-generate').disabled",
                           timeout=GENERATION_TIMEOUT_MS)


def _first_audio_seconds(page, text: str) -> float:
    """Generate `text`; seconds from the click to the moment the live player's played
    time first moved (its own counter, an epoch time in ms). Waits until the player has
    played to the end, so the next run starts quiet."""
    area = page.locator(".cbx-text textarea")
    if area.input_value() != text:
        area.fill(text)
        area.press("End")
        wait_text(page, ".cbx-textinfo", "chunk", PAGE_TIMEOUT_MS)
    clicked = page.evaluate("() => Date.now()")
    page.click("button.cbx-generate")
    first = page.wait_for_function(
        "clicked => { const t = Number(document.querySelector('.cbx-live')"
        "  .dataset.first_played_at); return t > clicked && t; }", arg=clicked,
        timeout=GENERATION_TIMEOUT_MS).json_value()
    _wait_idle(page)
    page.wait_for_function("() => document.querySelector('.cbx-live').dataset.state"
                           " === 'ended'", timeout=GENERATION_TIMEOUT_MS)
    return (first - clicked) / 1000.0


def run_page(root: Path, clip: Path, scratch: Path, idle_seconds: float,
             repeats: int, kernel: "PlainKernel", say) -> dict:
    """Idle CPU in each state, and `repeats` timed generations, each one followed by
    the same call in `kernel`, so that a machine that drifts faster or slower during
    the run moves both sides alike."""
    from playwright.sync_api import sync_playwright

    figures: dict = {"idle_cpu_percent": {}, "dashboard_first_audio_s": [],
                     "kernel_first_audio_s": []}
    trivial = scratch / "trivial.ipynb"
    trivial.write_text(json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {},
                   "outputs": [], "source": TRIVIAL_NOTEBOOK_SOURCE}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}},
        "nbformat": 4, "nbformat_minor": 5}), encoding="utf-8")
    with sync_playwright() as pw:
        for name, notebook in (("trivial page", trivial), ("dashboard", None)):
            profile = tempfile.mkdtemp(prefix="cbx-bench-chromium-", dir=scratch)
            server = VoilaServer(root, scratch / name.replace(" ", "_"), f"bench_{name}",
                                 notebook=notebook)
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                viewport={"width": 1400, "height": 1000})
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.set_default_timeout(PAGE_TIMEOUT_MS)
                page.goto(server.url, timeout=PAGE_TIMEOUT_MS)

                def idle(state: str) -> None:
                    value = idle_cpu_percent(profile, idle_seconds)
                    figures["idle_cpu_percent"][state] = value
                    say(f"  Chromium idle, {state}: {value:.1f} % of one core")

                if notebook is not None:
                    page.wait_for_selector(".widget-textarea", timeout=PAGE_TIMEOUT_MS)
                    idle("trivial Voila page")
                    continue
                page.wait_for_selector(".cbx-health-panel table", timeout=PAGE_TIMEOUT_MS)
                idle("fresh")
                with page.expect_file_chooser() as chooser:
                    page.click(".cbx-upload button")
                chooser.value.set_files(str(clip))
                wait_text(page, ".cbx-card", "Saved voice", PAGE_TIMEOUT_MS)
                idle("voice uploaded")
                page.click("button.cbx-load")
                wait_text(page, ".cbx-health-panel", "Ready", GENERATION_TIMEOUT_MS)
                _wait_idle(page)
                idle("after Load")
                page.fill(".cbx-seed input", str(SEED))
                page.keyboard.press("Enter")
                # a user's first click is cold: the first generation after Load
                seconds = _first_audio_seconds(page, TEXT)
                figures["dashboard_cold_first_audio_s"] = seconds
                say(f"  dashboard, first click after Load: first audio {seconds:.1f} s")
                seconds = kernel.first_audio_seconds()
                figures["kernel_cold_first_audio_s"] = seconds
                say(f"  cbx.speak, first call after load: first block after {seconds:.1f} s")
                _first_audio_seconds(page, WARM_UP_TEXT)    # untimed, on both sides
                kernel.warm_up()
                for _ in range(repeats):
                    seconds = _first_audio_seconds(page, TEXT)
                    figures["dashboard_first_audio_s"].append(seconds)
                    say(f"  dashboard: Generate to first audio {seconds:.1f} s")
                    seconds = kernel.first_audio_seconds()
                    figures["kernel_first_audio_s"].append(seconds)
                    say(f"  cbx.speak in a plain kernel: first block after {seconds:.1f} s")
                idle(f"after {repeats} results")
                page.click("button.cbx-generate")
                wait_text(page, ".cbx-progress-text", "Chunk 1 of", GENERATION_TIMEOUT_MS)
                page.click("button.cbx-cancel")
                wait_text(page, ".cbx-status-line", "Cancelled", GENERATION_TIMEOUT_MS)
                idle("after Cancel")
                page.click("button.cbx-unload")
                wait_text(page, ".cbx-health-panel", "Not loaded", GENERATION_TIMEOUT_MS)
                _wait_idle(page)
                idle("after Unload")
            finally:
                context.close()
                server.close()
    return figures


# ---------------------------------------------------------------- the plain kernel
KERNEL_SETUP = """
import threading, time, cbx
voice = cbx.voice({clip!r})
cbx.load("original", device="cpu")

def first_audio_seconds():
    first = []
    started = time.perf_counter()
    def work():
        cbx.speak({text!r}, voice=voice, seed={seed},
                  on_block=lambda b: first or first.append(time.perf_counter() - started))
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    print({marker!r} + repr(first[0]))
"""


class PlainKernel:
    """`cbx.speak` in a plain Jupyter kernel (in a worker thread, as the dashboard runs
    it), model loaded; each `first_audio_seconds()` times one call until `on_block`
    hands over the first block, the moment the page's player can start. `warm_up()`
    makes one untimed generation, as the page's warm side does."""

    def __init__(self, root: Path, clip: Path, scratch: Path):
        from jupyter_client.manager import start_new_kernel

        env = dict(os.environ, CBX_MODEL_DIR=str(root),
                   CBX_VOICE_DIR=str(scratch / "kvoices"),
                   CBX_OUTPUT_DIR=str(scratch / "koutputs"),
                   CBX_STATE_DIR=str(scratch / "kstate"))
        self.manager, self.client = start_new_kernel(
            kernel_name="python3", env=env, cwd=str(paths.REPO_ROOT))
        self._run(KERNEL_SETUP.format(clip=str(clip), text=TEXT, seed=SEED,
                                      marker=RESULT_MARKER))

    def warm_up(self) -> None:
        self._run(f"cbx.speak({WARM_UP_TEXT!r}, voice=voice, seed={SEED})")

    def _run(self, code: str) -> str:
        output: list[str] = []
        reply = self.client.execute_interactive(
            code, timeout=GENERATION_TIMEOUT_MS / 1000,
            output_hook=lambda msg: output.append(msg["content"].get("text", "")))
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"kernel run failed: {reply['content'].get('evalue')}")
        return "".join(output)

    def first_audio_seconds(self) -> float:
        line = next(line for line in self._run("first_audio_seconds()").splitlines()
                    if line.startswith(RESULT_MARKER))
        return float(line[len(RESULT_MARKER):])

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


# ------------------------------------------------------------------------- report
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cbx.dev.bench_page",
        description="Chromium's idle CPU on the dashboard in each state, and the "
                    "dashboard's time to first audio against cbx.speak in a plain kernel.")
    parser.add_argument("--model-dir", default=None,
                        help="model root holding original/ (default: the random-weight "
                             "test fixture, built on first use)")
    parser.add_argument("--idle-seconds", type=float, default=10.0,
                        help="seconds of idle page measured per state (default 10)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="generations timed on each side (default 3; medians shown)")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(message, flush=True)

    root, _fixture = bench._resolve_model_root(args.model_dir, "original")
    with tempfile.TemporaryDirectory(prefix="cbx-bench-page-") as tmp:
        scratch = Path(tmp)
        clip, clip_source = bench.make_clip(scratch / "reference voice.wav")
        say(f"Model root: {root}; reference clip: {clip_source}")
        say("cbx.speak in a plain Jupyter kernel: loading")
        kernel = PlainKernel(root, clip, scratch)
        try:
            say("The dashboard in Chromium (real Voila server), each generation followed "
                "by the same call in the plain kernel:")
            figures = run_page(root, clip, scratch, args.idle_seconds, args.repeats,
                               kernel, say)
        finally:
            kernel.close()
    dashboard_s = statistics.median(figures["dashboard_first_audio_s"])
    kernel_s = statistics.median(figures["kernel_first_audio_s"])
    figures.update(first_audio_median_s={"dashboard": dashboard_s, "cbx.speak": kernel_s},
                   first_audio_ratio=dashboard_s / kernel_s,
                   cold_first_audio_ratio=(figures["dashboard_cold_first_audio_s"]
                                           / figures["kernel_cold_first_audio_s"]),
                   machine=bench.describe_machine("cpu"), text=TEXT, seed=SEED)
    say("")
    say(f"{'Chromium idle CPU (% of one core)':<44}")
    for state, value in figures["idle_cpu_percent"].items():
        say(f"  {state:<42}{value:6.1f}")
    say(f"Time to first audio, median of {args.repeats}:")
    say(f"  {'dashboard (click to sound)':<42}{dashboard_s:6.1f} s")
    say(f"  {'cbx.speak in a plain kernel (on_block)':<42}{kernel_s:6.1f} s")
    say(f"  {'ratio dashboard / cbx.speak':<42}{figures['first_audio_ratio']:6.2f}x")
    say("Time to first audio, first generation after loading (cold):")
    say(f"  {'dashboard (click to sound)':<42}"
        f"{figures['dashboard_cold_first_audio_s']:6.1f} s")
    say(f"  {'cbx.speak in a plain kernel (on_block)':<42}"
        f"{figures['kernel_cold_first_audio_s']:6.1f} s")
    say(f"  {'ratio dashboard / cbx.speak':<42}{figures['cold_first_audio_ratio']:6.2f}x")
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The dashboard's real server on a free port, started as users start it (`python -m
cbx.ui`), and how to start the Chromium that drives it: for the page benchmark
(`python -m cbx.bench_page`) and the browser tests."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .paths import REPO_ROOT

CHROMIUM = os.environ.get("CBX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VoilaServer:
    """`python -m cbx.ui` on a free port; stops the server and its kernels at close()."""

    def __init__(self, model_dir: Path, work: Path, name: str, notebook: Path | None = None,
                 env: dict | None = None, log_dir: Path | None = None):
        """User folders go under `work`; the server's log is `voila_<name>.log` in
        `log_dir` (default: `work`)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        work.mkdir(parents=True, exist_ok=True)
        extra_env, env = env, dict(os.environ)
        env.update(CBX_MODEL_DIR=str(model_dir), CBX_VOICE_DIR=str(work / "voices"),
                   CBX_OUTPUT_DIR=str(work / "outputs"), CBX_STATE_DIR=str(work / "state"),
                   PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
        env.update(extra_env or {})
        log_dir = log_dir or work
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"voila_{name}.log"
        self._log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cbx.ui", "--no-browser", f"--port={self.port}",
             *([f"--notebook={notebook}"] if notebook is not None else [])],
            cwd=str(REPO_ROOT), env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"voila exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "voila/static/", timeout=2):
                    return
            except OSError as exc:
                if getattr(exc, "code", None):      # an HTTP error means it is serving
                    return
                time.sleep(0.3)
        raise RuntimeError(f"voila did not start in {timeout} s: "
                           f"{self.log_path.read_text()[-3000:]}")

    def close(self) -> None:
        import psutil

        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            kids = []
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for kid in kids:                 # kernels run in their own sessions
            if kid.is_running():
                kid.kill()
        psutil.wait_procs(kids, timeout=10)
        self._log.close()


def wait_text(page, selector: str, needle: str, timeout: int = 120_000) -> None:
    """Wait until the first element matching `selector` contains `needle` (Playwright)."""
    page.wait_for_function(
        "([sel, needle]) => { const el = document.querySelector(sel); "
        "return el && el.textContent.includes(needle); }",
        arg=[selector, needle], timeout=timeout)

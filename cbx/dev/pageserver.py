"""The dashboard's real servers on a free port, and how to start the Chromium that drives
them: Voilà started as users start it (`python -m cbx.ui`), and JupyterLab opened on the
same notebooks; for the page benchmark (`python -m cbx.dev.bench_page`), the README
screenshots (`python -m cbx.dev.screenshots`) and the browser tests."""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..paths import REPO_ROOT

CHROMIUM = os.environ.get("CBX_CHROMIUM", "/usr/bin/chromium")
# the Jupyter server extensions cbx enables (its download route) in JupyterLab
SERVER_CONFIG_D = REPO_ROOT / "voila_config" / "jupyter_server_config.d"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PageServer:
    """A Jupyter-based server on a free port, with the cbx user folders under `work` and
    `CBX_MODEL_DIR` at `model_dir`; stops the server and its kernels at close().
    Subclasses say which command to run and which URL answers once it serves."""

    kind = "server"

    def __init__(self, model_dir: Path, work: Path, name: str, env: dict | None = None,
                 log_dir: Path | None = None):
        """The server's log is `<kind>_<name>.log` in `log_dir` (default: `work`)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        extra_env, env = env, dict(os.environ)
        env.update(CBX_MODEL_DIR=str(model_dir), CBX_VOICE_DIR=str(work / "voices"),
                   CBX_OUTPUT_DIR=str(work / "outputs"), CBX_STATE_DIR=str(work / "state"),
                   PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
                   # a test module opens many pages on one server, and a closed
                   # Playwright context does not stop its kernel: room for them all
                   CBX_MAX_KERNELS="16")
        env.update(extra_env or {})
        log_dir = log_dir or work
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.kind}_{name}.log"
        self._log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(self.command(), cwd=str(self.cwd()), env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def command(self) -> list[str]:
        raise NotImplementedError

    def cwd(self) -> Path:
        return REPO_ROOT

    def ready_url(self) -> str:
        raise NotImplementedError

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: "
                                   f"{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.ready_url(), timeout=2):
                    return
            except OSError as exc:
                if getattr(exc, "code", None):      # an HTTP error means it is serving
                    return
                time.sleep(0.3)
        raise RuntimeError(f"{self.kind} did not start in {timeout} s: "
                           f"{self.log_path.read_text()[-3000:]}")

    def kernel_pids(self) -> set[int]:
        """The process ids of the server's running kernels (one per open page)."""
        import psutil

        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return set()
        pids = set()
        for kid in kids:
            try:
                if "ipykernel_launcher" in " ".join(kid.cmdline()):
                    pids.add(kid.pid)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        return pids

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


class VoilaServer(PageServer):
    """`python -m cbx.ui` on a free port: the page as the start scripts serve it."""

    kind = "voila"

    def __init__(self, model_dir: Path, work: Path, name: str, notebook: Path | None = None,
                 env: dict | None = None, log_dir: Path | None = None):
        self.notebook = notebook
        super().__init__(model_dir, work, name, env=env, log_dir=log_dir)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "cbx.ui", "--no-browser", f"--port={self.port}",
                *([f"--notebook={self.notebook}"] if self.notebook is not None else [])]

    def ready_url(self) -> str:
        return self.url + "voila/static/"


class LabServer(PageServer):
    """`jupyter lab` on a free port with a random token, serving a copy of notebooks/
    from `work` (so autosave and checkpoints never touch the repository), with its own
    config, runtime, data, settings and workspace folders: a user's JupyterLab setup
    neither leaks in nor is written to. Its config enables the server extensions
    voila_config/jupyter_server_config.d/ names (cbx's download route), as a user's
    environment does. `notebook_url(name)` opens one notebook."""

    kind = "lab"

    def __init__(self, model_dir: Path, work: Path, name: str, env: dict | None = None,
                 log_dir: Path | None = None):
        self.token = secrets.token_hex(16)
        self.root = work / "lab_root"
        (self.root / "notebooks").mkdir(parents=True, exist_ok=True)
        for notebook in (REPO_ROOT / "notebooks").glob("*.ipynb"):
            (self.root / "notebooks" / notebook.name).write_bytes(notebook.read_bytes())
        jupyter = work / "jupyter"
        # no "get Jupyter news?" toast over the page (it would also cover screenshots)
        news = jupyter / "lab_settings" / "@jupyterlab" / "apputils-extension"
        news.mkdir(parents=True, exist_ok=True)
        (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}\n')
        extensions = jupyter / "config" / SERVER_CONFIG_D.name
        extensions.mkdir(parents=True, exist_ok=True)
        for enabled in SERVER_CONFIG_D.glob("*.json"):
            (extensions / enabled.name).write_bytes(enabled.read_bytes())
        lab_env = {"JUPYTER_CONFIG_DIR": str(jupyter / "config"),
                   "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime"),
                   "JUPYTER_DATA_DIR": str(jupyter / "data"),
                   "JUPYTERLAB_SETTINGS_DIR": str(jupyter / "lab_settings"),
                   "JUPYTERLAB_WORKSPACES_DIR": str(jupyter / "lab_workspaces")}
        lab_env.update(env or {})
        super().__init__(model_dir, work, name, env=lab_env, log_dir=log_dir)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={self.port}",
                "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={self.token}",
                "--ServerApp.allow_root=True",       # containers and CI often run as root
                f"--ServerApp.root_dir={self.root}",
                "--LabApp.news_url=None",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]

    def cwd(self) -> Path:
        return self.root

    def ready_url(self) -> str:
        return f"{self.url}api/status?token={self.token}"

    def notebook_url(self, name: str) -> str:
        # ?reset: a fresh workspace, so no tab from an earlier page reopens (and starts
        # a kernel of its own)
        return f"{self.url}lab/tree/notebooks/{name}?reset&token={self.token}"

    def shutdown_kernels(self) -> int:
        """Stop every kernel (each holds its own model); returns how many there were."""
        import json

        def call(method: str, path: str):
            request = urllib.request.Request(f"{self.url}api/kernels{path}", method=method,
                                             headers={"Authorization": f"token {self.token}"})
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.read()

        kernels = json.loads(call("GET", ""))
        for kernel in kernels:
            call("DELETE", f"/{kernel['id']}")
        return len(kernels)


# a cell's prompt once JupyterLab has sent it to the kernel: "[*]:" queued/running, "[3]:"
_CELL_SENT = ("() => [...document.querySelectorAll('.jp-NotebookPanel .jp-InputArea-prompt')]"
              ".some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))")


def lab_run_notebook(page, server: LabServer, name: str, timeout: int = 120_000) -> None:
    """Open notebooks/`name` in JupyterLab, wait for its kernel, then Run > Run All Cells,
    as a user would (Playwright). The notebook is clicked first: Run All Cells acts on
    the current widget and does nothing while the notebook is not yet current, which
    happened on a loaded machine; so the run is also checked to have started."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(server.notebook_url(name), timeout=timeout)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=timeout)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator"
                           "[data-status='idle']", timeout=timeout)
    for _attempt in range(3):
        page.locator(".jp-NotebookPanel .jp-Cell .jp-InputPrompt").first.click()
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        try:
            page.wait_for_function(_CELL_SENT, timeout=15_000)
            return
        except PlaywrightTimeout:
            continue                     # the menu did nothing: try it again
    raise AssertionError(f"JupyterLab did not run {name} after 3 tries of Run All Cells")


def assert_plays(page, selector: str, timeout: int = 30_000) -> str:
    """Start the `selector` player and wait until its currentTime really advances; returns
    its source. Fails when it has no source, the browser rejects the audio, or it stalls."""
    page.eval_on_selector(selector, "a => { a.currentTime = 0; "
                                    "return a.play(); }")
    page.wait_for_function(
        "sel => { const a = document.querySelector(sel);"
        " if (a.error) throw new Error('audio error ' + a.error.code);"
        " return a.currentTime > 0.2; }", arg=selector, timeout=timeout)
    return page.eval_on_selector(selector, "a => a.currentSrc")


def wait_text(page, selector: str, needle: str, timeout: int = 120_000) -> None:
    """Wait until the first element matching `selector` contains `needle` (Playwright)."""
    page.wait_for_function(
        "([sel, needle]) => { const el = document.querySelector(sel); "
        "return el && el.textContent.includes(needle); }",
        arg=[selector, needle], timeout=timeout)


def upload_file(page, path: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.click(".cbx-upload button")
    chooser.value.set_files(str(path))


def set_chunk_size(page, chars: int) -> None:
    """Open 'Advanced settings' and type into the chunk-size slider's readout."""
    page.get_by_text("Advanced settings").click()
    readout = page.locator(".cbx-chunk-chars .widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(chars))
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('.cbx-chunk-chars .widget-readout').textContent.trim()"
        f" === '{chars}'")


def type_text(page, text: str) -> None:
    area = page.locator(".cbx-text textarea")
    area.fill(text)
    area.press("End")           # make sure the widget syncs the last keystroke


def audio_duration(page, selector: str) -> float:
    return page.eval_on_selector(
        selector,
        "a => new Promise((resolve, reject) => {"
        " if (a.readyState >= 1 && isFinite(a.duration)) { resolve(a.duration); return; }"
        " a.addEventListener('loadedmetadata', () => resolve(a.duration));"
        " a.addEventListener('error', () => reject(new Error('audio failed to load')));"
        " a.load(); })")


def live_counters(page) -> dict:
    """The live player's own counters (cbx/ui/player.js mirrors its widget model into
    data-* attributes of its element): state, played_s, buffered_s, blocks, ..."""
    data = page.eval_on_selector(".cbx-live", "el => Object.assign({}, el.dataset)")
    return {k: (v if k == "state" else float(v)) for k, v in data.items()}

#!/usr/bin/env python3
"""Set up Chatterbox Studio in one command: environment, PyTorch build, pinned
packages, model weights, verification.

    python setup_env.py                      # venv + English model (the usual case)
    python setup_env.py --models original,turbo
    python setup_env.py --dry-run            # show the plan, change nothing
    python setup_env.py --no-models --dev    # what the test suite needs

Standard library only: this runs before anything is installed. Re-running is safe: each
step checks what is already done and skips it, so a re-run after a failure (or after
coming back online) resumes where it stopped.
"""
from __future__ import annotations

import sys
from pathlib import Path

# --dry-run must leave the checkout untouched, and importing cbx below would otherwise
# write __pycache__ folders into it.
sys.dont_write_bytecode = True
ROOT = Path(__file__).resolve().parent
# cbx (its standard-library layer) comes from this checkout, whatever the current folder
# and Python's path settings: python -P, -I and PYTHONSAFEPATH leave this folder off
# sys.path.
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import base64  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from urllib.parse import quote, unquote, urlsplit, urlunsplit  # noqa: E402
from urllib.request import url2pathname  # noqa: E402

VENV_DIR_NAME = ".venv_chatterbox"
SUPPORTED_PYTHON = ((3, 10), (3, 12))     # torch 2.6.0 (chatterbox-tts' pin) has no 3.13 wheels
# PyTorch's own wheel index (CBX_PYTORCH_INDEX: a mirror of it, e.g. a company proxy).
PYTORCH_INDEX = (os.environ.get("CBX_PYTORCH_INDEX")
                 or "https://download.pytorch.org/whl").rstrip("/") + "/"
INDEX_PROBE_TIMEOUT = 10.0      # seconds to wait for PyTorch's index before using PyPI

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_PYTHON = 2
EXIT_INSTALL = 3
EXIT_DOWNLOAD = 4
EXIT_VERIFY = 5
EXIT_DISK = 6
EXIT_INTERRUPTED = 130

DESCRIPTION = ("Create the Chatterbox Studio environment, install the PyTorch build that "
               "fits this machine and the pinned packages, download model weights and "
               "verify them. Safe to re-run: finished steps are skipped.")
EXIT_CODES_HELP = """\
exit codes:
  0    everything requested is in place
  1    bad command-line arguments, or an index URL (--torch-index,
       CBX_PYTORCH_INDEX) that pip cannot use; the message says why
  2    unsupported Python (3.10, 3.11 or 3.12 is needed), or no venv/conda to create
       the environment with; the message says what to install
  3    creating the environment or installing packages failed (nothing half-usable is
       claimed; re-run to resume)
  4    the weights could not be downloaded (offline, Hub unreachable, no access); the
       environment itself is installed and usable
  5    the weights were downloaded but cbx's file check finds them missing or broken
  6    not enough free disk space for what is about to be installed/downloaded
  130  interrupted (Ctrl+C); re-run to resume
"""

# Rough installed size of the environment (GB), measured on real installs; shown in the
# plan and used for the free-space check. On Linux PyPI's torch pulls the CUDA libraries
# (about 3 GB) whether or not a GPU is present.
ENV_GB = {
    ("Linux", "pypi"): 6.6,
    ("Linux", "cuda-index"): 6.6,
    ("Linux", "cpu-index"): 3.0,
    ("Windows", "cuda-index"): 5.5,
    ("Windows", "pypi"): 2.8,
    ("Darwin", "pypi"): 2.5,
}
ENV_GB_DEFAULT = 6.6


class SetupError(Exception):
    """A failure with the exit code that names it and the message the user needs."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def say(msg: str = "", err: bool = False) -> None:
    """Print a line to stdout (err: stderr). Every line setup shows goes through here,
    so every URL in it is shown without its password."""
    print(redact(msg), file=sys.stderr if err else sys.stdout, flush=True)


def _normalize(name: str) -> str:
    """PEP 503 project-name normalisation, so 'huggingface_hub' == 'huggingface-hub'."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------------------
# Index URLs: checked before use, probed as pip reads them, never shown with a password.
# ---------------------------------------------------------------------------------------

# A scheme and the user info up to the last '@' before a blank: a password may hold an
# unencoded '/', ':' or '@', and hiding a little too much beats showing a secret.
_URL_CREDENTIALS = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)(\S*)@")
_BLANK_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def redact(text: str) -> str:
    """`text` with the password of every URL in it shown as *** (user:***@host; a lone
    user name, often a token, as ***@host): a mirror's URL may carry credentials, and
    setup's output ends up in logs and bug reports."""
    def hide(m: re.Match) -> str:
        user, colon, _ = m.group(2).partition(":")
        return f"{m.group(1)}{user}:***@" if colon else f"{m.group(1)}***@"
    return _URL_CREDENTIALS.sub(hide, text)


def file_url_path(url: str) -> Path:
    """The folder a file: URL names, read as pip reads it (file:///C:/whl is C:\\whl,
    and file://server/share a UNC path, on Windows); ValueError, saying why, when it
    names no folder on this machine."""
    parts = urlsplit(url)
    host = "" if parts.hostname in (None, "localhost") else parts.hostname
    if host and os.name != "nt":
        raise ValueError(f"it names a folder on another machine ({host}); a folder on "
                         "this one is file:///path/to/folder")
    if not parts.path.startswith("/"):
        raise ValueError("it names no absolute folder (file:///srv/whl; on Windows "
                         "file:///C:/whl)")
    try:
        return Path(url2pathname(f"//{host}{parts.path}" if host else parts.path))
    except OSError as exc:      # Windows: a malformed drive, as in file:///C|x|y
        raise ValueError(f"it names no folder ({exc})") from exc


def index_url_problem(url: str) -> str | None:
    """Why pip cannot use `url` as an index, None when it can: found before anything
    runs, so a typo is a message with its fix instead of a traceback from urllib."""
    if _BLANK_OR_CONTROL.search(url):
        return ("it contains a space or a control character (percent-encode it: a space "
                "is %20)")
    try:
        parts = urlsplit(url)
    except ValueError:          # the exception's text can hold the password: not shown
        return "it cannot be read as a URL (an unclosed '[' in the host?)"
    scheme = parts.scheme.lower()
    if scheme == "file":
        try:
            file_url_path(url)
        except ValueError as exc:
            return str(exc)
        return None
    if scheme not in ("http", "https"):
        folder = Path(url)
        hint = (f"; a local folder is given as its file:// URL: {folder.resolve().as_uri()}"
                if folder.is_absolute() else "")
        return ("pip reads http://, https:// and file:// indexes, "
                + (f"not {scheme}:" if scheme else "and this has no scheme") + hint)
    if not parts.hostname:
        return "it names no host"
    try:
        bad_port = parts.port == 0
    except ValueError:
        bad_port = True
    if bad_port:
        return (f"its port is not a number from 1 to 65535 "
                f"({parts.netloc.rpartition('@')[2]})")
    return None


def check_index_urls(torch_index: str | None) -> None:
    """Stop with a usage error naming the fix when --torch-index or CBX_PYTORCH_INDEX
    is a URL pip cannot use."""
    fixes = {"--torch-index": "pass a pip index URL such as https://download.pytorch.org/"
                              "whl/cpu or file:///srv/whl/cpu",
             "CBX_PYTORCH_INDEX": "set it to a mirror of https://download.pytorch.org/whl "
                                  "(http://, https:// or file://; a login goes before "
                                  "the host as user:password@, percent-encoded), or "
                                  "unset it"}
    for name, url in (("--torch-index", torch_index),
                      ("CBX_PYTORCH_INDEX", os.environ.get("CBX_PYTORCH_INDEX"))):
        problem = index_url_problem(url) if url else None
        if problem:
            shown = _BLANK_OR_CONTROL.sub(lambda m: quote(m.group()), url)
            raise SetupError(EXIT_USAGE, f"{name} ({shown}) is not an index pip can use: "
                                         f"{problem}.\n    fix: {fixes[name]}.")


# ---------------------------------------------------------------------------------------
# Pins: pyproject.toml's [project] dependencies are the single source of truth.
# ---------------------------------------------------------------------------------------

def _strip_comment(line: str) -> str:
    """Drop a TOML/YAML '#' comment that is not inside a quoted string."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def _toml_string_array(text: str, table: str, key: str) -> list[str]:
    """The strings of `key = [ ... ]` inside `[table]` of a TOML file.

    A deliberately small reader (tomllib only exists from Python 3.11, and 3.10 is
    supported); it handles what pyproject.toml uses: one table header per line,
    double-quoted strings without escapes, comments, arrays over several lines.
    """
    current = None
    collecting = False
    items: list[str] = []
    for raw in text.splitlines():
        line = _strip_comment(raw).strip()
        if not collecting:
            header = re.fullmatch(r"\[([^\[\]]+)\]", line)
            if header:
                current = header.group(1).strip()
                continue
            m = re.match(rf"{re.escape(key)}\s*=\s*\[", line)
            if current != table or not m:
                continue
            collecting = True
            line = line[m.end():]
        items.extend(re.findall(r'"([^"]*)"', line))
        if "]" in re.sub(r'"[^"]*"', "", line):
            return items
    if collecting:
        raise ValueError(f"unterminated array {key} in [{table}]")
    return items


def read_pins(pyproject: Path = ROOT / "pyproject.toml") -> tuple[list[str], list[str]]:
    """(runtime requirements, dev requirements) exactly as pyproject.toml lists them."""
    text = pyproject.read_text(encoding="utf-8")
    runtime = _toml_string_array(text, "project", "dependencies")
    dev = _toml_string_array(text, "project.optional-dependencies", "dev")
    if not runtime:
        raise SetupError(EXIT_INSTALL, f"No [project] dependencies found in {pyproject}.")
    return runtime, dev


def split_requirement(req: str) -> tuple[str, str | None]:
    """'torch==2.6.0' -> ('torch', '2.6.0'); a requirement without == pins nothing."""
    req = req.split(";", 1)[0].strip()
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(?:==\s*(\S+))?.*", req)
    if not m:
        raise ValueError(f"cannot read requirement {req!r}")
    return m.group(1), m.group(2)


def version_matches(installed: str, wanted: str) -> bool:
    """PEP 440 '==' for plain release pins: a local label ('+cu124') on the installed
    version is ignored unless the pin itself names one."""
    if "+" in wanted:
        return installed == wanted
    return installed.split("+", 1)[0] == wanted


def unmet_pins(requirements: list[str], installed: dict[str, str]) -> list[str]:
    """Requirements the environment does not satisfy, each with what it has instead."""
    unmet = []
    for req in requirements:
        name, wanted = split_requirement(req)
        have = installed.get(_normalize(name))
        if have is None:
            unmet.append(f"{req} (not installed)")
        elif wanted is not None and not version_matches(have, wanted):
            unmet.append(f"{req} (found {have})")
    return unmet


# ---------------------------------------------------------------------------------------
# GPU detection and the PyTorch build: a pure decision so every platform can be tested.
# ---------------------------------------------------------------------------------------

@dataclass
class GpuProbe:
    """What nvidia-smi said. `found`: the program exists; `ok`: it ran and answered."""

    found: bool
    ok: bool = False
    gpus: list[tuple[str, int | None]] = field(default_factory=list)   # (name, MiB)
    driver: str | None = None
    cuda_version: tuple[int, int] | None = None   # newest CUDA the driver supports
    error: str | None = None

    def describe(self) -> str:
        if not self.found:
            return "nvidia-smi not found (no NVIDIA driver)"
        if not self.ok:
            return f"nvidia-smi failed: {self.error or 'no answer'}"
        if not self.gpus:
            return "nvidia-smi lists no NVIDIA GPU"
        gpus = ", ".join(f"{n} ({m} MiB)" if m else n for n, m in self.gpus)
        cuda = (f", driver {self.driver} supports CUDA {self.cuda_version[0]}."
                f"{self.cuda_version[1]}" if self.cuda_version else "")
        return gpus + cuda


def parse_gpu_query(text: str) -> tuple[list[tuple[str, int | None]], str | None]:
    """Parse `nvidia-smi --query-gpu=name,memory.total,driver_version
    --format=csv,noheader,nounits` into ([(name, MiB)], driver)."""
    gpus: list[tuple[str, int | None]] = []
    driver = None
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 1 or not parts[0]:
            continue
        mem = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        gpus.append((parts[0], mem))
        if len(parts) > 2 and parts[2]:
            driver = parts[2]
    return gpus, driver


def parse_cuda_version(text: str) -> tuple[int, int] | None:
    """The 'CUDA Version: 12.4' in plain nvidia-smi output (the newest the driver runs)."""
    m = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _find_nvidia_smi(system: str) -> str | None:
    found = shutil.which("nvidia-smi")
    if found or system != "Windows":
        return found
    # Older Windows drivers install it here without putting it on PATH.
    legacy = Path(os.environ.get("ProgramFiles", r"C:\Program Files"),
                  "NVIDIA Corporation", "NVSMI", "nvidia-smi.exe")
    return str(legacy) if legacy.is_file() else None


def probe_gpu(system: str | None = None, run=subprocess.run, which=None) -> GpuProbe:
    """Ask nvidia-smi which NVIDIA GPUs and CUDA driver version this machine has."""
    system = system or platform.system()
    exe = (which or _find_nvidia_smi)(system)
    if not exe:
        return GpuProbe(found=False)
    try:
        q = run([exe, "--query-gpu=name,memory.total,driver_version",
                 "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
        if q.returncode != 0:
            err = (q.stderr or q.stdout or "").strip().splitlines()
            return GpuProbe(found=True, ok=False,
                            error=f"exit code {q.returncode}" + (f": {err[0]}" if err else ""))
        gpus, driver = parse_gpu_query(q.stdout)
        plain = run([exe], capture_output=True, text=True, timeout=20)
        cuda = parse_cuda_version(plain.stdout) if plain.returncode == 0 else None
    except (OSError, subprocess.SubprocessError) as exc:
        return GpuProbe(found=True, ok=False, error=f"{type(exc).__name__}: {exc}")
    return GpuProbe(found=True, ok=True, gpus=gpus, driver=driver, cuda_version=cuda)


@dataclass
class TorchPlan:
    build: str                 # "cuda" or "cpu"
    index_url: str | None      # None: PyPI (pip's configured index)
    torch_spec: str            # e.g. "torch==2.6.0+cu124"
    torchaudio_spec: str
    expect_cuda: bool          # verify torch.version.cuda after installing
    reason: str
    size_key: tuple[str, str]
    # what to install instead when index_url cannot be reached (the CPU build: PyPI's)
    fallback: "TorchPlan | None" = None

    @property
    def source(self) -> str:
        return self.index_url or "PyPI"

    def fall_back(self, why: str) -> "TorchPlan":
        """The fallback plan, its reason saying why and what it costs on disk."""
        fb = self.fallback
        extra = ENV_GB.get(fb.size_key, ENV_GB_DEFAULT) - ENV_GB.get(self.size_key,
                                                                      ENV_GB_DEFAULT)
        cost = (f"; it bundles CUDA libraries this machine cannot use: about {extra:.1f} GB "
                f"more on disk (environment about "
                f"{ENV_GB.get(fb.size_key, ENV_GB_DEFAULT):.1f} GB instead of "
                f"{ENV_GB.get(self.size_key, ENV_GB_DEFAULT):.1f} GB)") if extra > 0 else ""
        return TorchPlan(fb.build, fb.index_url, fb.torch_spec, fb.torchaudio_spec,
                         fb.expect_cuda,
                         f"{self.reason.split(';')[0]}; PyTorch's index {self.index_url} "
                         f"cannot be reached ({why}), so PyPI's build is used{cost}. Re-run "
                         "setup where that index is reachable (or set CBX_PYTORCH_INDEX to "
                         "a mirror) to get the smaller build",
                         fb.size_key)


def index_reachable(url: str, timeout: float = INDEX_PROBE_TIMEOUT) -> tuple[bool, str]:
    """Can pip reach this wheel index? Asks for its torch page (PEP 503) as pip would:
    with the URL's user and password as Basic auth, through the environment's proxies;
    a file:// index is a folder, whose torch/index.html pip reads."""
    import urllib.error
    import urllib.request

    if urlsplit(url).scheme.lower() == "file":
        return _folder_index_reachable(url)
    parts = urlsplit(url.rstrip("/") + "/torch/")
    userinfo, _, host = parts.netloc.rpartition("@")
    page = urlunsplit(parts._replace(netloc=host))   # urllib takes no user info
    request = urllib.request.Request(page)
    if userinfo:
        user, _, password = userinfo.partition(":")
        login = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
        # unredirected: a redirect to another host must not carry the password
        request.add_unredirected_header("Authorization", f"Basic {login}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(1024)
        return True, ""
    except urllib.error.HTTPError as exc:
        refused = " (user name or password refused)" if exc.code in (401, 403) else ""
        return False, f"HTTP {exc.code} for {page}{refused}"
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) \
            else reason


def _folder_index_reachable(url: str) -> tuple[bool, str]:
    """A file:// index works when pip finds torch's page in it: pip opens a folder's
    index.html, so <folder>/torch/index.html (PEP 503's layout on disk) must exist."""
    try:
        folder = file_url_path(url)
    except ValueError as exc:
        return False, str(exc)
    page = folder / "torch" / "index.html"
    if page.is_file():
        return True, ""
    if not folder.is_dir():
        return False, f"folder {folder} does not exist"
    return False, (f"{folder} has no torch{os.sep}index.html, the page pip reads from a "
                   "file:// index (PEP 503: a folder per project, its index.html linking "
                   "the wheels)")


def _cuda_tag(cuda: tuple[int, int] | None) -> str | None:
    """The torch 2.6 CUDA wheel flavour a driver can run: cu124 for CUDA 12 drivers
    (minor-version compatibility), cu118 for 11.8-11.x, None when too old."""
    if cuda is None or cuda >= (12, 0):
        return "cu124"
    if cuda >= (11, 8):
        return "cu118"
    return None


def choose_torch(system: str, probe: GpuProbe, want: str = "auto",
                 torch_index: str | None = None, torch_version: str = "2.6.0",
                 torchaudio_version: str = "2.6.0") -> TorchPlan:
    """Which PyTorch build to install and from where.

    system: platform.system() ('Windows', 'Linux', 'Darwin'); want: 'auto', 'cpu', 'cuda'.
    PyPI's torch 2.6.0 is a CUDA 12.4 build on Linux x86_64 but CPU-only on Windows and
    macOS, so a Windows CUDA build must come from PyTorch's own wheel index.
    """
    def plan(build, index, local, reason, key):
        tv = f"{torch_version}+{local}" if local else torch_version
        av = f"{torchaudio_version}+{local}" if local else torchaudio_version
        return TorchPlan(build, index, f"torch=={tv}", f"torchaudio=={av}",
                         build == "cuda", reason, key)

    if torch_index:
        tail = torch_index.rstrip("/").rsplit("/", 1)[-1]
        build = "cpu" if tail == "cpu" else "cuda" if re.fullmatch(r"cu\d+", tail) else (
            "cpu" if want == "cpu" else "cuda" if want == "cuda" else "cpu")
        key = (system, "cpu-index" if build == "cpu" else "cuda-index")
        return plan(build, torch_index, None, f"--torch-index {torch_index} given", key)

    if system == "Darwin":
        if want == "cuda":
            raise SetupError(EXIT_USAGE, "--cuda: PyTorch has no CUDA builds for macOS "
                                         "(Apple GPUs are used through MPS by the default "
                                         "build). Run without --cuda.")
        return plan("cpu", None, None, "macOS: PyPI's build (CPU, and MPS on Apple silicon)",
                    ("Darwin", "pypi"))

    def cpu_plan(why: str) -> TorchPlan:
        """The CPU build: PyPI's on Windows (CPU-only there); on Linux PyTorch's CPU-only
        wheels, since PyPI's Linux wheel pulls ~3.4 GB of CUDA libraries (nvidia/,
        triton/) a machine without an NVIDIA GPU never uses; PyPI's is the fallback."""
        if system == "Windows":
            return plan("cpu", None, None, f"{why}; PyPI's Windows build is CPU-only",
                        ("Windows", "pypi"))
        pypi = plan("cpu", None, None, f"{why}; PyPI's Linux build (it bundles CUDA "
                                       "libraries but runs on CPU)", (system, "pypi"))
        saved = ENV_GB[(system, "pypi")] - ENV_GB[(system, "cpu-index")]
        cpu = plan("cpu", PYTORCH_INDEX + "cpu", None,
                   f"{why}; CPU-only build from PyTorch's index (about {saved:.1f} GB "
                   "smaller than PyPI's, which bundles CUDA libraries)",
                   (system, "cpu-index"))
        cpu.fallback = pypi
        return cpu

    gpu = probe.ok and bool(probe.gpus)
    if want == "cpu" or (want == "auto" and not gpu):
        return cpu_plan("--cpu given" if want == "cpu" else
                        f"no usable NVIDIA GPU: {probe.describe()}")

    tag = _cuda_tag(probe.cuda_version if gpu else None)
    why = "--cuda given" if want == "cuda" else f"NVIDIA GPU found: {probe.describe()}"
    if tag is None:
        if want == "cuda":
            tag = "cu118"
            why += "; the driver looks too old for it, update the NVIDIA driver if CUDA fails"
        else:
            return cpu_plan(f"{why}, but torch {torch_version} needs a driver with CUDA "
                            "11.8 or newer: installing the CPU build (update the NVIDIA "
                            "driver and re-run with --cuda for GPU speed)")
    if system == "Linux" and tag == "cu124":
        return plan("cuda", None, None, f"{why}; PyPI's Linux build is CUDA 12.4",
                    ("Linux", "pypi"))
    return plan("cuda", PYTORCH_INDEX + tag, tag,
                f"{why}; CUDA {tag[2:-1]}.{tag[-1]} build from PyTorch's wheel index",
                (system, "cuda-index"))


# ---------------------------------------------------------------------------------------
# The environment: a venv in the checkout, or the conda env environment.yml describes.
# ---------------------------------------------------------------------------------------

@dataclass
class Env:
    kind: str                  # "venv" or "conda"
    prefix: Path               # venv folder or conda env prefix (may not exist yet)
    name: str | None = None    # conda env name
    conda_exe: str | None = None
    conda_python: str | None = None   # python=X.Y from environment.yml
    conda_deps: list[str] = field(default_factory=list)
    conda_channels: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def python(self) -> Path:
        if os.name == "nt":
            return self.prefix / ("Scripts/python.exe" if self.kind == "venv" else "python.exe")
        return self.prefix / "bin" / "python"

    @property
    def label(self) -> str:
        return (f"venv {self.prefix}" if self.kind == "venv"
                else f"conda env '{self.name}' ({self.prefix})")


def read_environment_yml(path: Path = ROOT / "environment.yml") -> dict:
    """name, conda dependencies and pip requirements of environment.yml (simple reader for
    the file this project ships: a name, a dependency list, one nested pip list)."""
    data: dict = {"name": None, "channels": [], "conda": [], "pip": []}
    section = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        text = line.strip()
        if indent == 0:
            section = None
            if text.startswith("name:"):
                data["name"] = text.split(":", 1)[1].strip()
            elif text.startswith("dependencies:"):
                section = "conda"
            elif text.startswith("channels:"):
                section = "channels"
            continue
        if not text.startswith("- "):
            continue
        item = text[2:].strip().strip("'\"")
        if section == "conda" and item == "pip:":
            section = "pip"
        elif section == "pip" and indent <= 2:   # back at the conda list's level
            section = "conda"
            data["conda"].append(item)
        elif section in ("conda", "pip", "channels"):
            data[section].append(item)
    return data


def _find_conda() -> str | None:
    exe = os.environ.get("CONDA_EXE")
    if exe and Path(exe).is_file():
        return exe
    return shutil.which("conda") or shutil.which("mamba")


def _conda_env_prefix(conda_exe: str, name: str) -> Path | None:
    out = subprocess.run([conda_exe, "env", "list", "--json"], capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise SetupError(EXIT_INSTALL, f"`conda env list` failed: {out.stderr.strip()}")
    for p in json.loads(out.stdout).get("envs", []):
        if Path(p).name == name:
            return Path(p)
    return None


def pick_env(mode: str) -> Env:
    """mode: 'auto' (conda when run inside an activated conda env, else venv), 'venv',
    'conda'."""
    in_conda = bool(os.environ.get("CONDA_PREFIX") or os.environ.get("CONDA_DEFAULT_ENV"))
    if mode == "venv" or (mode == "auto" and not in_conda):
        return Env("venv", ROOT / VENV_DIR_NAME, reason="default: a venv inside the checkout")
    yml = read_environment_yml()
    name = yml["name"] or "chatterbox"
    py = next((d.split("=", 1)[1] for d in yml["conda"] if re.match(r"python\s*=", d)), None)
    why = ("--conda given" if mode == "conda" else
           f"running inside conda (CONDA_PREFIX={os.environ.get('CONDA_PREFIX', '')}); "
           "pass --venv for a venv instead")
    conda = _find_conda()
    if conda is None:
        raise SetupError(EXIT_PYTHON, "conda was asked for but no conda executable was found "
                                      "(CONDA_EXE unset, `conda` not on PATH). Install "
                                      "Miniconda, or run without --conda to use a venv.")
    active = os.environ.get("CONDA_PREFIX")
    if active and Path(active).name == name:
        prefix: Path | None = Path(active)
    else:
        prefix = _conda_env_prefix(conda, name)
    if prefix is None:   # where `conda create -n NAME` will put it
        base = Path(subprocess.run([conda, "info", "--base"], capture_output=True, text=True,
                                   timeout=120).stdout.strip() or "")
        prefix = base / "envs" / name
    return Env("conda", prefix, name=name, conda_exe=conda, conda_python=py,
               conda_deps=yml["conda"], conda_channels=yml["channels"], reason=why)


# A tiny program run by the environment's own python: what is installed there.
_PROBE_SCRIPT = r"""
import json, re, sys, importlib.metadata as m
dists = {}
for d in m.distributions():
    n = d.metadata["Name"]
    if n:
        dists.setdefault(re.sub(r"[-_.]+", "-", n).lower(), d.version)
url = None
try:
    url = json.loads(m.distribution("cbx").read_text("direct_url.json") or "null")
except m.PackageNotFoundError:
    pass
try:
    import pip
    pip_version = pip.__version__
except ImportError:
    pip_version = None
print(json.dumps({"version": list(sys.version_info[:3]), "prefix": sys.prefix,
                  "dists": dists, "cbx_direct_url": url, "pip": pip_version}))
"""


@dataclass
class EnvState:
    exists: bool
    python_version: tuple[int, ...] | None = None
    dists: dict[str, str] = field(default_factory=dict)
    cbx_url: dict | None = None
    pip_version: str | None = None
    error: str | None = None


def probe_env(env: Env) -> EnvState:
    """Run the environment's python once to read its version and installed packages."""
    if not env.python.exists():
        return EnvState(exists=False)
    try:
        # -I: without the current folder on sys.path, where pip's cbx.egg-info would hide
        # the installed distribution's metadata.
        out = subprocess.run([str(env.python), "-I", "-c", _PROBE_SCRIPT], capture_output=True,
                             text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        return EnvState(exists=True, error=f"{type(exc).__name__}: {exc}")
    if out.returncode != 0:
        return EnvState(exists=True, error=(out.stderr.strip().splitlines() or ["?"])[-1])
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return EnvState(True, tuple(data["version"]), data["dists"], data["cbx_direct_url"],
                    data["pip"])


def pip_problem(env: Env) -> str | None:
    """None when `python -m pip --version` runs in the environment, else why it does not.

    The same command every install step uses, so a pip that imports but cannot run (a
    half-extracted one, from an interrupted ensurepip) counts as broken too."""
    try:
        out = subprocess.run([str(env.python), "-m", "pip", "--version"],
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if out.returncode == 0:
        return None
    lines = (out.stderr.strip() or out.stdout.strip()).splitlines()
    return lines[-1].strip() if lines else f"exit code {out.returncode}"


def _has_leftovers(prefix: Path) -> bool:
    try:
        return prefix.is_dir() and any(prefix.iterdir())
    except OSError:
        return True


def diagnose_env(env: Env, state: EnvState) -> tuple[str, str]:
    """What the environment needs before anything can be installed into it (read-only):

    ("create", "")        nothing there yet
    ("ok", "")            its python runs and `python -m pip --version` works
    ("repair-pip", why)   its python runs but pip does not: ensurepip repairs it
    ("recreate", why)     a venv folder whose python is missing or does not run

    An interrupted run leaves exactly these states (a venv without pip when it stopped
    before ensurepip, one without a python when it stopped earlier still), so a re-run
    must not take an existing folder for a finished environment.
    """
    if not state.exists:
        if env.kind == "venv" and _has_leftovers(env.prefix):
            return "recreate", f"{env.python} is missing (an interrupted setup?)"
        return "create", ""
    if state.error:
        return "recreate", f"its python ({env.python}) does not run: {state.error}"
    problem = pip_problem(env)
    if problem:
        return "repair-pip", f"pip does not run in it: {problem}"
    return "ok", ""


def _create_env(env: Env, creator: str | None, recreate_why: str | None = None) -> Env:
    """Create the venv (recreate_why given: wipe the folder and create it again, saying
    why), or create the conda env."""
    if env.kind != "venv":
        say(f"==> 1. creating conda env {env.name}")
        run_step(conda_create_cmd(env), "Creating the conda env")
        return pick_env("conda")
    creator = creator or sys.executable
    check = subprocess.run([creator, "-c", "import venv, ensurepip"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        minor = _interpreter_version(creator)[1]
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        raise SetupError(EXIT_PYTHON, f"{creator} cannot create venvs ({last}). "
                                      "Debian/Ubuntu: sudo apt install "
                                      f"python3.{minor}-venv")
    if recreate_why:
        say(f"==> 1. recreating the venv {env.prefix} from scratch: {recreate_why}")
        run_step([creator, "-m", "venv", "--clear", str(env.prefix)], "Recreating the venv")
    else:
        say(f"==> 1. creating {env.prefix}")
        run_step([creator, "-m", "venv", str(env.prefix)], "Creating the venv")
    return env


def ensure_env(env: Env, action: str, why: str = "",
               creator: str | None = None) -> tuple[Env, EnvState, bool]:
    """Do what diagnose_env found needed, so the environment's python runs and pip works
    in it. Returns (env, its state, fresh): fresh when it was (re)created just now and so
    holds no packages. creator: the interpreter a venv is (re)created with."""
    fresh = False
    if action == "repair-pip":
        say(f"==> 1. repairing pip in {env.label} ({why}) with ensurepip")
        cmd = [str(env.python), "-m", "ensurepip", "--upgrade"]
        say(f"    $ {' '.join(cmd)}")
        try:
            rc = subprocess.run(cmd).returncode
            problem = pip_problem(env) if rc == 0 else f"ensurepip exited with code {rc}"
        except OSError as exc:
            problem = f"cannot run {env.python}: {exc}"
        if problem:
            if env.kind != "venv":
                raise SetupError(EXIT_INSTALL, f"pip does not run in {env.label} and "
                                               f"ensurepip could not repair it: {problem}. "
                                               f"Run `conda install -n {env.name} pip` and "
                                               "re-run.")
            action, why = "recreate", f"ensurepip could not repair pip ({problem})"
    if action in ("create", "recreate"):
        if action == "recreate" and env.kind != "venv":
            raise SetupError(EXIT_INSTALL, f"{env.label} is broken ({why}). Remove it "
                                           f"(conda env remove -n {env.name}) and re-run.")
        env = _create_env(env, creator, why if action == "recreate" else None)
        fresh = True
    state = probe_env(env)
    if not state.exists or state.error:
        raise SetupError(EXIT_INSTALL, f"The environment's python {env.python} does not "
                                       f"run: {state.error or 'missing'}")
    problem = pip_problem(env)
    if problem:
        raise SetupError(EXIT_INSTALL, f"pip does not run in {env.label}: {problem}")
    return env, state, fresh


def conda_create_cmd(env: Env) -> list[str]:
    """`conda create` for environment.yml's name, channels and conda packages; the pip
    part is installed afterwards, torch first from the right index."""
    cmd = [env.conda_exe or "conda", "create", "-y", "-n", env.name or "chatterbox"]
    for ch in env.conda_channels:
        cmd += ["-c", ch]
    return cmd + env.conda_deps


def python_supported(version: tuple[int, ...]) -> bool:
    return SUPPORTED_PYTHON[0] <= tuple(version[:2]) <= SUPPORTED_PYTHON[1]


def python_install_hint(system: str) -> str:
    lo, hi = SUPPORTED_PYTHON
    want = f"{lo[0]}.{lo[1]}-{hi[0]}.{hi[1]}"
    if system == "Windows":
        return (f"Install Python 3.11 from https://www.python.org/downloads/windows/ (any of "
                f"{want} works; tick 'Add python.exe to PATH'), then run: "
                "py -3.11 setup_env.py")
    if system == "Darwin":
        return ("Install Python 3.11 (brew install python@3.11, or the python.org "
                "installer), then run: python3.11 setup_env.py")
    return ("Install Python 3.11 (Debian/Ubuntu: sudo apt install python3.11 python3.11-venv; "
            "or pyenv/conda), then run: python3.11 setup_env.py — or pass "
            "--python /path/to/python3.11")


def _interpreter_version(python: str) -> tuple[int, ...]:
    out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:3])"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SetupError(EXIT_PYTHON, f"Cannot run {python}: {out.stderr.strip()}")
    return tuple(int(x) for x in out.stdout.split())


def cbx_installed_here(state: EnvState, root: Path = ROOT) -> bool:
    """True when the environment's `cbx` is an editable install of this checkout."""
    url = (state.cbx_url or {}).get("url", "")
    if not url.startswith("file:"):
        return False
    try:
        return file_url_path(url).resolve() == root.resolve()
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------

# Run by the environment's python (huggingface_hub lives there). It writes a small JSON
# result file so the progress bars can go straight to the terminal.
_DOWNLOAD_SCRIPT = r"""
import errno, json, sys
out, repo, local_dir, patterns = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
hub_cache_files, warm_pkuseg = json.loads(sys.argv[5]), sys.argv[6] == "1"

def kind(exc):
    names = {c.__name__ for c in type(exc).__mro__}
    seen, e = set(), exc
    while e is not None and id(e) not in seen:   # look through the cause chain too
        seen.add(id(e)); names |= {c.__name__ for c in type(e).__mro__}
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return "disk"
        e = e.__cause__ or e.__context__
    if "OfflineModeIsEnabled" in names:
        return "offline"
    if names & {"GatedRepoError", "RepositoryNotFoundError"}:
        return "access"
    if names & {"ConnectError", "ConnectionError", "ConnectTimeout", "TimeoutException",
                "Timeout", "NetworkError", "LocalEntryNotFoundError", "ProxyError"}:
        return "network"
    if "HfHubHTTPError" in names:
        return "http"
    return "other"

try:
    from huggingface_hub import hf_hub_download, snapshot_download
    snapshot_download(repo_id=repo, local_dir=local_dir, allow_patterns=patterns)
    for name in hub_cache_files:
        # upstream reads these through the Hub cache at load time, not from the folder
        hf_hub_download(repo_id=repo, filename=name)
    if warm_pkuseg:
        # MTLTokenizer builds spacy_pkuseg's Chinese segmenter on every load, which
        # fetches its model on first use: fetch it now, while we are online.
        import spacy_pkuseg
        spacy_pkuseg.pkuseg()
    result = {"ok": True}
except KeyboardInterrupt:
    result = {"ok": False, "kind": "interrupted", "error": "interrupted"}
except Exception as exc:
    result = {"ok": False, "kind": kind(exc), "error": f"{type(exc).__name__}: {exc}"}
with open(out, "w", encoding="utf-8") as fh:
    json.dump(result, fh)
"""


def download_variant(env_python: Path, variant, dest: Path) -> dict:
    """Fetch exactly the files a variant needs into dest (resumable, with progress bars)."""
    patterns = list(variant.all_files) + list(variant.download_patterns)
    dest.mkdir(parents=True, exist_ok=True)
    fd, result_file = tempfile.mkstemp(prefix="cbx_download_", suffix=".json")
    os.close(fd)
    try:
        proc = subprocess.run([str(env_python), "-c", _DOWNLOAD_SCRIPT, result_file,
                               variant.repo_id, str(dest), json.dumps(patterns),
                               json.dumps(list(variant.hub_cache_files)),
                               "1" if variant.warm_pkuseg else "0"])
        text = Path(result_file).read_text(encoding="utf-8")
        if not text:
            return {"ok": False, "kind": "other",
                    "error": f"the download helper exited with code {proc.returncode}"}
        return json.loads(text)
    finally:
        os.unlink(result_file)


def download_failure_message(variant, dest: Path, result: dict) -> str:
    kind = result.get("kind")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    files = ", ".join(variant.required_files)
    if kind == "offline":
        why = "HF_HUB_OFFLINE is set, so nothing can be downloaded."
        fix = "Unset HF_HUB_OFFLINE and re-run"
    elif kind == "network":
        why = f"the Hugging Face Hub ({endpoint}) cannot be reached."
        fix = "Check the internet connection / proxy (HTTPS_PROXY) and re-run"
    elif kind == "access":
        why = f"the repository {variant.repo_id} was not found or needs a login."
        fix = "Run `hf auth login` in the environment if it is gated, then re-run"
    elif kind == "disk":
        why = f"the disk holding {dest} is full."
        fix = "Free some space (python cleanup.py shows what can go) and re-run"
    else:
        why = "the download failed."
        fix = "Re-run (downloads resume where they stopped)"
    return (f"Could not download {variant.label} ({variant.repo_id}): {why}\n"
            f"    detail: {' '.join(str(result.get('error')).split())}\n"
            f"    fix: {fix}: python setup_env.py --models {variant.name}\n"
            f"    or copy {files} into {dest}\n"
            "    The environment itself is installed and usable; the dashboard will show "
            "the missing weights until they are there.")


# ---------------------------------------------------------------------------------------
# Running things
# ---------------------------------------------------------------------------------------

def run_step(cmd: list[str], what: str, code: int = EXIT_INSTALL, env=None) -> None:
    """Run a command with its output going straight to the terminal; fail with `code`."""
    say(f"    $ {' '.join(cmd)}")
    try:
        rc = subprocess.run(cmd, env=env).returncode
    except OSError as exc:
        raise SetupError(code, f"{what} failed: cannot run {cmd[0]}: {exc}") from exc
    if rc != 0:
        raise SetupError(code, f"{what} failed (exit code {rc}); the output above says why. "
                               "Fix that and re-run: finished steps are skipped.")


def pip_cmd(env: Env, args: argparse.Namespace) -> list[str]:
    cmd = [str(env.python), "-m", "pip", "install", "--disable-pip-version-check"]
    if not args.pip_cache:
        cmd.append("--no-cache-dir")   # the CUDA wheels alone are GBs; keep the disk free
    return cmd


def torch_install_cmd(env: Env, args: argparse.Namespace, torch_plan: TorchPlan,
                      force: bool) -> list[str]:
    """pip's command for a torch plan: its index (if not PyPI), reinstalling in place
    when the installed build is the wrong one."""
    cmd = pip_cmd(env, args) + [torch_plan.torch_spec, torch_plan.torchaudio_spec]
    if torch_plan.index_url:
        cmd += ["--index-url", torch_plan.index_url]
    if force:
        cmd += ["--force-reinstall", "--no-deps"]
    return cmd


def pip_env(args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if args.pip_cache:
        env["PIP_CACHE_DIR"] = str(ROOT / ".pip_cache")
    return env


def torch_build_matches(env: Env, plan: TorchPlan) -> tuple[bool, str]:
    """Does the installed torch have CUDA when the plan wants it? (imports torch once)"""
    if not plan.expect_cuda:
        return True, ""
    out = subprocess.run([str(env.python), "-c",
                          "import torch; print(torch.version.cuda or '')"],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return False, "torch does not import: " + (out.stderr.strip().splitlines() or ["?"])[-1]
    cuda = out.stdout.strip()
    return (True, f"CUDA {cuda}") if cuda else (False, "installed torch is a CPU-only build")


def tree_bytes(path: Path) -> int:
    """Disk used by a folder (cleanup.py's measure: allocated blocks, links not followed)."""
    from cleanup import disk_usage

    return disk_usage(path)


def free_bytes(path: Path) -> int:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


# ---------------------------------------------------------------------------------------
# The plan and its execution
# ---------------------------------------------------------------------------------------

def parse_models(value: str, variants: dict) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    if names == ["all"]:
        return list(variants)
    if names == ["none"]:
        return []
    bad = [n for n in names if n not in variants]
    if bad:
        raise SetupError(EXIT_USAGE, f"Unknown model variant(s): {', '.join(bad)}. "
                                     f"Choose from: {', '.join(variants)} (or all).")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    from cbx.scripts import UsageParser   # layer 1 of this checkout: standard library only

    p = UsageParser("python setup_env.py", DESCRIPTION, EXIT_CODES_HELP, EXIT_USAGE)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--conda", action="store_true",
                       help="use the conda env from environment.yml instead of a venv "
                            "(automatic when run inside an activated conda env)")
    where.add_argument("--venv", action="store_true",
                       help=f"use a venv ({VENV_DIR_NAME}/) even inside conda")
    build = p.add_mutually_exclusive_group()
    build.add_argument("--cpu", action="store_true",
                       help="install the CPU PyTorch build (Linux: the CPU-only wheels from "
                            "PyTorch's index, else PyPI's)")
    build.add_argument("--cuda", action="store_true",
                       help="install the CUDA PyTorch build even if no GPU is detected")
    p.add_argument("--torch-index", metavar="URL",
                   help="install torch/torchaudio from this pip index instead of the "
                        f"automatic choice (e.g. {redact(PYTORCH_INDEX)}cpu)")
    p.add_argument("--python", metavar="EXE",
                   help="interpreter to create the venv with (default: the one running "
                        "this script); must be Python 3.10-3.12")
    p.add_argument("--models", default="original", metavar="LIST",
                   help="comma-separated variants to download: original (default), turbo, "
                        "multilingual, or all")
    p.add_argument("--no-models", action="store_true", help="download no weights")
    p.add_argument("--dev", action="store_true",
                   help="also install the test tools (pytest, nbclient, playwright)")
    p.add_argument("--pip-cache", action="store_true",
                   help="keep downloaded wheels in .pip_cache/ (faster re-installs; "
                        "cleanup.py removes it); default: no pip cache, to save disk")
    p.add_argument("--skip-disk-check", action="store_true",
                   help="do not stop when free disk space looks too small")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be created, installed and downloaded; change "
                        "nothing")
    p.add_argument("--where", action="store_true",
                   help="print the environment's python and exit 0 if the environment is "
                        "installed (voila present), else exit 1; changes nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except SetupError as exc:
        say(f"\nERROR: {exc.message}", err=True)
        return exc.code
    except KeyboardInterrupt:
        say("\nInterrupted. Re-run `python setup_env.py` to resume: finished steps and "
            "partly downloaded files are kept.", err=True)
        return EXIT_INTERRUPTED


@dataclass
class Plan:
    """What setup will do, found read-only before anything changes."""

    env: Env
    state: EnvState
    action: str                 # diagnose_env's: create, ok, repair-pip, recreate
    action_why: str
    creator: str | None         # the interpreter a venv is (re)created with
    creator_version: tuple
    torch_plan: "TorchPlan"
    requirements: list[str]
    models: list[str]
    to_download: list[str]
    weights_state: dict
    torch_needed: bool = True
    torch_force: bool = False
    project_done: bool = False
    pins_unmet: list[str] = field(default_factory=list)
    torch_unmet: list[str] = field(default_factory=list)
    needed_gb: float = 0.0


def _main(args: argparse.Namespace) -> int:
    from cbx import paths, variants, weights   # the standard-library layer of this checkout

    env = pick_env("conda" if args.conda else "venv" if args.venv else "auto")
    if args.where:
        return _where(env)
    check_index_urls(args.torch_index)
    plan = _make_plan(args, env, weights, variants)
    _print_plan(plan, args, paths, variants)
    if args.dry_run:
        say("Dry run: nothing was changed. Run without --dry-run to do the [do] steps.")
        return EXIT_OK
    if plan.needed_gb and not args.skip_disk_check:
        free = free_bytes(ROOT)
        if free < plan.needed_gb * 1e9:
            raise SetupError(EXIT_DISK, f"About {plan.needed_gb:.1f} GB is needed but only "
                                        f"{free / 1e9:.1f} GB is free. Free some space "
                                        "(python cleanup.py lists what it can remove), "
                                        "download fewer variants, or pass "
                                        "--skip-disk-check.")
    started = time.monotonic()
    env = _install(plan, args)
    failed_downloads, broken = _fetch_and_verify(plan, env, weights, paths, variants)
    summary(env, plan.models, failed_downloads, broken, paths, variants, started)
    if failed_downloads:
        return EXIT_DOWNLOAD
    if broken:
        return EXIT_VERIFY
    return EXIT_OK


def _where(env: Env) -> int:
    """--where: print the environment's python when it is set up (the start scripts)."""
    state = probe_env(env)
    if state.exists and "voila" in state.dists:
        say(str(env.python))
        return EXIT_OK
    say(f"not set up: {env.label} " + ("has no voila" if state.exists else "missing"),
        err=True)
    return 1


def _make_plan(args: argparse.Namespace, env: Env, weights, variants) -> Plan:
    """Everything setup needs to know, read-only: environment, PyTorch build, pins."""
    system = platform.system()
    models = [] if args.no_models else parse_models(args.models, variants.VARIANTS)
    runtime, dev = read_pins()
    pins = {_normalize(split_requirement(r)[0]): split_requirement(r)[1] for r in runtime}
    want = "cpu" if args.cpu else "cuda" if args.cuda else "auto"
    probe = probe_gpu(system) if (want == "auto" and not args.torch_index) else GpuProbe(False)
    torch_plan = choose_torch(system, probe, want, args.torch_index,
                              pins.get("torch") or "2.6.0", pins.get("torchaudio") or "2.6.0")
    creator, creator_version = None, ()
    if env.kind == "venv":
        creator = args.python or sys.executable
        creator_version = (tuple(sys.version_info[:3]) if creator == sys.executable
                           else _interpreter_version(creator))
    state = probe_env(env)
    action, action_why = diagnose_env(env, state)
    if action == "recreate":
        if env.kind != "venv":
            raise SetupError(EXIT_INSTALL, f"{env.label} is broken ({action_why}). Remove "
                                           f"it (conda env remove -n {env.name}) and re-run.")
        state = EnvState(exists=False)   # planned as a new environment
    if state.exists and not python_supported(state.python_version):
        raise SetupError(EXIT_PYTHON, f"{env.label} uses Python "
                                      f"{'.'.join(map(str, state.python_version))}, which "
                                      "torch 2.6.0 does not support. Remove it (python "
                                      "cleanup.py --env-only) and re-run with Python "
                                      f"3.10-3.12. {python_install_hint(system)}")
    if not state.exists and env.kind == "venv" and not python_supported(creator_version):
        raise SetupError(EXIT_PYTHON, f"Python {'.'.join(map(str, creator_version))} "
                                      f"({creator}) cannot run torch 2.6.0, which "
                                      "chatterbox-tts 0.1.7 pins. "
                                      + python_install_hint(system))
    requirements = runtime + (dev if args.dev else [])
    weights_state = {m: weights.check_weights(m) for m in models}
    plan = Plan(env=env, state=state, action=action, action_why=action_why, creator=creator,
                creator_version=creator_version, torch_plan=torch_plan,
                requirements=requirements, models=models,
                to_download=[m for m in models if not weights_state[m].complete],
                weights_state=weights_state)
    plan.torch_unmet = unmet_pins([torch_plan.torch_spec, torch_plan.torchaudio_spec],
                                  state.dists)
    plan.pins_unmet = unmet_pins(requirements, state.dists)
    plan.project_done = state.exists and not plan.pins_unmet and cbx_installed_here(state)
    if torch_plan.fallback is not None and (not state.exists or plan.torch_unmet):
        # torch will be installed: from PyTorch's index only if pip can reach it (asked
        # now, so the plan, the disk estimate and the dry run all say which build)
        reachable, why = index_reachable(torch_plan.index_url)
        if not reachable:
            plan.torch_plan = torch_plan.fall_back(why)
    return plan


def _print_plan(plan: Plan, args: argparse.Namespace, paths, variants) -> None:
    """Say what will be done ([do]) and what is already done ([skip]); sets the torch
    decision and the disk estimate on the plan."""
    env, state, torch_plan = plan.env, plan.state, plan.torch_plan
    say("Chatterbox Studio setup" + ("  (dry run: nothing will be changed)" if args.dry_run
                                     else ""))
    say(f"  machine:     {platform.system()} {platform.machine()}, running Python "
        f"{platform.python_version()} ({sys.executable})")
    say(f"  environment: {env.label}  [{env.reason}]")
    say(f"  PyTorch:     {torch_plan.build.upper()} build, {torch_plan.torch_spec} "
        f"{torch_plan.torchaudio_spec} from {torch_plan.source}")
    say(f"               why: {torch_plan.reason}")
    say("")
    say("Plan:")
    _plan_environment(plan)
    _plan_torch(plan)
    if plan.project_done:
        say(f"  [skip] 3. all {len(plan.requirements)} pinned packages and cbx (editable, "
            "this checkout) already installed")
    else:
        extra = "[dev]" if args.dev else ""
        detail = (f"{len(plan.pins_unmet)} unmet: " + ", ".join(plan.pins_unmet[:6])
                  + (" ..." if len(plan.pins_unmet) > 6 else "")) \
            if state.exists and plan.pins_unmet \
            else "cbx not installed from this checkout" if state.exists else \
            f"{len(plan.requirements)} pinned packages"
        say(f"  [do]   3. pip install -e .{extra}  ({detail})")
    for i, m in enumerate(plan.models, start=4):
        v = variants.VARIANTS[m]
        dest = paths.variant_dir(m)
        if m in plan.to_download:
            plan.needed_gb += v.approx_download_gb
            broken = "; ".join(f"{f.name}: {f.problem}"
                               for f in plan.weights_state[m].broken_files)
            say(f"  [do]   {i}. download {v.label} from {v.repo_id} -> {dest} "
                f"(about {v.approx_download_gb:g} GB; files: {', '.join(v.all_files)}; "
                f"now: {broken})")
        else:
            say(f"  [skip] {i}. {v.label} weights complete in {dest}")
    if not plan.models:
        say("  [skip] weights: --no-models")
    say(f"  disk:  about {plan.needed_gb:.1f} GB needed, "
        f"{free_bytes(ROOT) / 1e9:.1f} GB free on the checkout's drive")
    say("")


def _plan_environment(plan: Plan) -> None:
    env, state = plan.env, plan.state
    if state.exists and plan.action == "repair-pip":
        say(f"  [do]   1. repair pip in {env.label} with `python -m ensurepip --upgrade` "
            f"({plan.action_why}); the venv is recreated if that fails")
    elif state.exists:
        say(f"  [skip] 1. environment exists: {env.python} (Python "
            f"{'.'.join(map(str, state.python_version))})")
    else:
        plan.needed_gb += ENV_GB.get(plan.torch_plan.size_key, ENV_GB_DEFAULT)
        if env.kind == "venv":
            verb = "recreate" if plan.action == "recreate" else "create"
            say(f"  [do]   1. {verb} venv {env.prefix} with Python "
                f"{'.'.join(map(str, plan.creator_version))} ({plan.creator})"
                + (f": {plan.action_why}" if plan.action == "recreate" else ""))
        else:
            say(f"  [do]   1. {' '.join(conda_create_cmd(env))}")


def _plan_torch(plan: Plan) -> None:
    env, state, torch_plan = plan.env, plan.state, plan.torch_plan
    if state.exists and not plan.torch_unmet:
        ok, detail = torch_build_matches(env, torch_plan)   # read-only: imports torch
        if ok:
            say(f"  [skip] 2. torch {state.dists.get('torch')} / torchaudio "
                f"{state.dists.get('torchaudio')} already installed"
                + (f" ({detail})" if detail else ""))
            plan.torch_needed, plan.torch_force = False, False
        else:
            say(f"  [do]   2. reinstall torch/torchaudio as the {torch_plan.build.upper()} "
                f"build from {torch_plan.source} ({detail})")
            plan.torch_needed, plan.torch_force = True, True
        return
    plan.torch_needed, plan.torch_force = True, False
    if state.exists:
        plan.needed_gb += ENV_GB.get(torch_plan.size_key, ENV_GB_DEFAULT) / 2   # torch is most of it
    why = "; ".join(plan.torch_unmet) if state.exists else "new environment"
    say(f"  [do]   2. install {torch_plan.torch_spec} {torch_plan.torchaudio_spec} from "
        f"{torch_plan.source} ({why})")


def _install(plan: Plan, args: argparse.Namespace) -> Env:
    """Steps 1-3: the environment, PyTorch, the pinned packages and cbx."""
    env, torch_plan = plan.env, plan.torch_plan
    if plan.action != "ok":
        env, state, fresh = ensure_env(env, plan.action, plan.action_why,
                                       plan.creator if env.kind == "venv" else None)
        if fresh:   # nothing installed in it yet (also when a pip repair fell back)
            plan.torch_needed, plan.torch_force, plan.project_done = True, False, False
        if tuple(int(x) for x in re.findall(r"\d+", state.pip_version or "0")[:2]) < (23, 0):
            say("==>    upgrading pip (editable installs need a recent one)")
            run_step(pip_cmd(env, args) + ["--upgrade", "pip"], "Upgrading pip",
                     env=pip_env(args))
    if plan.torch_needed:
        say(f"==> 2. installing PyTorch ({torch_plan.build.upper()} build)")
        try:
            run_step(torch_install_cmd(env, args, torch_plan, plan.torch_force),
                     "Installing PyTorch", env=pip_env(args))
        except SetupError as exc:
            if torch_plan.fallback is None:
                raise
            # the index answered the plan's probe but failed during the install
            plan.torch_plan = torch_plan = torch_plan.fall_back(
                f"pip failed: {exc.message.split(';')[0]}")
            say(f"==>    {torch_plan.reason}")
            run_step(torch_install_cmd(env, args, torch_plan, plan.torch_force),
                     "Installing PyTorch from PyPI", env=pip_env(args))
        ok, detail = torch_build_matches(env, torch_plan)
        if not ok:
            raise SetupError(EXIT_INSTALL, f"PyTorch installed but not as the "
                                           f"{torch_plan.build.upper()} build: {detail}.")
    if not plan.project_done:
        extra = "[dev]" if args.dev else ""
        say(f"==> 3. installing the pinned packages and cbx (pip install -e .{extra})")
        run_step(pip_cmd(env, args) + ["-e", f"{ROOT}{extra}"], "Installing the packages",
                 env=pip_env(args))
        state = probe_env(env)
        still = unmet_pins(plan.requirements, state.dists)
        if still or not cbx_installed_here(state):
            raise SetupError(EXIT_INSTALL, "pip finished but the environment still lacks: "
                                           + (", ".join(still) or "cbx from this checkout"))
    enable_server_extension(env)
    return env


SERVER_EXTENSION_CONFIG = ROOT / "voila_config" / "jupyter_server_config.d" / "cbx.json"


def enable_server_extension(env: Env) -> Path:
    """Put cbx's Jupyter server config in the environment's etc/jupyter, where JupyterLab
    reads it, so the dashboard's Download links work there too (`jupyter server
    extension enable` only toggles extensions a config already names). Idempotent."""
    target = env.prefix / "etc" / "jupyter" / "jupyter_server_config.d" / "cbx.json"
    data = SERVER_EXTENSION_CONFIG.read_bytes()
    if not target.is_file() or target.read_bytes() != data:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return target


def _fetch_and_verify(plan: Plan, env: Env, weights, paths,
                      variants) -> tuple[list[str], dict[str, str]]:
    """Download the missing weights, then check every chosen variant's files."""
    failed_downloads: list[str] = []
    for m in plan.to_download:
        v = variants.VARIANTS[m]
        dest = paths.variant_dir(m)
        say(f"==> downloading {v.label} (about {v.approx_download_gb:g} GB) into {dest}")
        result = download_variant(env.python, v, dest)
        if result.get("kind") == "interrupted":
            raise KeyboardInterrupt
        if not result.get("ok"):
            say(download_failure_message(v, dest, result), err=True)
            failed_downloads.append(m)
    broken: dict[str, str] = {}
    for m in plan.models:
        if m in failed_downloads:
            continue
        w = weights.check_weights(m)
        if not w.complete:
            broken[m] = "; ".join(f"{f.name}: {f.problem}" for f in w.broken_files)
    return failed_downloads, broken


def _status_report(env: Env) -> dict | None:
    """cbx's own status report, run by the environment's python (libraries, device)."""
    try:
        out = subprocess.run([str(env.python), "-m", "cbx", "status", "--json"],
                             capture_output=True, text=True, timeout=300, cwd=str(ROOT))
        return json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        return None


def summary(env: Env, models, failed, broken, paths, variants, started) -> None:
    from cbx.scripts import cuda_library_dirs   # layer 1 of this checkout: standard
    from cbx.units import format_bytes          # library only

    say("")
    say("Summary")
    report = _status_report(env)
    if report is None:
        say("  ! `python -m cbx status --json` did not run in the environment; run it to "
            "see what is wrong")
    else:
        libs = report.get("libraries", [])
        bad = [f"{lib['distribution']} ({lib['error']})" for lib in libs
               if not lib.get("importable")]
        vers = {lib["distribution"]: lib.get("version") for lib in libs}
        say(f"  installed:  Python {report.get('python')}, torch {vers.get('torch')}, "
            f"chatterbox-tts {vers.get('chatterbox-tts')}, voila {vers.get('voila')}")
        dev = report.get("device", {})
        gpu = dev.get("cuda_device_name")
        if gpu:
            device = f"{dev.get('resolved')} ({gpu}), torch CUDA {dev.get('cuda_build')}"
        elif dev.get("cuda_build"):
            device = (f"{dev.get('resolved')} (this torch supports CUDA "
                      f"{dev['cuda_build']}, but no CUDA GPU is usable here)")
        else:
            device = f"{dev.get('resolved')} (CPU-only torch build)"
        say(f"  device:     {device}")
        if bad:
            say(f"  ! not importable: {', '.join(bad)}")
    for m in models:
        v = variants.VARIANTS[m]
        dest = paths.variant_dir(m)
        if m in failed:
            state = "NOT downloaded (see the error above)"
        elif m in broken:
            state = f"INCOMPLETE: {broken[m]}"
        else:
            state = f"complete, {format_bytes(tree_bytes(dest))}"
        say(f"  weights:    {v.label}: {state}  [{dest}]")
    if not models:
        say("  weights:    none requested (--no-models)")
    cuda = sum(tree_bytes(d) for d in cuda_library_dirs(env.prefix))
    say(f"  disk used:  environment {format_bytes(tree_bytes(env.prefix))} in {env.prefix}"
        + (f" (CUDA libraries: {format_bytes(cuda)})" if cuda else "") + "; "
        f"model cache {format_bytes(tree_bytes(paths.model_dir()))} in {paths.model_dir()}")
    say(f"  took:       {time.monotonic() - started:.0f} s")
    say("")
    start = "start_windows.bat" if os.name == "nt" else "./start_linux.sh"
    say("Next: start the dashboard with")
    say(f"    {start}")
    say(f"or by hand (from this folder):  {env.python} -m cbx.ui")
    if env.kind == "conda":
        say(f"(conda: or `conda activate {env.name}` and then `python -m cbx.ui`)")


if __name__ == "__main__":
    sys.exit(main())

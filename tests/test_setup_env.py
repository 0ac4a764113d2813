"""setup_env.py: the PyTorch build chosen per platform and GPU, the pins it installs,
the --dry-run plan, idempotent re-runs and the offline download failure.

The full environment creation (venv, torch, every pin) is exercised by CI running
setup_env.py itself; here the slow parts run against a venv that borrows this
interpreter's site-packages through a .pth file, so every check setup_env.py makes is
real but nothing big is downloaded.
"""
from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import setup_env as se  # noqa: E402
from cbx import variants  # noqa: E402

# ---------------------------------------------------------------------------------------
# Pins
# ---------------------------------------------------------------------------------------


def test_pyproject_reader_matches_tomllib():
    tomllib = pytest.importorskip("tomllib")   # Python 3.11+
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    runtime, dev = se.read_pins()
    assert runtime == data["project"]["dependencies"]
    assert dev == data["project"]["optional-dependencies"]["dev"]


def test_toml_reader_handles_comments_and_one_line_arrays():
    text = ('[project]\nname = "x"\n# dependencies = ["no==1"]\n'
            'dependencies = ["a==1", "b-c==2.0"]  # trailing\n'
            '[other]\ndependencies = ["z==9"]\n')
    assert se._toml_string_array(text, "project", "dependencies") == ["a==1", "b-c==2.0"]
    assert se._toml_string_array(text, "other", "dependencies") == ["z==9"]


def test_environment_yml_has_the_same_pins_as_pyproject():
    runtime, _ = se.read_pins()
    yml = se.read_environment_yml()
    pip_pins = [p for p in yml["pip"] if not p.startswith("-")]
    assert sorted(map(str.lower, pip_pins)) == sorted(map(str.lower, runtime))
    assert "-e ." in yml["pip"], "environment.yml must install the project itself"
    py = next(d for d in yml["conda"] if d.startswith("python="))
    major, minor = (int(x) for x in py.split("=", 1)[1].split(".")[:2])
    assert se.python_supported((major, minor))
    assert yml["name"]


def test_every_pin_is_exact():
    runtime, dev = se.read_pins()
    for req in runtime + dev:
        name, version = se.split_requirement(req)
        assert version, f"{req} is not pinned with =="


@pytest.mark.parametrize("installed,wanted,ok", [
    ("2.6.0", "2.6.0", True),
    ("2.6.0+cu124", "2.6.0", True),          # PEP 440: a public pin ignores local labels
    ("2.6.0+cpu", "2.6.0+cu124", False),
    ("2.6.0", "2.6.0+cu124", False),
    ("2.6.0+cu124", "2.6.0+cu124", True),
    ("2.5.1", "2.6.0", False),
])
def test_version_matches(installed, wanted, ok):
    assert se.version_matches(installed, wanted) is ok


def test_unmet_pins_names_missing_and_wrong_versions():
    installed = {"torch": "2.6.0+cu124", "huggingface-hub": "1.33.0", "numpy": "2.0.0"}
    unmet = se.unmet_pins(["torch==2.6.0", "huggingface_hub==1.33.0", "numpy==1.26.4",
                           "voila==0.5.13"], installed)
    assert unmet == ["numpy==1.26.4 (found 2.0.0)", "voila==0.5.13 (not installed)"]


# ---------------------------------------------------------------------------------------
# GPU detection and the PyTorch build
# ---------------------------------------------------------------------------------------

SMI_QUERY = "NVIDIA GeForce RTX 3050, 6144, 552.22\n"
SMI_PLAIN = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 552.22                 Driver Version: 552.22         CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
"""


class FakeRun:
    """Stands in for subprocess.run: answers like nvidia-smi would, records calls."""

    def __init__(self, query_rc=0, query_out=SMI_QUERY, cuda="12.4", exc=None):
        self.query_rc, self.query_out, self.cuda, self.exc = query_rc, query_out, cuda, exc
        self.calls = []

    def __call__(self, cmd, **kw):
        self.calls.append(cmd)
        if self.exc:
            raise self.exc
        if any(a.startswith("--query-gpu") for a in cmd):
            return subprocess.CompletedProcess(cmd, self.query_rc, self.query_out,
                                               "NVIDIA-SMI has failed because it couldn't "
                                               "communicate with the NVIDIA driver."
                                               if self.query_rc else "")
        return subprocess.CompletedProcess(cmd, 0, SMI_PLAIN.format(cuda=self.cuda), "")


def probe(system="Windows", **kw):
    return se.probe_gpu(system, run=FakeRun(**kw), which=lambda s: "nvidia-smi")


def test_probe_reads_gpu_memory_driver_and_cuda_version():
    p = probe()
    assert p.ok and p.gpus == [("NVIDIA GeForce RTX 3050", 6144)]
    assert p.driver == "552.22" and p.cuda_version == (12, 4)
    assert "RTX 3050" in p.describe() and "CUDA 12.4" in p.describe()


def test_probe_missing_failing_and_hanging_nvidia_smi():
    missing = se.probe_gpu("Linux", run=FakeRun(), which=lambda s: None)
    assert not missing.found and "not found" in missing.describe()
    failing = probe(query_rc=9)
    assert failing.found and not failing.ok and "exit code 9" in failing.error
    assert "couldn't communicate" in failing.error
    hanging = probe(exc=subprocess.TimeoutExpired("nvidia-smi", 20))
    assert hanging.found and not hanging.ok and "TimeoutExpired" in hanging.error
    no_gpu = probe(query_out="")
    assert no_gpu.ok and no_gpu.gpus == [] and "no NVIDIA GPU" in no_gpu.describe()


def test_probe_on_windows_finds_legacy_nvsmi_folder(tmp_path, monkeypatch):
    exe = tmp_path / "NVIDIA Corporation" / "NVSMI" / "nvidia-smi.exe"
    exe.parent.mkdir(parents=True)
    exe.write_bytes(b"")
    monkeypatch.setenv("ProgramFiles", str(tmp_path))
    monkeypatch.setattr(se.shutil, "which", lambda name: None)
    assert se._find_nvidia_smi("Windows") == str(exe)
    assert se._find_nvidia_smi("Linux") is None


CPU = "https://download.pytorch.org/whl/cpu"
CU124 = "https://download.pytorch.org/whl/cu124"
CU118 = "https://download.pytorch.org/whl/cu118"
GPU = dict()                             # RTX 3050, driver CUDA 12.4
GPU_CUDA_12_2 = dict(cuda="12.2")
GPU_CUDA_11_8 = dict(cuda="11.8")
GPU_CUDA_11_4 = dict(cuda="11.4")
NO_GPU = dict(query_out="")
FAILING = dict(query_rc=9)


@pytest.mark.parametrize("system,smi,want,build,index,torch_spec", [
    # Windows: PyPI's torch is CPU-only, so CUDA must come from PyTorch's index.
    ("Windows", GPU, "auto", "cuda", CU124, "torch==2.6.0+cu124"),
    ("Windows", GPU_CUDA_12_2, "auto", "cuda", CU124, "torch==2.6.0+cu124"),
    ("Windows", GPU_CUDA_11_8, "auto", "cuda", CU118, "torch==2.6.0+cu118"),
    ("Windows", GPU_CUDA_11_4, "auto", "cpu", None, "torch==2.6.0"),
    ("Windows", NO_GPU, "auto", "cpu", None, "torch==2.6.0"),
    ("Windows", FAILING, "auto", "cpu", None, "torch==2.6.0"),
    ("Windows", None, "auto", "cpu", None, "torch==2.6.0"),
    ("Windows", GPU, "cpu", "cpu", None, "torch==2.6.0"),
    ("Windows", None, "cuda", "cuda", CU124, "torch==2.6.0+cu124"),
    # Linux: PyPI's torch 2.6.0 already is the CUDA 12.4 build; without a GPU, the
    # CPU-only wheels from PyTorch's index (PyPI's would bring 3.4 GB of CUDA libraries).
    ("Linux", GPU, "auto", "cuda", None, "torch==2.6.0"),
    ("Linux", GPU_CUDA_11_8, "auto", "cuda", CU118, "torch==2.6.0+cu118"),
    ("Linux", GPU_CUDA_11_4, "auto", "cpu", CPU, "torch==2.6.0"),
    ("Linux", NO_GPU, "auto", "cpu", CPU, "torch==2.6.0"),
    ("Linux", FAILING, "auto", "cpu", CPU, "torch==2.6.0"),
    ("Linux", None, "auto", "cpu", CPU, "torch==2.6.0"),
    ("Linux", None, "cuda", "cuda", None, "torch==2.6.0"),
    ("Linux", GPU, "cpu", "cpu", CPU, "torch==2.6.0"),
    # macOS: no CUDA at all; PyPI's build (MPS on Apple silicon).
    ("Darwin", None, "auto", "cpu", None, "torch==2.6.0"),
    ("Darwin", GPU, "auto", "cpu", None, "torch==2.6.0"),
])
def test_torch_build_choice(system, smi, want, build, index, torch_spec):
    p = se.GpuProbe(found=False) if smi is None else probe(system, **smi)
    plan = se.choose_torch(system, p, want)
    assert (plan.build, plan.index_url, plan.torch_spec) == (build, index, torch_spec)
    assert plan.torchaudio_spec == torch_spec.replace("torch==", "torchaudio==")
    assert plan.expect_cuda is (build == "cuda")
    assert plan.reason
    if index == CPU:        # PyPI's build is what is left when PyTorch's index is not
        fallback = plan.fallback
        assert (fallback.build, fallback.index_url, fallback.torch_spec) == (
            "cpu", None, torch_spec)
        assert plan.size_key == ("Linux", "cpu-index") and "3.6 GB smaller" in plan.reason
    else:
        assert plan.fallback is None


def test_falling_back_to_pypi_says_why_and_what_it_costs_on_disk():
    plan = se.choose_torch("Linux", se.GpuProbe(found=False), "auto")
    fallback = plan.fall_back("URLError: [Errno 111] Connection refused")
    assert fallback.source == "PyPI" and fallback.torch_spec == plan.torch_spec
    assert fallback.size_key == ("Linux", "pypi") and fallback.fallback is None
    assert f"PyTorch's index {CPU} cannot be reached (URLError: [Errno 111]" in \
        fallback.reason
    assert "about 3.6 GB more on disk (environment about 6.6 GB instead of 3.0 GB)" in \
        fallback.reason
    assert fallback.reason.startswith("no usable NVIDIA GPU")


SECRET = "hunter2-s3cr3t"       # a mirror's password: must never be shown


def torch_page(index: Path) -> Path:
    """A PEP 503 index folder with torch's page, as pip reads it (also from file://)."""
    page = index / "torch" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_text('<a href="torch-2.6.0+cpu-cp311-cp311-linux_x86_64.whl">torch</a>')
    return page


@contextlib.contextmanager
def index_server(folder: Path, login: str | None = None):
    """Serve `folder` over HTTP on 127.0.0.1 (yields the base URL); with login
    ('user:password') every request without that Basic auth gets 401, as a company
    mirror answers."""
    wanted = login and "Basic " + base64.b64encode(login.encode()).decode()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):
            if wanted and self.headers.get("Authorization") != wanted:
                self.send_error(401)
            else:
                super().do_GET()

        def log_message(self, *args):    # keep the test's output readable
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_index_probe_asks_for_the_torch_page(tmp_path):
    torch_page(tmp_path / "cpu")
    with index_server(tmp_path) as base:
        assert se.index_reachable(base + "/cpu") == (True, "")
        ok, why = se.index_reachable(base + "/cu999/")
        assert not ok and why == f"HTTP 404 for {base}/cu999/torch/"
    ok, why = se.index_reachable("http://127.0.0.1:9/whl/cpu", timeout=5)
    assert not ok and "refused" in why.lower()


def test_index_probe_logs_in_with_the_urls_user_and_password(tmp_path):
    torch_page(tmp_path / "whl" / "cpu")
    with index_server(tmp_path, login=f"user:{SECRET}") as base:
        host = base[len("http://"):]
        assert se.index_reachable(f"http://user:{SECRET}@{host}/whl/cpu") == (True, "")
        ok, why = se.index_reachable(f"http://user:wrong@{host}/whl/cpu")
        assert not ok
        assert why == f"HTTP 401 for {base}/whl/cpu/torch/ (user name or password refused)"


def test_a_file_index_is_reachable_when_pip_can_read_torchs_page(tmp_path):
    """pip reads <index>/torch/index.html from a file:// index: a folder without it (even
    one holding torch wheels) gives pip nothing, so it counts as unreachable."""
    mirror = tmp_path / "srv" / "whl" / "cpu"
    torch_page(mirror)
    assert se.index_reachable(mirror.as_uri()) == (True, "")
    assert se.index_reachable(mirror.as_uri() + "/") == (True, "")
    missing = tmp_path / "nowhere"
    assert se.index_reachable(missing.as_uri()) == (False,
                                                    f"folder {missing} does not exist")
    wheels = tmp_path / "wheels"
    (wheels / "torch").mkdir(parents=True)
    (wheels / "torch" / "torch-2.6.0+cpu-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
    ok, why = se.index_reachable(wheels.as_uri())
    assert not ok
    assert why.startswith(f"{wheels} has no torch{os.sep}index.html, the page pip reads")


@pytest.mark.parametrize("text, shown", [
    ("https://user:hunter2@host/whl", "https://user:***@host/whl"),
    ("from http://me:p%40ss@127.0.0.1:8080/whl/cpu (new environment)",
     "from http://me:***@127.0.0.1:8080/whl/cpu (new environment)"),
    ("https://t0ken@host/simple", "https://***@host/simple"),         # a lone token
    ("https://user:pa/ss@host/whl", "https://user:***@host/whl"),     # unencoded '/'
    ("https://user:p@ss@host/whl", "https://user:***@host/whl"),      # unencoded '@'
    ("$ pip install torch --index-url https://u:pw@h/whl/cpu --no-deps",
     "$ pip install torch --index-url https://u:***@h/whl/cpu --no-deps"),
    ("https://download.pytorch.org/whl/cpu", "https://download.pytorch.org/whl/cpu"),
    ("file:///srv/whl/cpu", "file:///srv/whl/cpu"),
])
def test_redact_hides_the_password_of_every_url(text, shown):
    assert se.redact(text) == shown


@pytest.mark.parametrize("index", [f"https://user:{SECRET}@mirror.example/whl/cpu",
                                   "file:///srv/whl/cpu"])
def test_pip_gets_the_index_as_is_and_the_printed_command_hides_its_password(
        monkeypatch, capsys, index):
    ran = []
    monkeypatch.setattr(se.subprocess, "run",
                        lambda cmd, env=None: ran.append(cmd) or
                        subprocess.CompletedProcess(cmd, 0))
    plan = se.choose_torch("Linux", se.GpuProbe(found=False), "auto", torch_index=index)
    args = se.build_parser().parse_args([])
    cmd = se.torch_install_cmd(se.Env("venv", Path("venv")), args, plan, False)
    se.run_step(cmd, "Installing PyTorch")
    assert ran == [cmd] and cmd[-2:] == ["--index-url", index]
    out = capsys.readouterr().out
    assert f"--index-url {se.redact(index)}" in out and SECRET not in out


@pytest.mark.parametrize("system, smi, reachable, source, build", [
    ("Linux", NO_GPU, True, CPU, "CPU"),
    ("Linux", NO_GPU, False, "PyPI", "CPU"),
    ("Linux", None, False, "PyPI", "CPU"),
    ("Linux", GPU_CUDA_11_4, True, CPU, "CPU"),
    ("Linux", GPU, None, "PyPI", "CUDA"),
    ("Linux", GPU_CUDA_11_8, None, CU118, "CUDA"),
    ("Windows", NO_GPU, None, "PyPI", "CPU"),
    ("Windows", GPU, None, CU124, "CUDA"),
    ("Darwin", None, None, "PyPI", "CPU"),
])
def test_dry_run_plan_for_each_system_and_gpu(tmp_path, monkeypatch, capsys, system, smi,
                                              reachable, source, build):
    """The plan --dry-run prints for a new environment, per (system, GPU, index)."""
    probed = []

    def reach(url, timeout=se.INDEX_PROBE_TIMEOUT):
        probed.append(url)
        assert reachable is not None, "only the CPU index has a fallback to probe for"
        return (True, "") if reachable else (False, "URLError: timed out")

    gpu = se.GpuProbe(found=False) if smi is None else probe(system, **smi)
    monkeypatch.setattr(se.platform, "system", lambda: system)
    monkeypatch.setattr(se, "probe_gpu", lambda system: gpu)
    monkeypatch.setattr(se, "index_reachable", reach)
    monkeypatch.setattr(se, "ROOT", tmp_path)           # a checkout with no environment yet
    assert se.main(["--dry-run", "--no-models", "--venv"]) == se.EXIT_OK
    out = capsys.readouterr().out
    assert f"PyTorch:     {build} build" in out
    assert f"install torch==2.6.0{'+cu118' if source == CU118 else ''}" in out
    assert f"from {source} (new environment)" in out
    assert probed == ([CPU] if reachable is not None else [])
    if reachable is False:
        assert "cannot be reached (URLError: timed out)" in out
        assert "about 3.6 GB more on disk" in out
    env_gb = se.ENV_GB[(system, {CPU: "cpu-index", "PyPI": "pypi"}.get(source, "cuda-index"))]
    assert f"about {env_gb:.1f} GB needed" in out
    assert not (tmp_path / ".venv_chatterbox").exists()


def test_install_falls_back_to_pypi_when_the_index_fails_mid_install(monkeypatch, capsys):
    commands = []

    def run_step(cmd, what, code=se.EXIT_INSTALL, env=None):
        commands.append(cmd)
        if "--index-url" in cmd:
            raise se.SetupError(code, f"{what} failed (exit code 1); the output above says why.")

    monkeypatch.setattr(se, "run_step", run_step)
    monkeypatch.setattr(se, "torch_build_matches", lambda env, plan: (True, ""))
    monkeypatch.setattr(se, "enable_server_extension", lambda env: None)
    torch_plan = se.choose_torch("Linux", se.GpuProbe(found=False), "auto")
    env = se.Env("venv", Path("/nonexistent/venv"))
    plan = se.Plan(env=env, state=se.EnvState(exists=True), action="ok", action_why="",
                   creator=None, creator_version=(), torch_plan=torch_plan, requirements=[],
                   models=[], to_download=[], weights_state={}, project_done=True)
    args = se.build_parser().parse_args([])
    se._install(plan, args)
    assert [c[-2:] for c in commands] == [["--index-url", CPU],
                                          ["torch==2.6.0", "torchaudio==2.6.0"]]
    assert plan.torch_plan.source == "PyPI"
    out = capsys.readouterr().out
    assert "cannot be reached (pip failed: Installing PyTorch failed (exit code 1)" in out
    assert "3.6 GB more on disk" in out


def test_torch_index_override_and_cuda_on_macos():
    cpu = se.choose_torch("Linux", probe("Linux"), "auto",
                          torch_index="https://download.pytorch.org/whl/cpu")
    assert (cpu.build, cpu.index_url, cpu.torch_spec) == (
        "cpu", "https://download.pytorch.org/whl/cpu", "torch==2.6.0")
    mirror = se.choose_torch("Windows", se.GpuProbe(False), "cuda",
                             torch_index="https://mirror.example/whl/cu124/")
    assert mirror.build == "cuda" and mirror.expect_cuda
    with pytest.raises(se.SetupError) as err:
        se.choose_torch("Darwin", se.GpuProbe(False), "cuda")
    assert err.value.code == se.EXIT_USAGE


def test_torch_versions_follow_the_pins():
    plan = se.choose_torch("Windows", probe(), "auto", torch_version="2.7.1",
                           torchaudio_version="2.7.1")
    assert plan.torch_spec == "torch==2.7.1+cu124"
    assert plan.torchaudio_spec == "torchaudio==2.7.1+cu124"


# ---------------------------------------------------------------------------------------
# Running the script in a copy of the checkout
# ---------------------------------------------------------------------------------------

COPY_ITEMS = ("setup_env.py", "cleanup.py", "pyproject.toml", "environment.yml",
              "README.md", "cbx", "voila_config")


def make_checkout(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in COPY_ITEMS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    (dest / "model_cache").mkdir()
    (dest / "model_cache" / ".gitkeep").write_bytes(b"")
    return dest


def clean_env(tmp_path: Path, **extra) -> dict:
    """The environment for running setup_env.py: no conda, no cbx path overrides, an
    isolated Hugging Face home, and nothing from the repo's own venv activation."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CONDA", "CBX_", "HF_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env["HF_HOME"] = str(tmp_path / "hf_home")
    env.update(extra)
    return env


def run_setup(checkout: Path, *args, env=None, timeout=600):
    return subprocess.run([sys.executable, str(checkout / "setup_env.py"), *args],
                          cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=timeout)


def snapshot(folder: Path) -> dict:
    """Every path under folder with its type, size and modification time."""
    out = {}
    for p in sorted(folder.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(folder))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def test_dry_run_prints_the_plan_and_changes_nothing(tmp_path):
    checkout = make_checkout(tmp_path / "repo")
    before = snapshot(tmp_path)
    # PyTorch's index made unreachable (a closed port): Linux falls back to PyPI
    env = clean_env(tmp_path, CBX_PYTORCH_INDEX="http://127.0.0.1:9/whl/")
    r = run_setup(checkout, "--dry-run", "--cpu", "--models", "all", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "dry run" in out.lower()
    assert f"[do]   1. create venv {checkout / '.venv_chatterbox'}" in out
    assert "install torch==2.6.0 torchaudio==2.6.0 from PyPI" in out
    if se.platform.system() == "Linux":
        assert "PyTorch's index http://127.0.0.1:9/whl/cpu cannot be reached" in out
    assert "pip install -e ." in out
    for v in variants.VARIANTS.values():
        assert f"download {v.label} from {v.repo_id}" in out
        assert f"about {v.approx_download_gb:g} GB" in out
    assert "GB needed" in out
    assert snapshot(tmp_path) == before, "--dry-run created or changed files"


def assert_secret_never_shown(r: subprocess.CompletedProcess, folder: Path) -> None:
    """SECRET is in neither output stream nor in any file under folder."""
    assert SECRET not in r.stdout + r.stderr
    for p in folder.rglob("*"):
        assert not p.is_file() or SECRET.encode() not in p.read_bytes(), p


# Only Linux's CPU build comes from PyTorch's index with PyPI's as fallback, so only
# there does setup probe the index before using it.
LINUX_PROBE = pytest.mark.skipif(se.platform.system() != "Linux",
                                 reason="the index is probed for Linux's CPU build only")


@pytest.mark.parametrize("where, url, why", [
    ("CBX_PYTORCH_INDEX", f"https://user:{SECRET}@mirror.example:abc/whl",
     "its port is not a number from 1 to 65535 (mirror.example:abc)"),
    ("CBX_PYTORCH_INDEX", f"ftp://user:{SECRET}@mirror.example/whl",
     "pip reads http://, https:// and file:// indexes, not ftp:"),
    ("CBX_PYTORCH_INDEX", f"https://user:{SECRET} @mirror.example/whl",
     "contains a space or a control character (percent-encode it: a space is %20)"),
    ("CBX_PYTORCH_INDEX", f"https://user:{SECRET}@[::1/whl", "cannot be read as a URL"),
    ("CBX_PYTORCH_INDEX", "https:///whl", "it names no host"),
    ("CBX_PYTORCH_INDEX", "file:whl", "it names no absolute folder"),
    ("--torch-index", f"https://user:{SECRET}@mirror.example:99999/whl/cpu",
     "its port is not a number from 1 to 65535"),
    ("--torch-index", "mirror.example/whl/cpu", "and this has no scheme"),
])
def test_a_bad_index_url_is_a_usage_error_with_its_fix(tmp_path, where, url, why):
    checkout = make_checkout(tmp_path / "repo")
    before = snapshot(tmp_path)
    if where == "--torch-index":
        r = run_setup(checkout, "--dry-run", "--no-models", "--torch-index", url,
                      env=clean_env(tmp_path))
    else:
        r = run_setup(checkout, "--dry-run", "--no-models",
                      env=clean_env(tmp_path, CBX_PYTORCH_INDEX=url))
    assert r.returncode == se.EXIT_USAGE, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert f"ERROR: {where} (" in r.stderr and why in r.stderr and "\n    fix: " in r.stderr
    assert_secret_never_shown(r, tmp_path)
    assert snapshot(tmp_path) == before


def test_a_local_folder_given_as_an_index_is_shown_its_file_url(tmp_path):
    checkout = make_checkout(tmp_path / "repo")
    folder = tmp_path / "whl"
    r = run_setup(checkout, "--dry-run", "--no-models",
                  env=clean_env(tmp_path, CBX_PYTORCH_INDEX=str(folder)))
    assert r.returncode == se.EXIT_USAGE, r.stdout + r.stderr
    assert f"a local folder is given as its file:// URL: {folder.resolve().as_uri()}" \
        in r.stderr


@LINUX_PROBE
def test_a_mirror_login_is_used_and_never_shown(tmp_path):
    """The issue's case: CBX_PYTORCH_INDEX with a user and password. Setup logs in to
    the mirror to probe it, and neither the plan, the help nor an unreachable mirror's
    message shows the password."""
    checkout = make_checkout(tmp_path / "repo")
    torch_page(tmp_path / "mirror" / "whl" / "cpu")
    before = snapshot(tmp_path)
    with index_server(tmp_path / "mirror", login=f"user:{SECRET}") as base:
        host = base[len("http://"):]
        env = clean_env(tmp_path, CBX_PYTORCH_INDEX=f"http://user:{SECRET}@{host}/whl")
        r = run_setup(checkout, "--dry-run", "--no-models", "--cpu", env=env)
        helped = run_setup(checkout, "--help", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"from http://user:***@{host}/whl/cpu (new environment)" in r.stdout
    assert "cannot be reached" not in r.stdout
    assert helped.returncode == 0 and f"http://user:***@{host}/whl/cpu" in helped.stdout
    # no port and nothing listening: was an uncaught InvalidURL showing the password
    closed = run_setup(checkout, "--dry-run", "--no-models", "--cpu", env=clean_env(
        tmp_path, CBX_PYTORCH_INDEX=f"http://user:{SECRET}@127.0.0.1/whl"))
    assert closed.returncode == 0, closed.stdout + closed.stderr
    assert "Traceback" not in closed.stderr
    assert "PyTorch's index http://user:***@127.0.0.1/whl/cpu cannot be reached" in \
        closed.stdout
    for run in (r, helped, closed):
        assert_secret_never_shown(run, tmp_path)
    assert snapshot(tmp_path) == before


@LINUX_PROBE
def test_a_file_mirror_is_reachable_and_chosen(tmp_path):
    checkout = make_checkout(tmp_path / "repo")
    mirror = tmp_path / "srv" / "whl"
    torch_page(mirror / "cpu")
    r = run_setup(checkout, "--dry-run", "--no-models", "--cpu",
                  env=clean_env(tmp_path, CBX_PYTORCH_INDEX=mirror.as_uri()))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"install torch==2.6.0 torchaudio==2.6.0 from {mirror.as_uri()}/cpu " \
        "(new environment)" in r.stdout
    assert f"about {se.ENV_GB[('Linux', 'cpu-index')]:.1f} GB needed" in r.stdout
    missing = tmp_path / "nowhere"
    r = run_setup(checkout, "--dry-run", "--no-models", "--cpu",
                  env=clean_env(tmp_path, CBX_PYTORCH_INDEX=missing.as_uri()))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"PyTorch's index {missing.as_uri()}/cpu cannot be reached (folder " \
        f"{missing / 'cpu'} does not exist), so PyPI's build is used" in r.stdout
    assert "install torch==2.6.0 torchaudio==2.6.0 from PyPI" in r.stdout


@pytest.mark.skipif(sys.version_info < (3, 11), reason="-P and PYTHONSAFEPATH: Python 3.11+")
@pytest.mark.parametrize("flags, safe_path", [(["-P"], {}), ([], {"PYTHONSAFEPATH": "1"})],
                         ids=["-P", "PYTHONSAFEPATH"])
def test_runs_from_any_folder_with_any_path_setting(tmp_path, flags, safe_path):
    """-P and PYTHONSAFEPATH leave the script's folder off sys.path; setup still finds
    cbx beside it, run from another folder. -S keeps this interpreter's site-packages
    (where cbx is installed editable) from hiding the problem: a user's Python has no
    cbx."""
    checkout = make_checkout(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env(tmp_path, CBX_PYTORCH_INDEX=(tmp_path / "no-mirror").as_uri(),
                    **safe_path)
    r = subprocess.run([sys.executable, "-S", *flags, str(checkout / "setup_env.py"),
                        "--dry-run", "--no-models", "--cpu", "--venv"], cwd=elsewhere,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[do]   1. create venv {checkout / '.venv_chatterbox'}" in r.stdout
    assert not any(elsewhere.iterdir())


def test_dry_run_with_gpu_detection_explains_the_choice(tmp_path):
    checkout = make_checkout(tmp_path / "repo")
    r = run_setup(checkout, "--dry-run", "--no-models", env=clean_env(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "PyTorch:" in r.stdout and "why:" in r.stdout
    assert "[skip] weights: --no-models" in r.stdout


def test_unknown_variant_is_a_usage_error(tmp_path):
    checkout = make_checkout(tmp_path / "repo")
    r = run_setup(checkout, "--dry-run", "--models", "original,bogus", env=clean_env(tmp_path))
    assert r.returncode == se.EXIT_USAGE
    assert "bogus" in r.stderr and "original" in r.stderr


@pytest.mark.skipif(os.name == "nt", reason="uses a shell script as a fake interpreter")
def test_unsupported_python_says_what_to_install(tmp_path):
    checkout = make_checkout(tmp_path / "repo")
    fake = tmp_path / "python3.13"
    fake.write_text("#!/bin/sh\necho 3 13 0\n")
    fake.chmod(0o755)
    r = run_setup(checkout, "--dry-run", "--python", str(fake), env=clean_env(tmp_path))
    assert r.returncode == se.EXIT_PYTHON
    assert "3.13.0" in r.stderr and "Python 3.11" in r.stderr
    assert not (checkout / ".venv_chatterbox").exists()


@pytest.mark.skipif(os.name == "nt", reason="uses a shell script as a fake conda")
def test_conda_mode_plans_the_environment_yml_env(tmp_path):
    checkout = make_checkout(tmp_path / "repo")
    calls = tmp_path / "conda_calls.txt"
    conda = tmp_path / "conda"
    conda.write_text("#!/bin/sh\n"
                     f'echo "$@" >> "{calls}"\n'
                     'case "$1 $2" in\n'
                     '  "env list") echo \'{"envs": ["/opt/conda", "/opt/conda/envs/other"]}\' ;;\n'
                     '  "info --base") echo /opt/conda ;;\n'
                     '  *) exit 1 ;;\n'
                     'esac\n')
    conda.chmod(0o755)
    env = clean_env(tmp_path, CONDA_EXE=str(conda), CONDA_PREFIX="/opt/conda",
                    CONDA_DEFAULT_ENV="base")
    r = run_setup(checkout, "--dry-run", "--cpu", "--no-models", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "conda env 'chatterbox' (/opt/conda/envs/chatterbox)" in r.stdout
    assert "running inside conda" in r.stdout
    assert f"{conda} create -y -n chatterbox -c conda-forge python=3.11 pip" in r.stdout
    assert "create" not in calls.read_text()      # dry run: conda was only asked questions
    forced = run_setup(checkout, "--dry-run", "--cpu", "--no-models", "--venv", env=env)
    assert "create venv" in forced.stdout


def fake_venv(checkout: Path) -> Path:
    """A real venv (no pip of its own) that sees this interpreter's packages through a
    .pth file: setup_env.py's checks run for real against it, and pip installs into it."""
    venv = checkout / ".venv_chatterbox"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = subprocess.run([str(se.Env("venv", venv).python), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # Every site-packages folder this interpreter sees (its own, plus any that a .pth
    # file of its own added), its own first.
    borrowed = [sysconfig.get_paths()["purelib"]]
    borrowed += [p for p in sys.path if p.rstrip("/\\").endswith("site-packages")
                 and p not in borrowed]
    Path(site, "_borrow_test_interpreter.pth").write_text("\n".join(borrowed) + "\n")
    return venv


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A checkout whose environment setup_env.py has just completed (cbx installed
    editable into the fake venv by setup_env.py's own pip step)."""
    tmp = tmp_path_factory.mktemp("setup")
    checkout = make_checkout(tmp / "repo")
    fake_venv(checkout)
    env = clean_env(tmp)
    first = run_setup(checkout, "--no-models", "--cpu", env=env)
    return checkout, env, first


def test_first_run_installs_what_is_missing(prepared):
    checkout, env, first = prepared
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "[skip] 1. environment exists" in first.stdout
    assert "[do]   3. pip install -e ." in first.stdout
    assert "==> 3. installing the pinned packages" in first.stdout
    start = "start_windows.bat" if os.name == "nt" else "./start_linux.sh"
    assert "Summary" in first.stdout and start in first.stdout


def test_second_run_skips_everything(prepared):
    checkout, env, _ = prepared
    before = snapshot(checkout)
    t0 = time.monotonic()
    second = run_setup(checkout, "--no-models", "--cpu", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    out = second.stdout
    assert "[skip] 1. environment exists" in out
    assert "[skip] 2. torch 2.6.0" in out
    n_pins = len(se.read_pins()[0])
    assert f"[skip] 3. all {n_pins} pinned packages and cbx (editable, this checkout)" in out
    assert "[do]" not in out and "==>" not in out and "$ " not in out
    assert time.monotonic() - t0 < 120
    after = snapshot(checkout)
    assert {k for k in after if ".venv_chatterbox" in k} == \
        {k for k in before if ".venv_chatterbox" in k}


def test_where_prints_the_environment_python(prepared, tmp_path):
    checkout, env, _ = prepared
    r = run_setup(checkout, "--where", env=env)
    assert r.returncode == 0
    assert Path(r.stdout.strip()) == se.Env("venv", checkout / ".venv_chatterbox").python
    empty = make_checkout(tmp_path / "empty")
    r = run_setup(empty, "--where", env=clean_env(tmp_path))
    assert r.returncode == 1 and r.stdout == ""


def test_unreachable_hub_fails_fast_with_a_clear_message(prepared, tmp_path):
    checkout, env, _ = prepared
    model_dir = tmp_path / "models"
    offline = dict(env, HF_ENDPOINT="http://127.0.0.1:9", CBX_MODEL_DIR=str(model_dir))
    t0 = time.monotonic()
    r = run_setup(checkout, "--cpu", "--models", "original", env=offline, timeout=180)
    elapsed = time.monotonic() - t0
    assert r.returncode == se.EXIT_DOWNLOAD, r.stdout + r.stderr
    assert elapsed < 90, f"took {elapsed:.0f} s to notice the Hub is unreachable"
    assert "Could not download Chatterbox (English) (ResembleAI/chatterbox)" in r.stderr
    assert "http://127.0.0.1:9" in r.stderr and "cannot be reached" in r.stderr
    assert "environment itself is installed and usable" in r.stderr
    assert "python setup_env.py --models original" in r.stderr
    assert "NOT downloaded" in r.stdout
    assert not any(p.is_file() and p.suffix == ".safetensors" for p in model_dir.rglob("*"))


def test_offline_mode_is_named(prepared, tmp_path):
    checkout, env, _ = prepared
    offline = dict(env, HF_HUB_OFFLINE="1", CBX_MODEL_DIR=str(tmp_path / "models"))
    r = run_setup(checkout, "--cpu", "--models", "turbo", env=offline, timeout=180)
    assert r.returncode == se.EXIT_DOWNLOAD, r.stdout + r.stderr
    assert "HF_HUB_OFFLINE" in r.stderr and "ResembleAI/chatterbox-turbo" in r.stderr


def test_complete_weights_are_not_downloaded_again(prepared, tmp_path):
    """Weights that pass cbx's file check are skipped, even with the Hub unreachable."""
    checkout, env, _ = prepared
    model_dir = tmp_path / "models"
    folder = model_dir / "turbo"
    folder.mkdir(parents=True)
    v = variants.VARIANTS["turbo"]
    for name in v.required_files:
        if name.endswith(".safetensors"):
            header = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
            data = len(header).to_bytes(8, "little") + header + b"\0" * 8
        elif name.endswith(".json"):
            data = b"{}"
        else:
            data = b"#version: 0.2\n"
        (folder / name).write_bytes(data)
    offline = dict(env, HF_ENDPOINT="http://127.0.0.1:9", CBX_MODEL_DIR=str(model_dir))
    r = run_setup(checkout, "--cpu", "--models", "turbo", env=offline, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[skip] 4. {v.label} weights complete in {folder}" in r.stdout
    assert "downloading" not in r.stdout


# ---------------------------------------------------------------------------------------
# Interrupted setup: a venv folder without pip, or without a python that runs
# ---------------------------------------------------------------------------------------


def bare_venv(path: Path) -> se.Env:
    """What a run interrupted during venv creation leaves: a real venv, no pip in it."""
    venv.create(path, with_pip=False)
    return se.Env("venv", path)


def pip_version(env: se.Env) -> subprocess.CompletedProcess:
    return subprocess.run([str(env.python), "-m", "pip", "--version"],
                          capture_output=True, text=True, timeout=120)


def break_python(env: se.Env, damage: str) -> None:
    env.python.unlink()
    if damage == "not-runnable":    # still there, but it cannot start
        env.python.write_text("#!/bin/sh\necho 'python: cannot start' >&2\nexit 3\n")
        env.python.chmod(0o755)


def test_venv_without_pip_is_repaired_in_place(tmp_path):
    env = bare_venv(tmp_path / ".venv_chatterbox")
    assert "No module named pip" in pip_version(env).stderr
    site = Path(subprocess.run([str(env.python), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "kept_marker.py").write_text("")

    action, why = se.diagnose_env(env, se.probe_env(env))
    assert action == "repair-pip" and "No module named pip" in why
    env, state, fresh = se.ensure_env(env, action, why, creator=sys.executable)

    r = pip_version(env)
    assert r.returncode == 0, r.stderr
    assert str(env.prefix) in r.stdout            # pip of the venv itself
    assert state.pip_version and not fresh
    assert (site / "kept_marker.py").exists(), "a pip repair must not wipe the venv"
    assert se.diagnose_env(env, se.probe_env(env)) == ("ok", "")


@pytest.mark.parametrize("damage", [
    "deleted",
    pytest.param("not-runnable", marks=pytest.mark.skipif(
        os.name == "nt", reason="a shell script stands in for the broken python")),
])
def test_venv_with_missing_or_broken_python_is_recreated(tmp_path, capsys, damage):
    env = bare_venv(tmp_path / ".venv_chatterbox")
    break_python(env, damage)

    action, why = se.diagnose_env(env, se.probe_env(env))
    assert action == "recreate", why
    assert str(env.python) in why
    env, state, fresh = se.ensure_env(env, action, why, creator=sys.executable)

    assert fresh and state.exists and not state.error
    assert tuple(state.python_version) == tuple(sys.version_info[:3])
    r = pip_version(env)
    assert r.returncode == 0, r.stderr
    out = capsys.readouterr().out
    assert f"recreating the venv {env.prefix} from scratch: {why}" in out


def test_dry_run_names_the_repair_and_changes_nothing(tmp_path):
    checkout = make_checkout(tmp_path / "repo")
    env = bare_venv(checkout / ".venv_chatterbox")
    before = snapshot(tmp_path)
    r = run_setup(checkout, "--dry-run", "--cpu", "--no-models", env=clean_env(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[do]   1. repair pip in venv {env.prefix}" in r.stdout
    assert "No module named pip" in r.stdout
    assert "[skip] 1. environment exists" not in r.stdout
    assert snapshot(tmp_path) == before, "--dry-run created or changed files"
    assert pip_version(env).returncode != 0

    env.python.unlink()
    r = run_setup(checkout, "--dry-run", "--cpu", "--no-models", env=clean_env(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[do]   1. recreate venv {env.prefix}" in r.stdout
    assert not env.python.exists()


def _rerun_offline(checkout: Path, tmp_path: Path):
    """Re-run the real script; no package index, so it stops at the PyTorch step (this
    test installs nothing big), after the environment step has done its work."""
    env = clean_env(tmp_path, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return run_setup(checkout, "--cpu", "--no-models", "--skip-disk-check", env=env,
                     timeout=300)


def test_rerun_after_interrupted_venv_creation_repairs_pip(tmp_path):
    checkout = make_checkout(tmp_path / "repo")
    env = bare_venv(checkout / ".venv_chatterbox")
    r = _rerun_offline(checkout, tmp_path)
    assert f"==> 1. repairing pip in venv {env.prefix}" in r.stdout, r.stdout + r.stderr
    assert "==> 2. installing PyTorch" in r.stdout
    assert "No module named pip" not in r.stderr, r.stderr
    assert pip_version(env).returncode == 0
    # What stopped it is the missing index, reported as an install failure to re-run.
    assert r.returncode == se.EXIT_INSTALL, r.stdout + r.stderr
    assert "Installing PyTorch failed" in r.stderr


@pytest.mark.skipif(os.name == "nt", reason="a shell script stands in for the broken python")
def test_rerun_with_a_broken_venv_python_recreates_it(tmp_path):
    checkout = make_checkout(tmp_path / "repo")
    env = bare_venv(checkout / ".venv_chatterbox")
    break_python(env, "not-runnable")
    r = _rerun_offline(checkout, tmp_path)
    assert f"==> 1. recreating the venv {env.prefix} from scratch" in r.stdout, \
        r.stdout + r.stderr
    assert "does not run" in r.stdout
    assert "==> 2. installing PyTorch" in r.stdout
    assert pip_version(env).returncode == 0
    assert r.returncode == se.EXIT_INSTALL and "Installing PyTorch failed" in r.stderr


def test_summary_shows_the_environment_size_and_its_cuda_libraries(tmp_path, monkeypatch,
                                                                   capsys):
    from cbx import paths
    from cbx.units import format_bytes

    prefix = tmp_path / "venv"
    site = prefix / "lib" / "python3.11" / "site-packages"
    for name, size in (("torch/a.so", 1000), ("nvidia/b.so", 3000), ("triton/c.so", 2000)):
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(b"x" * size)
    monkeypatch.setattr(se, "_status_report", lambda env: None)
    monkeypatch.setenv("CBX_MODEL_DIR", str(tmp_path / "models"))
    se.summary(se.Env("venv", prefix), [], [], [], paths, variants, time.monotonic())
    out = capsys.readouterr().out
    cuda = se.tree_bytes(site / "nvidia") + se.tree_bytes(site / "triton")
    assert (f"disk used:  environment {format_bytes(se.tree_bytes(prefix))} in {prefix} "
            f"(CUDA libraries: {format_bytes(cuda)})") in out
    (site / "nvidia" / "b.so").unlink()
    (site / "triton" / "c.so").unlink()
    (site / "nvidia").rmdir()
    (site / "triton").rmdir()
    se.summary(se.Env("venv", prefix), [], [], [], paths, variants, time.monotonic())
    assert "CUDA libraries" not in capsys.readouterr().out


def test_the_server_extension_config_lands_where_jupyterlab_reads_it(tmp_path):
    """JupyterLab serves the dashboard's Download links only with cbx's server
    extension enabled by a config in the environment's etc/jupyter."""
    env = se.Env("venv", tmp_path / "venv")
    target = se.enable_server_extension(env)
    assert target == tmp_path / "venv/etc/jupyter/jupyter_server_config.d/cbx.json"
    assert json.loads(target.read_text())["ServerApp"]["jpserver_extensions"] == {
        "cbx.ui.fileserver": True}
    target.write_text("{}")
    assert se.enable_server_extension(env).read_bytes() == \
        se.SERVER_EXTENSION_CONFIG.read_bytes(), "a stale copy is replaced"

"""cleanup.py on temporary trees: sizes agree with du, --dry-run removes nothing,
selective flags remove exactly their items, links are never followed out of the
checkout, nothing outside it is touched, and a process using the environment blocks
removal."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import cleanup  # noqa: E402

CHATTERBOX_HUB = "models--ResembleAI--chatterbox"
TURBO_HUB = "models--ResembleAI--chatterbox-turbo"


def write(path: Path, size: int, byte: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(byte * size)
    return path


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A checkout with every kind of item, a Hub cache beside it, and things outside
    the checkout that links inside it point to."""
    root = tmp_path / "repo"
    write(root / "pyproject.toml", 10)
    write(root / "cbx" / "__init__.py", 10)
    write(root / "cbx" / "__pycache__" / "x.cpython-311.pyc", 3000)
    write(root / "tests" / "__pycache__" / "t.pyc", 5000)
    env = root / ".venv_chatterbox"
    write(env / "pyvenv.cfg", 100)
    write(env / "lib" / "site-packages" / "big.so", 300_000)
    os.link(env / "lib" / "site-packages" / "big.so", env / "lib" / "hardlink.so")
    with open(env / "lib" / "sparse.bin", "wb") as fh:     # 5 MB apparent, ~nothing used
        fh.seek(5_000_000)
        fh.write(b"end")
    ro = write(env / "lib" / "readonly.txt", 50)
    ro.chmod(stat.S_IREAD)
    write(root / "model_cache" / ".gitkeep", 0)
    write(root / "model_cache" / "original" / "t3_cfg.safetensors", 200_000)
    write(root / "model_cache" / "original" / ".cache" / "huggingface" / "x.metadata", 100)
    write(root / "model_cache" / "turbo" / "t3_turbo_v1.safetensors", 120_000)
    write(root / "voices" / "alice.wav", 40_000)
    write(root / "outputs" / "take1.wav", 60_000)
    write(root / ".pytest_cache" / "v" / "cache" / "lastfailed", 20)
    write(root / ".fixture_cache" / "ckpt.safetensors", 70_000)
    write(root / "cbx.egg-info" / "PKG-INFO", 500)
    write(root / "setup_env.py", 10)   # a file that is never an item

    outside = tmp_path / "outside"
    write(outside / "precious.wav", 1_000_000)
    write(outside / "dir" / "nested.bin", 500_000)
    (root / "voices" / "linked_dir").symlink_to(outside / "dir", target_is_directory=True)
    (root / "outputs" / "linked_file.wav").symlink_to(outside / "precious.wav")

    hub = tmp_path / "hf" / "hub"
    entry = hub / CHATTERBOX_HUB
    write(entry / "blobs" / "abc123", 150_000)
    (entry / "snapshots" / "rev1").mkdir(parents=True)
    (entry / "snapshots" / "rev1" / "t3_cfg.safetensors").symlink_to(
        Path("..") / ".." / "blobs" / "abc123")
    write(hub / TURBO_HUB / "blobs" / "def456", 80_000)
    write(hub / ".locks" / CHATTERBOX_HUB / "abc123.lock", 0)
    write(hub / "models--someone--other-model" / "blobs" / "zzz", 90_000)

    for var in ("CBX_MODEL_DIR", "CBX_VOICE_DIR", "CBX_OUTPUT_DIR", "CBX_STATE_DIR",
                "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    yield root, outside, hub
    ro.chmod(stat.S_IREAD | stat.S_IWRITE) if ro.exists() else None


def run(root: Path, *args, env=None, stdin=subprocess.DEVNULL):
    return subprocess.run([sys.executable, str(ROOT / "cleanup.py"), "--root", str(root),
                           *args], capture_output=True, text=True, stdin=stdin, env=env,
                          timeout=120)


def listing(root: Path, *args) -> dict:
    import json

    r = run(root, "--dry-run", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def snapshot(folder: Path, dir_times: bool = True) -> dict:
    """Every path under folder (links not followed) with type, size and mtime. Folder
    mtimes change when an entry inside is removed, so removal tests leave them out."""
    out = {}
    for dirpath, dirnames, files in os.walk(folder):
        for name in dirnames + files:
            p = Path(dirpath, name)
            st = p.lstat()
            is_dir = stat.S_ISDIR(st.st_mode)
            out[str(p.relative_to(folder))] = (
                stat.S_IFMT(st.st_mode), None if is_dir else st.st_size,
                st.st_mtime_ns if dir_times or not is_dir else None)
    return out


def item_keys(data: dict) -> set[str]:
    return {it["label"] for it in data["items"]}


def _gnu_du() -> bool:
    try:
        return "GNU" in subprocess.run(["du", "--version"], capture_output=True,
                                       text=True).stdout
    except OSError:
        return False


@pytest.mark.skipif(not _gnu_du(), reason="needs GNU du")
def test_sizes_match_du(tree):
    root, _, _ = tree
    data = listing(root)
    groups = {it["group"] for it in data["items"]}
    assert groups == {"env", "models", "hub", "voices", "outputs", "caches"}
    for it in data["items"]:
        # cleanup.py reports allocated blocks, i.e. what `du --block-size=1` counts.
        du = subprocess.run(["du", "-s", "-c", "--block-size=1", *it["paths"]],
                            capture_output=True, text=True, check=True)
        du_total = int(du.stdout.strip().splitlines()[-1].split()[0])
        assert it["bytes"] == du_total, (it["label"], it["paths"])
    env = next(it for it in data["items"] if it["group"] == "env")
    assert env["bytes"] < 1_000_000, "sparse file or hard link counted by apparent size"


def test_links_are_measured_as_links(tree):
    root, outside, _ = tree
    data = listing(root)
    voices = next(it for it in data["items"] if it["group"] == "voices")
    outputs = next(it for it in data["items"] if it["group"] == "outputs")
    # 40 kB clip + folder + links, never the 1.5 MB outside
    assert voices["bytes"] < 200_000 and outputs["bytes"] < 200_000
    assert cleanup.disk_usage(root / "voices" / "linked_dir") < 10_000


def test_dry_run_removes_nothing(tree, tmp_path):
    root, _, _ = tree
    before = snapshot(tmp_path)
    r = run(root, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "Dry run: nothing removed" in r.stdout
    for label in ("Python environment", "model_cache/original", "model_cache/turbo",
                  "ResembleAI/chatterbox", "voice library", "generated audio",
                  "__pycache__ folders (2)", ".pytest_cache", ".fixture_cache"):
        assert label in r.stdout
    assert "models--someone" not in r.stdout
    assert snapshot(tmp_path) == before


def test_models_only_removes_exactly_the_weights(tree, tmp_path):
    root, _, hub = tree
    data = listing(root, "--models-only")
    chosen = [it for it in data["items"] if it["selected"]]
    assert {it["group"] for it in chosen} == {"models", "hub"}
    expected_gone = {str(Path(p).relative_to(tmp_path)) for it in chosen for p in it["paths"]}
    assert expected_gone == {
        "repo/model_cache/original", "repo/model_cache/turbo",
        f"hf/hub/{CHATTERBOX_HUB}", f"hf/hub/.locks/{CHATTERBOX_HUB}",
        f"hf/hub/{TURBO_HUB}"}
    before = snapshot(tmp_path, dir_times=False)
    r = run(root, "--models-only", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    after = snapshot(tmp_path, dir_times=False)
    removed = set(before) - set(after)
    assert all(any(k == g or k.startswith(g + os.sep) for g in expected_gone) for k in removed)
    assert all(g in removed for g in expected_gone)
    assert {k: v for k, v in before.items() if k not in removed} == after
    assert (root / "model_cache" / ".gitkeep").exists()
    assert (hub / "models--someone--other-model" / "blobs" / "zzz").exists()
    freed = sum(it["bytes"] for it in chosen)
    assert f"Freed {cleanup.format_bytes(freed)}" in r.stdout


def test_variant_flag_limits_models_and_hub(tree):
    root, _, hub = tree
    r = run(root, "--models-only", "--variant", "turbo", "--yes")
    assert r.returncode == 0, r.stderr
    assert not (root / "model_cache" / "turbo").exists()
    assert not (hub / TURBO_HUB).exists()
    assert (root / "model_cache" / "original" / "t3_cfg.safetensors").exists()
    assert (hub / CHATTERBOX_HUB / "blobs" / "abc123").exists()


def test_keep_flags_and_full_cleanup_stay_inside_the_root(tree, tmp_path):
    root, outside, hub = tree
    outside_before = snapshot(outside)
    other_before = snapshot(hub / "models--someone--other-model")
    r = run(root, "--keep-voices", "--keep-env", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (root / ".venv_chatterbox" / "lib" / "site-packages" / "big.so").exists()
    assert (root / "voices" / "alice.wav").exists()
    assert (root / "voices" / "linked_dir").is_symlink()
    for gone in ("model_cache/original", "model_cache/turbo", "outputs", ".pytest_cache",
                 ".fixture_cache", "cbx/__pycache__", "tests/__pycache__", "cbx.egg-info"):
        assert not os.path.lexists(root / gone), gone
    for kept in ("pyproject.toml", "cbx/__init__.py", "setup_env.py", "model_cache/.gitkeep"):
        assert (root / kept).exists(), kept
    # The outputs folder held a link to a file outside: the link went, the file stayed.
    assert snapshot(outside) == outside_before
    assert snapshot(hub / "models--someone--other-model") == other_before

    r = run(root, "--yes")          # now everything, the environment and voices too
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (root / ".venv_chatterbox").exists()   # read-only file included
    assert not (root / "voices").exists()
    assert snapshot(outside) == outside_before
    assert (root / "pyproject.toml").exists() and (root / "cbx" / "__init__.py").exists()


def test_locations_outside_the_root_are_listed_but_never_removed(tree, tmp_path):
    root, outside, _ = tree
    elsewhere = tmp_path / "elsewhere_voices"
    write(elsewhere / "bob.wav", 30_000)
    env = dict(os.environ, CBX_VOICE_DIR=str(elsewhere))
    r = run(root, "--only", "voices", "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert "outside the repository" in r.stdout
    assert (elsewhere / "bob.wav").exists()
    assert "Nothing to remove" in r.stdout

    # A model_cache that is a link to another drive: its variants are outside too.
    shutil.move(str(root / "model_cache"), str(tmp_path / "real_cache"))
    (root / "model_cache").symlink_to(tmp_path / "real_cache", target_is_directory=True)
    r = run(root, "--models-only", "--keep-hub-cache", "--yes")
    assert r.returncode == 0
    assert (tmp_path / "real_cache" / "original" / "t3_cfg.safetensors").exists()


def test_no_terminal_and_no_yes_removes_nothing(tree, tmp_path):
    root, _, _ = tree
    before = snapshot(tmp_path)
    r = run(root, "--caches-only")
    assert r.returncode == cleanup.EXIT_DECLINED
    assert "--yes" in r.stderr
    assert snapshot(tmp_path) == before


def test_refuses_a_folder_that_is_not_the_checkout(tmp_path):
    write(tmp_path / "somefile", 10)
    r = run(tmp_path, "--yes")
    assert r.returncode == cleanup.EXIT_USAGE
    assert "not a Chatterbox Studio checkout" in r.stderr
    assert (tmp_path / "somefile").exists()


@pytest.mark.skipif(os.name == "nt", reason="POSIX process listing")
def test_a_running_process_using_the_environment_blocks_removal(tree, tmp_path):
    root, _, _ = tree
    env_dir = root / ".venv_chatterbox"
    # Like a Voila server started from the environment: its program path is inside it.
    fake_python = env_dir / "bin" / "python"
    fake_python.parent.mkdir(parents=True)
    os.symlink(sys.executable, fake_python)
    proc = subprocess.Popen([str(fake_python), "-c", "import time; time.sleep(60)",
                             "voila", "notebooks/dashboard.ipynb"])
    try:
        time.sleep(0.5)
        before = snapshot(tmp_path)
        r = run(root, "--yes")
        assert r.returncode == cleanup.EXIT_BUSY, r.stdout + r.stderr
        assert f"pid {proc.pid}" in r.stderr and "nothing was removed" in r.stderr
        assert snapshot(tmp_path) == before
    finally:
        proc.kill()
        proc.wait()
    r = run(root, "--env-only", "--yes")
    assert r.returncode == 0, r.stderr
    assert not env_dir.exists()


def test_read_only_files_are_made_writable_and_retried(tmp_path, monkeypatch):
    f = write(tmp_path / "ro" / "file.txt", 10)
    f.chmod(stat.S_IREAD)
    calls = []

    real_unlink = os.unlink

    def flaky_unlink(path):
        calls.append(path)
        if not os.stat(path).st_mode & stat.S_IWRITE:
            raise PermissionError(13, "read-only", path)
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", flaky_unlink)
    cleanup._make_writable_and_retry(os.unlink, str(f), PermissionError(13, "ro"))
    assert calls == [str(f)] and not f.exists()
    # Errors other than permissions are not swallowed.
    with pytest.raises(OSError):
        cleanup._make_writable_and_retry(os.unlink, str(tmp_path / "ro"),
                                         OSError(39, "Directory not empty"))
    # A failed listing is not retried (its function needs other arguments).
    with pytest.raises(PermissionError):
        cleanup._make_writable_and_retry(os.open, str(tmp_path), PermissionError(13, "no"))


def test_remove_path_deletes_a_link_not_its_target(tmp_path):
    target = write(tmp_path / "target" / "keep.bin", 1000)
    link = tmp_path / "inside" / "link"
    link.parent.mkdir()
    link.symlink_to(target.parent, target_is_directory=True)
    failures = []
    cleanup.remove_path(link, failures)
    assert not os.path.lexists(link) and target.exists() and failures == []


@pytest.mark.parametrize("variable,value", [
    ("CBX_STATE_DIR", ".."), ("CBX_STATE_DIR", "."), ("CBX_VOICE_DIR", ".."),
    ("CBX_OUTPUT_DIR", "../.."), ("CBX_OUTPUT_DIR", "~"), ("CBX_VOICE_DIR", "/"),
    ("CBX_STATE_DIR", "voices/../.."), ("CBX_OUTPUT_DIR", "{root}"),
])
def test_user_folders_pointing_at_the_checkout_or_above_are_never_removed(
        tree, variable, value, monkeypatch):
    """Issue 15 (1): CBX_STATE_DIR=.. made `cleanup.py --yes` delete the checkout and the
    folder above it. Any folder variable naming the checkout, an ancestor of it, the home
    folder or a drive root is blocked, shown as such, and survives --yes."""
    root, outside, _hub = tree
    monkeypatch.chdir(root)
    monkeypatch.setenv(variable, value.format(root=root))
    r = run(root, "--yes")
    assert root.is_dir() and (root / "pyproject.toml").is_file() and (root / "cbx").is_dir()
    assert outside.is_dir()
    assert "never removed" in r.stdout or "not removed" in r.stdout, r.stdout


def test_protected_reason_names_root_ancestors_home_and_drive_roots(tmp_path):
    root = tmp_path / "repo"
    (root / "outputs").mkdir(parents=True)
    assert cleanup.protected_reason(root / "outputs", root) == ""
    for path in (root, root / ".", root / "outputs" / "..", tmp_path, Path(root.anchor),
                 Path.home()):
        assert cleanup.protected_reason(path, root), path
    assert "outside" in cleanup.protected_reason(tmp_path / "elsewhere", root)
    hub = tmp_path / "hub"
    assert cleanup.protected_reason(hub / "models--x", root, (hub,)) == ""


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
def test_unreadable_folders_are_opened_up_and_removed_and_the_rest_goes_on(tree):
    """Issue 15 (2): an unreadable folder inside outputs/ crashed cleanup with a raw
    TypeError and the remaining items were skipped."""
    root, _outside, _hub = tree
    locked = write(root / "outputs" / "locked" / "deep" / "take.wav", 1000).parent.parent
    (locked / "deep").chmod(0)
    locked.chmod(0)
    r = run(root, "--yes")
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (root / "outputs").exists() and not (root / ".venv_chatterbox").exists()


def test_a_folder_that_cannot_be_opened_is_reported_and_the_rest_removed(tmp_path,
                                                                         monkeypatch):
    """Issue 15 (2), where opening up is not enough (another owner, a Windows ACL):
    rmtree's failed listing is reported, not retried with the wrong arguments (the raw
    TypeError), and the siblings are still removed."""
    top = tmp_path / "outputs"
    locked = write(top / "locked" / "take.wav", 100).parent
    write(top / "free" / "take.wav", 100)
    real_open, real_scandir = os.open, os.scandir

    def refuse(path, *args, **kwargs):
        if str(path) == str(locked) or path == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    def refuse_scandir(path="."):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "open", refuse)
    monkeypatch.setattr(os, "scandir", refuse_scandir)
    failures: list[str] = []
    cleanup.remove_path(top, failures)
    assert any(f.startswith(str(locked)) and "Permission denied" in f for f in failures), \
        failures
    assert not (top / "free").exists() and (locked / "take.wav").exists()


HOLDER = """
import os, time
from cbx.holds import ModelHolds, process_create_time
ModelHolds().claim(
    {"pid": os.getpid(), "create_time": process_create_time(), "session": "kernel pid %d"
     % os.getpid(), "variant": "original", "device": "cuda", "since": "now"}, {"cuda"})
print("claimed", flush=True)
time.sleep(120)
"""


def test_runtime_state_of_a_kernel_holding_a_model_is_kept_unless_forced(tree):
    """Issue 15 (3): `cleanup.py --caches-only --yes` deleted the runtime state of a
    kernel that still held the GPU."""
    root, _outside, _hub = tree
    state = root / ".cbx_state"
    # the state folder comes from the environment, as in a kernel (not on its command
    # line, which would make cleanup see it as a process using the folder)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], cwd=str(ROOT),
                              env=dict(os.environ, CBX_STATE_DIR=str(state)),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        r = run(root, "--caches-only", "--yes")
        assert r.returncode == 0, r.stderr
        assert (state / "holds" / f"{holder.pid}.json").is_file()
        assert f"kernel pid {holder.pid}" in r.stdout and "--force" in r.stdout
        assert not (root / ".pytest_cache").exists(), "the other caches still go"
        r = run(root, "--caches-only", "--yes", "--force")
        assert r.returncode == 0, r.stderr
        assert not state.exists()
    finally:
        holder.kill()
        holder.wait()


def test_state_of_finished_kernels_is_removed_and_dry_run_keeps_stale_records(tree):
    root, _outside, _hub = tree
    holds = root / ".cbx_state" / "holds"
    holds.mkdir(parents=True)
    (holds / "999999.json").write_text('{"pid": 999999}')
    assert run(root, "--caches-only", "--dry-run").returncode == 0
    assert (holds / "999999.json").exists(), "a dry run changes nothing"
    r = run(root, "--caches-only", "--yes")
    assert r.returncode == 0 and not holds.exists(), r.stdout


def test_environment_row_shows_its_size_and_its_cuda_libraries(tmp_path):
    """Issue 14, part 1: the table says how big the environment is and how much of it
    is CUDA libraries a machine without an NVIDIA GPU does not need."""
    from cbx.scripts import cuda_library_dirs
    from cbx.units import format_bytes

    root = tmp_path / "repo"
    write(root / "pyproject.toml", 10)
    write(root / "cbx" / "__init__.py", 10)
    site = root / ".venv_chatterbox" / "lib" / "python3.11" / "site-packages"
    write(site / "torch" / "lib.so", 100_000)
    write(site / "nvidia" / "cublas" / "lib.so", 300_000)
    write(site / "triton" / "backend.so", 200_000)
    dirs = cuda_library_dirs(root / ".venv_chatterbox")
    assert dirs == [site / "nvidia", site / "triton"]
    cuda = cleanup.disk_usage(*dirs)
    assert cuda >= 500_000
    [env] = [item for item in listing(root)["items"] if item["group"] == "env"]
    assert env["bytes"] >= 600_000
    assert env["note"].startswith(f"{format_bytes(cuda)} of it CUDA libraries "
                                  "(nvidia, triton), needed only with an NVIDIA GPU")
    table = run(root, "--dry-run").stdout
    assert f"{format_bytes(env['bytes'])}" in table and "of it CUDA libraries" in table

    # a CPU-only environment (and Windows' layout) has no such note
    shutil.rmtree(site / "nvidia")
    shutil.rmtree(site / "triton")
    [env] = [item for item in listing(root)["items"] if item["group"] == "env"]
    assert env["note"] is None
    windows = tmp_path / "win_env"
    write(windows / "Lib" / "site-packages" / "nvidia" / "x.dll", 10)
    assert cuda_library_dirs(windows) == [windows / "Lib" / "site-packages" / "nvidia"]

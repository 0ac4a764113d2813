"""cleanup.py on temporary trees: sizes agree with du, --dry-run removes nothing,
selective flags remove exactly their items, the user's projects and generated audio go
only with their --include-* flag, links are never followed out of the checkout,
nothing outside it is touched, and a process using the environment blocks removal."""
from __future__ import annotations

import json
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


def old_project(folder: Path, chunks: int, done: int) -> Path:
    """A project in the old format (project.json, chunks/NNNN.wav + NNNN.json) with
    `done` of its `chunks` made."""
    plan = {"name": folder.name, "chunks": [{"text": f"Sentence {i}."}
                                            for i in range(chunks)]}
    write(folder / "project.json", 0).write_text(json.dumps(plan))
    for i in range(done):
        write(folder / "chunks" / f"{i:04d}.wav", 30_000)
        write(folder / "chunks" / f"{i:04d}.json", 0).write_text("{}")
    return folder


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
    write(root / "outputs" / "take1.json", 300)
    projects = root / "outputs" / "projects"
    old_project(projects / "finished", chunks=2, done=2)
    old_project(projects / "halfway", chunks=3, done=1)
    write(projects / "broken" / "project.json", 0).write_text("{not json")
    write(projects / "damaged" / "project.db", 0).write_text("not a database")
    write(projects / "empty-folder" / "notes.txt", 10)     # not a project
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


def listing(root: Path, *args, env=None) -> dict:
    r = run(root, "--dry-run", "--json", *args, env=env)
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
    assert groups == {"env", "models", "hub", "voices", "projects", "outputs", "caches"}
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
                  "ResembleAI/chatterbox", "voice library", "one-off generated audio",
                  "long-form projects",
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
    for gone in ("model_cache/original", "model_cache/turbo", ".pytest_cache",
                 ".fixture_cache", "cbx/__pycache__", "tests/__pycache__", "cbx.egg-info"):
        assert not os.path.lexists(root / gone), gone
    for kept in ("pyproject.toml", "cbx/__init__.py", "setup_env.py", "model_cache/.gitkeep",
                 "outputs/take1.wav", "outputs/projects/halfway/chunks/0000.wav"):
        assert (root / kept).exists(), kept
    assert snapshot(hub / "models--someone--other-model") == other_before

    r = run(root, "--yes", "--include-projects", "--include-outputs")   # now everything
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (root / ".venv_chatterbox").exists()   # read-only file included
    assert not (root / "voices").exists()
    assert (root / "outputs").is_dir() and not any((root / "outputs").iterdir())
    # The outputs folder held a link to a file outside: the link went, the file stayed.
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
    folder or a drive root is blocked, shown as such, and survives --yes, even with the
    flags that remove the user's audio (whose rows are that folder's entries)."""
    root, outside, _hub = tree
    monkeypatch.chdir(root)
    monkeypatch.setenv(variable, value.format(root=root))
    if variable == "CBX_OUTPUT_DIR":
        data = listing(root, "--include-projects", "--include-outputs")
        rows = [it for it in data["items"] if it["group"] in ("projects", "outputs")]
        assert rows and all(it["blocked"] and not it["selected"] for it in rows), rows
    r = run(root, "--yes", "--include-projects", "--include-outputs")
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
    r = run(root, "--yes", "--include-outputs")
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    assert not locked.exists() and not (root / ".venv_chatterbox").exists()


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


# ---------------------------------------------------------------------------------------
# Issue 20 (5): the user's projects and generated audio are never removed by default
# ---------------------------------------------------------------------------------------

def user_rows(data: dict) -> dict:
    return {it["group"]: it for it in data["items"] if it["group"] in ("projects", "outputs")}


def test_projects_and_one_off_outputs_are_listed_as_unticked_rows(tree):
    root, _, _ = tree
    rows = user_rows(listing(root))
    projects, outputs = rows["projects"], rows["outputs"]
    # finished + halfway + broken JSON + unreadable project.db; a folder without a
    # project file is not a project
    assert projects["counts"] == {"projects": 4, "unfinished": 1, "unknown": 2}
    assert projects["label"] == "long-form projects: 4 (1 unfinished, 2 unknown)"
    assert projects["paths"] == [str(root / "outputs" / "projects")]
    assert projects["bytes"] == cleanup.disk_usage(root / "outputs" / "projects") > 60_000
    # everything in outputs/ but projects/: take1.wav, its sidecar and a link
    assert outputs["counts"] == {"files": 3}
    assert sorted(outputs["paths"]) == sorted(
        str(root / "outputs" / n) for n in ("take1.wav", "take1.json", "linked_file.wav"))
    assert not projects["selected"] and not outputs["selected"]
    assert not projects["blocked"] and not outputs["blocked"]

    table = run(root, "--dry-run").stdout
    size = cleanup.format_bytes(projects["bytes"])
    assert any(line.lstrip().startswith("[ ] long-form projects: 4 (1 unfinished")
               and size in line for line in table.splitlines()), table
    assert "[ ] one-off generated audio: 3 file(s)" in table
    assert "add --include-projects and --include-outputs to remove it" in table


def test_yes_keeps_the_users_audio_and_removes_what_setup_installed(tree):
    root, _, _ = tree
    before = snapshot(root / "outputs")
    r = run(root, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert snapshot(root / "outputs") == before
    for gone in (".venv_chatterbox", "model_cache/original", "model_cache/turbo",
                 ".pytest_cache", ".fixture_cache", "cbx/__pycache__", "cbx.egg-info"):
        assert not os.path.lexists(root / gone), gone


def test_each_include_flag_removes_exactly_its_row(tree):
    root, outside, _ = tree
    outside_before = snapshot(outside)
    out = root / "outputs"
    r = run(root, "--only", "caches", "--include-projects", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (out / "projects").exists() and not (root / ".pytest_cache").exists()
    assert (out / "take1.wav").exists() and (root / ".venv_chatterbox").exists()
    assert "removed long-form projects: 4 (1 unfinished, 2 unknown)" in r.stdout

    r = run(root, "--only", "outputs", "--include-outputs", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.is_dir() and not any(out.iterdir())
    assert (root / ".venv_chatterbox").exists() and snapshot(outside) == outside_before

    # --keep-outputs (older scripts) wins over an include flag
    old_project(out / "projects" / "again", chunks=1, done=0)
    r = run(root, "--include-projects", "--keep-outputs", "--models-only", "--yes")
    assert r.returncode == 0 and (out / "projects" / "again" / "project.json").exists()


def test_naming_the_users_audio_in_only_needs_its_include_flag(tree, tmp_path):
    root, _, _ = tree
    before = snapshot(tmp_path)
    r = run(root, "--only", "projects,caches", "--yes")
    assert r.returncode == cleanup.EXIT_USAGE
    assert "add --include-projects" in r.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(os.name == "nt", reason="POSIX pseudo-terminal")
def test_answering_y_on_a_terminal_keeps_the_users_audio(tree):
    import pty

    root, _, _ = tree
    before = snapshot(root / "outputs")
    controller, terminal = pty.openpty()
    try:
        os.write(controller, b"y\n")
        r = run(root, stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[y/N]" in r.stdout and "Freed" in r.stdout
    assert "This includes your own audio" not in r.stdout
    assert not (root / ".venv_chatterbox").exists()
    assert snapshot(root / "outputs") == before


@pytest.mark.skipif(os.name == "nt", reason="POSIX pseudo-terminal")
def test_the_prompt_names_the_users_audio_when_it_is_included(tree):
    import pty

    root, _, _ = tree
    controller, terminal = pty.openpty()
    try:
        os.write(controller, b"n\n")
        r = run(root, "--include-projects", stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert r.returncode == cleanup.EXIT_DECLINED, r.stdout + r.stderr
    assert "This includes your own audio (long-form projects: 4" in r.stdout
    assert (root / "outputs" / "projects" / "halfway" / "project.json").exists()


def test_the_output_folder_comes_from_cbx_output_dir(tree):
    root, _, _ = tree
    moved = root / "my_audio"
    old_project(moved / "projects" / "book", chunks=4, done=4)
    write(moved / "single.wav", 1000)
    env = dict(os.environ, CBX_OUTPUT_DIR=str(moved))
    rows = user_rows(listing(root, env=env))
    assert rows["projects"]["counts"] == {"projects": 1, "unfinished": 0, "unknown": 0}
    assert rows["projects"]["paths"] == [str(moved / "projects")]
    assert rows["outputs"]["paths"] == [str(moved / "single.wav")]
    r = run(root, "--yes", env=env)
    assert r.returncode == 0 and (moved / "projects" / "book" / "project.json").exists()
    r = run(root, "--yes", "--include-projects", "--include-outputs", env=env)
    assert r.returncode == 0 and moved.is_dir() and not any(moved.iterdir())
    assert (root / "outputs" / "projects" / "halfway").is_dir(), "not the default folder"


MAKE_PROJECT = """
import cbx
cbx.project("Chapter one", text="Hello there. Second sentence.")
"""


def test_a_project_made_by_cbx_is_counted_as_unfinished(tree):
    """Whatever format cbx.project writes (project.db read by the store's summary, or
    the older project.json), a new project with no audio yet is one unfinished one."""
    root, _, _ = tree
    out = root / "fresh_outputs"
    made = subprocess.run([sys.executable, "-c", MAKE_PROJECT], cwd=str(ROOT),
                          env=dict(os.environ, CBX_OUTPUT_DIR=str(out)),
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    rows = user_rows(listing(root, env=dict(os.environ, CBX_OUTPUT_DIR=str(out))))
    assert rows["projects"]["counts"] == {"projects": 1, "unfinished": 1, "unknown": 0}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before, \
        "a dry run reads the store without creating or touching a file"


def test_a_broken_store_module_gives_unknown_counts_without_site_packages(tree, tmp_path):
    """cleanup.py must run when the environment is broken or gone: with Python's site
    packages off (-S) and cbx/longform/store.py raising on import, project.db folders are
    counted as unknown, old project.json ones still exactly, and nothing crashes."""
    root, _, _ = tree
    checkout = tmp_path / "copy"
    shutil.copytree(ROOT / "cbx", checkout / "cbx",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "cleanup.py", checkout / "cleanup.py")
    (checkout / "cbx" / "longform" / "store.py").write_text(
        'raise RuntimeError("half-installed")\n')
    old_project(root / "outputs" / "projects" / "valid-db", chunks=1, done=0)
    (root / "outputs" / "projects" / "valid-db" / "project.json").rename(
        root / "outputs" / "projects" / "valid-db" / "project.db")
    r = subprocess.run([sys.executable, "-S", str(checkout / "cleanup.py"), "--root",
                        str(root), "--dry-run", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = user_rows(json.loads(r.stdout))
    assert rows["projects"]["counts"] == {"projects": 5, "unfinished": 1, "unknown": 3}
    assert "RuntimeError: half-installed" in rows["projects"]["note"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="-P and PYTHONSAFEPATH: Python 3.11+")
@pytest.mark.parametrize("flags, safe_path", [(["-P"], {}), ([], {"PYTHONSAFEPATH": "1"})],
                         ids=["-P", "PYTHONSAFEPATH"])
def test_runs_from_any_folder_with_any_path_setting(tree, tmp_path, flags, safe_path):
    """-P and PYTHONSAFEPATH leave the script's folder off sys.path; cleanup still finds
    cbx beside it, run from another folder. -S keeps this interpreter's site-packages
    (where cbx is installed editable) from hiding the problem: a user's Python has no
    cbx."""
    root, _, _ = tree
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-S", *flags, str(ROOT / "cleanup.py"), "--root",
                        str(root), "--dry-run"], cwd=elsewhere, env=dict(env, **safe_path),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Dry run: nothing removed" in r.stdout and "Python environment" in r.stdout
    assert not any(elsewhere.iterdir())

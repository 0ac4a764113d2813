#!/usr/bin/env python3
"""Show what Chatterbox Studio takes on disk, then remove what you choose.

    python cleanup.py                  # table of everything, then asks before removing
    python cleanup.py --dry-run        # only the table
    python cleanup.py --models-only    # weights only (model_cache/ and the Hub cache)
    python cleanup.py --keep-voices --yes
    python cleanup.py --include-projects --include-outputs   # your own audio too

Your own audio in the output folder (long-form projects, unfinished ones included, and
one-off results) is listed but never removed by default, not even with --yes: hours of
generated chunks must not go with one "y". Only --include-projects and
--include-outputs remove them.

Standard library only, so it also works when the environment is broken or half-removed.
Run it with the system Python (not the environment's) when removing the environment.

Safety: nothing outside the checkout is removed except the Hugging Face Hub cache entries
of the Chatterbox repositories, which are listed by name; symbolic links (and Windows
junctions) are removed as links, never followed; read-only files are made writable and
retried; if a running Voila server, Jupyter kernel or other process is using something to
be removed, nothing is removed and the process is named. The checkout itself, any folder
above it, the home folder and drive roots are never removed, whatever CBX_*_DIR says.
The runtime state of a kernel that still holds a model is kept (and the kernel named)
unless --force is given.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.dont_write_bytecode = True   # do not re-create the __pycache__ folders it removes
SCRIPT_ROOT = Path(__file__).resolve().parent
# cbx (its standard-library layer) comes from this checkout, whatever the current folder
# and Python's path settings: python -P, -I and PYTHONSAFEPATH leave this folder off
# sys.path.
sys.path.insert(0, str(SCRIPT_ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from cbx.scripts import (CUDA_PACKAGES, UsageParser,  # noqa: E402 - layer 1 of the
                         cuda_library_dirs)           # checkout: stdlib only
from cbx.units import format_bytes  # noqa: E402

VENV_DIR_NAME = ".venv_chatterbox"
GROUPS = ("env", "models", "hub", "voices", "projects", "outputs", "caches")
# The user's own audio: removed only when its flag names it (--yes alone never does).
INCLUDE_FLAGS = {"projects": "--include-projects", "outputs": "--include-outputs"}
PROJECTS_DIR = "projects"        # <output dir>/projects/<folder>/, as cbx.longform keeps them
# Folders inside the checkout that are pure caches (re-created on demand).
CACHE_DIRS = (".pytest_cache", ".fixture_cache", ".pip_cache", ".ipynb_checkpoints",
              "tests/artifacts", "build")
# Never descended into when looking for __pycache__ folders.
_NO_DESCEND = {".git", VENV_DIR_NAME, "model_cache", "node_modules"}

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_DECLINED = 2
EXIT_BUSY = 3
EXIT_FAILED = 4

DESCRIPTION = ("Show the disk used by Chatterbox Studio's environment, model weights, "
               "Hugging Face cache, voices, long-form projects, generated audio and "
               "caches, then remove what you choose: by default, after asking, "
               "everything except your projects and generated audio, which only "
               "--include-projects and --include-outputs remove.")
EXIT_CODES_HELP = """\
sizes: disk space actually used (allocated blocks, as `du -s` counts them) on Linux and
macOS, file sizes on Windows; hard-linked files count once; links count as links.

exit codes:
  0  done (or nothing to remove, or --dry-run)
  1  bad arguments, or --root is not a Chatterbox Studio checkout
  2  not confirmed (answered no, or no terminal to ask and no --yes)
  3  a running process uses something to be removed: nothing was removed
  4  some items could not be removed completely (each failure is listed)
"""


def say(msg: str = "") -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------
# Measuring and removing without following links
# ---------------------------------------------------------------------------------------

_IO_REPARSE_TAG_MOUNT_POINT = 0xA0000003   # stat.IO_REPARSE_TAG_MOUNT_POINT (Windows only)


def _is_link(st: os.stat_result) -> bool:
    """A symlink, or a Windows junction (which os.path.islink misses before 3.12)."""
    if stat.S_ISLNK(st.st_mode):
        return True
    return getattr(st, "st_reparse_tag", 0) == _IO_REPARSE_TAG_MOUNT_POINT


def _allocated(st: os.stat_result) -> int:
    blocks = getattr(st, "st_blocks", None)
    return blocks * 512 if blocks is not None else st.st_size


def _entries(paths, errors: list[str] | None = None):
    """(path, lstat) of every file, folder and link under `paths`, every inode once,
    links never followed. Unreadable parts are skipped and noted in `errors`."""
    seen: set[tuple[int, int]] = set()
    stack = [Path(p) for p in paths]
    while stack:
        p = stack.pop()
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if errors is not None:
                errors.append(f"{p}: {exc}")
            continue
        key = (st.st_dev, st.st_ino)
        if st.st_ino and key in seen:
            continue
        seen.add(key)
        yield p, st
        if stat.S_ISDIR(st.st_mode) and not _is_link(st):
            try:
                with os.scandir(p) as it:
                    stack.extend(Path(e.path) for e in it)
            except OSError as exc:
                if errors is not None:
                    errors.append(f"{p}: {exc}")


def disk_usage(*paths: Path, errors: list[str] | None = None) -> int:
    """Bytes of disk used by the given paths, like `du -s --block-size=1 -c PATHS`:
    allocated blocks (file sizes where the OS has no block count), every inode once,
    links measured as links and never followed. Unreadable parts are skipped and noted
    in `errors`."""
    return sum(_allocated(st) for _p, st in _entries(paths, errors))


def count_files(*paths: Path) -> int:
    """Files (a link counts as one) under the given paths, for the outputs row."""
    return sum(1 for _p, st in _entries(paths)
               if _is_link(st) or not stat.S_ISDIR(st.st_mode))


def _make_accessible(path: str) -> None:
    """Give the owner read, write and (folders) search rights, where the OS allows it."""
    try:
        mode = os.lstat(path).st_mode
        if not stat.S_ISLNK(mode):
            os.chmod(path, stat.S_IMODE(mode) | stat.S_IWRITE | stat.S_IREAD
                     | (stat.S_IEXEC if stat.S_ISDIR(mode) else 0))
    except OSError:
        pass   # the retry (or the report) says what really stops the removal


def _make_writable_and_retry(func, path, exc_info) -> None:
    """rmtree error hook: a read-only file (common on Windows) or a read-only parent
    folder stops deletion; make them writable and try once more. Only removals are
    retried (rmtree also reports failed listings, whose functions need other arguments)."""
    exc = exc_info if isinstance(exc_info, BaseException) else exc_info[1]
    if isinstance(exc, FileNotFoundError):
        return
    if not isinstance(exc, PermissionError) or func not in (os.unlink, os.remove, os.rmdir):
        raise exc
    for target in (path, os.path.dirname(path)):
        _make_accessible(target)
    func(path)


def _open_up_tree(top: Path) -> None:
    """Make every folder under `top` listable and writable before removing it, so an
    unreadable folder (chmod 000, a copied read-only tree) is removed like any other.
    Links are never followed."""
    stack = [str(top)]
    while stack:
        folder = stack.pop()
        _make_accessible(folder)
        try:
            with os.scandir(folder) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue      # reported by the removal itself


def remove_path(path: Path, failures: list[str]) -> None:
    """Delete a file, link or folder tree; a link is removed as a link. What cannot be
    removed is added to `failures`, and the rest of the tree is still removed."""
    def record(func, failed, exc_info) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else exc_info[1]
        try:
            _make_writable_and_retry(func, failed, exc)
        except OSError as final:
            failures.append(f"{failed}: {final}")

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if _is_link(st):
        if stat.S_ISLNK(st.st_mode):
            os.unlink(path)
        else:
            os.rmdir(path)     # a junction: removes the link, not its target
    elif stat.S_ISDIR(st.st_mode):
        _open_up_tree(path)
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=record)
        else:
            shutil.rmtree(path, onerror=record)
    else:
        try:
            os.unlink(path)
        except OSError as exc:
            record(os.unlink, str(path), exc)


def _within(path: Path, folder: Path) -> bool:
    try:
        return os.path.commonpath([str(path), str(folder)]) == str(folder)
    except ValueError:    # different drives on Windows
        return False


def real_location(path: Path) -> Path:
    """Where deleting `path` acts: its parent resolved through links, plus its own name
    (the last component is deleted as itself, link or not). '.' and '..' are resolved
    first: they name a folder, never themselves."""
    path = Path(os.path.abspath(path))
    return Path(os.path.realpath(path.parent)) / path.name


def protected_reason(path: Path, root: Path, allowed_outside: tuple[Path, ...] = ()) -> str:
    """Why `path` must never be removed by cleanup ('' when it may be): the checkout
    itself or anything above it, the home folder, a drive root, or anything outside the
    checkout other than the folders in `allowed_outside` (the Hub cache's)."""
    where = real_location(path)
    real_root = Path(os.path.realpath(root))
    home = Path(os.path.realpath(Path.home()))
    if where == Path(where.anchor) or where == home:
        return f"{where} is a drive root or the home folder: never removed by cleanup.py"
    if _within(real_root, where):
        return (f"{where} is the checkout or a folder above it: never removed by "
                "cleanup.py")
    if _within(home, where):
        return f"{where} holds the home folder: never removed by cleanup.py"
    if where.parent in allowed_outside or _within(where, real_root):
        return ""
    return f"outside the repository ({where}): not removed by cleanup.py"


# ---------------------------------------------------------------------------------------
# What can be removed
# ---------------------------------------------------------------------------------------

@dataclass
class Item:
    group: str
    label: str
    paths: list[Path]
    key: str = ""                    # e.g. the variant for models/hub items
    size: int = 0
    note: str = ""
    blocked: str = ""                # why it will not be removed even if selected
    selected: bool = False
    freed: int = 0
    failures: list[str] = field(default_factory=list)
    shown: str = ""                  # the location shown when it is not paths[0]
    counts: dict = field(default_factory=dict)   # projects: total/unfinished/unknown

    def to_dict(self) -> dict:
        return {"group": self.group, "label": self.label, "key": self.key,
                "paths": [str(p) for p in self.paths], "bytes": self.size,
                "selected": self.selected, "blocked": self.blocked or None,
                "note": self.note or None, "freed": self.freed,
                "failures": self.failures, "counts": self.counts or None}


def _located(env_var: str, default: Path) -> Path:
    """A folder from the environment, made absolute with '.' and '..' resolved (so
    CBX_STATE_DIR=.. is the folder above, and is judged as such)."""
    value = os.environ.get(env_var)
    return Path(os.path.abspath(Path(value).expanduser())) if value else default


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, by its own precedence of environment variables."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _load_cbx(root: Path):
    """cbx's modules that need only the standard library: the variant table, path names
    and the records of kernels holding a model."""
    from cbx import holds, paths, variants

    return paths, variants, holds


def _load_project_summary():
    """(cbx.longform.store.summary, '') or (None, why): the store reads its own sqlite
    schema, so cleanup never has to know it. A missing or broken store (a half-removed
    or older checkout) must not stop cleanup: its projects are counted as unknown."""
    try:
        from cbx.longform import store
        return store.summary, ""
    except Exception as exc:     # whatever a broken module raises: counts become unknown
        return None, f"cbx.longform.store cannot be used ({type(exc).__name__}: {exc})"


def project_progress(folder: Path, summary) -> tuple[int, int] | None:
    """(chunks, done) of one project folder; None when it cannot be read. project.db
    is read by the store's summary; an old project.json approximately (a chunk is done
    when its record exists), since the store imports it exactly on first open."""
    if (folder / "project.db").is_file():
        if summary is None:
            return None
        try:
            info = summary(folder)
            return (int(info["chunks"]), int(info["done"])) if info else None
        except Exception:        # a store bug must not stop cleanup: this one is unknown
            return None
    try:
        plan = json.loads((folder / "project.json").read_text(encoding="utf-8"))
        total = len(plan["chunks"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return total, sum((folder / "chunks" / f"{i:04d}.json").is_file()
                      for i in range(total))


def project_counts(projects: Path) -> tuple[dict, str]:
    """How many projects the folder holds, how many are unfinished and how many could
    not be read (counted as unknown), and why some are unknown ('' when none are)."""
    counts = {"projects": 0, "unfinished": 0, "unknown": 0}
    folders = sorted(p for p in projects.iterdir()
                     if (p / "project.db").is_file() or (p / "project.json").is_file())
    summary, why = _load_project_summary()
    for folder in folders:
        progress = project_progress(folder, summary)
        counts["projects"] += 1
        if progress is None:
            counts["unknown"] += 1
        elif progress[1] < progress[0]:
            counts["unfinished"] += 1
    if counts["unknown"] and not why:
        why = f"{counts['unknown']} project(s) could not be read"
    return counts, why if counts["unknown"] else ""


def user_audio_items(out: Path, real_root: Path) -> list[Item]:
    """The user's own audio in the output folder, as two rows that only their
    --include-* flag selects: long-form projects (count, unfinished, size) and the
    one-off outputs (everything else there). An output folder cleanup may not touch
    (CBX_OUTPUT_DIR naming the checkout, home, a drive root, a place outside the
    checkout) is one blocked row, not read further."""
    reason = protected_reason(out, real_root)
    if reason and os.path.lexists(out):
        return [Item("outputs", "projects and generated audio", [out], blocked=reason)]
    try:
        entries = sorted(out.iterdir()) if out.is_dir() else []
    except OSError as exc:
        return [Item("outputs", "generated audio (cannot be listed)", [out],
                     blocked=f"cannot list {out}: {exc}")]
    items = []
    projects = out / PROJECTS_DIR
    if projects in entries:
        try:
            counts, why = project_counts(projects)
            unknown = f", {counts['unknown']} unknown" if why else ""
            label = (f"long-form projects: {counts['projects']} "
                     f"({counts['unfinished']} unfinished{unknown})")
        except OSError as exc:
            counts, why = {}, f"cannot list {projects}: {exc}"
            label = "long-form projects: count unknown"
        items.append(Item("projects", label, [projects], note=why, counts=counts))
    others = [p for p in entries if p != projects]
    if others:
        files = count_files(*others)
        items.append(Item("outputs", f"one-off generated audio: {files} file(s)", others,
                          shown=f"{out} (all but {PROJECTS_DIR}{os.sep})",
                          counts={"files": files}))
    return items


def model_holders(state: Path, holds) -> list[str]:
    """The running kernels that hold a loaded model, as their hold records name them
    (read only: stale records are left for the next load to clear)."""
    records = holds.ModelHolds(state).live(prune=False)
    return [f"{r['session']} ({r['variant']} on {r['device']}, since {r['since']})"
            for r in records]


def discover(root: Path, force: bool = False) -> list[Item]:
    """Every removable thing, measured. Nothing is selected yet. The runtime state of
    kernels that still hold a model is blocked unless `force`."""
    paths, variants, holds = _load_cbx(root)
    items: list[Item] = []
    real_root = Path(os.path.realpath(root))

    env = root / VENV_DIR_NAME
    if os.path.lexists(env):
        items.append(Item("env", f"Python environment ({VENV_DIR_NAME})", [env]))

    model_dir = _located(paths.MODEL_DIR_ENV, root / "model_cache")
    if model_dir.is_dir():
        for sub in sorted(model_dir.iterdir()):
            if not (sub.is_dir() or sub.is_symlink()):
                continue
            v = variants.VARIANTS.get(sub.name)
            label = f"{v.label} weights" if v else "weights (unknown variant)"
            items.append(Item("models", f"{label}: model_cache/{sub.name}", [sub],
                              key=sub.name))

    hub = hub_cache_dir()
    repos: dict[str, list[str]] = {}
    for v in variants.VARIANTS.values():
        repos.setdefault(v.repo_id, []).append(v.name)
    for repo_id, names in repos.items():
        folder = "models--" + repo_id.replace("/", "--")
        found = [p for p in (hub / folder, hub / ".locks" / folder) if os.path.lexists(p)]
        if found:
            items.append(Item("hub", f"Hub cache: {repo_id} (used by {', '.join(names)})",
                              found, key=",".join(names)))

    voice = _located(paths.VOICE_DIR_ENV, root / "voices")
    if os.path.lexists(voice):
        items.append(Item("voices", "voice library", [voice]))
    items += user_audio_items(_located(paths.OUTPUT_DIR_ENV, root / "outputs"), real_root)

    pycaches = []
    for dirpath, dirnames, _files in os.walk(root):   # os.walk does not follow links
        here = Path(dirpath)
        if "__pycache__" in dirnames:
            pycaches.append(here / "__pycache__")
        dirnames[:] = [d for d in dirnames
                       if d != "__pycache__" and not (here == root and d in _NO_DESCEND)]
    if pycaches:
        items.append(Item("caches", f"__pycache__ folders ({len(pycaches)})", pycaches))
    for name in CACHE_DIRS:
        p = root / name
        if os.path.lexists(p):
            items.append(Item("caches", name, [p]))
    for p in sorted(root.glob("*.egg-info")):
        items.append(Item("caches", f"{p.name} (pip install -e leftovers)", [p]))
    state = _located(paths.STATE_DIR_ENV, root / ".cbx_state")
    if os.path.lexists(state):
        item = Item("caches", "runtime state (.cbx_state)", [state])
        holders = model_holders(state, holds)
        if holders and not force:
            item.blocked = ("kept: a running kernel holds a model: " + "; ".join(holders)
                            + ". Unload it (Unload button, or python -m cbx deload), or "
                            "run cleanup.py with --force")
        items.append(item)

    hub_real = Path(os.path.realpath(hub))
    for item in items:
        errors: list[str] = []
        item.size = disk_usage(*item.paths, errors=errors)
        if errors:
            item.note = f"{len(errors)} part(s) unreadable, size is a lower bound"
        elif item.group == "env":
            cuda = disk_usage(*cuda_library_dirs(item.paths[0]))
            if cuda:
                item.note = (f"{format_bytes(cuda)} of it CUDA libraries ("
                             f"{', '.join(CUDA_PACKAGES)}), needed only with an NVIDIA "
                             "GPU; without one, removing the environment and running "
                             "setup_env.py again installs PyTorch's CPU-only build")
        for p in item.paths:
            reason = protected_reason(p, real_root, item_outside_ok(item, hub_real))
            if reason:
                item.blocked = reason
            elif os.path.islink(p) or (os.path.lexists(p) and _is_link(os.lstat(p))):
                item.note = f"link to {os.path.realpath(p)}: only the link is removed"
    return items


def item_outside_ok(item: Item, hub_real: Path) -> tuple[Path, ...]:
    """The folders outside the checkout an item may remove entries of (Hub cache only)."""
    return (hub_real, hub_real / ".locks") if item.group == "hub" else ()


def conda_env_note(root: Path) -> str | None:
    """A conda env made by setup_env.py --conda lives outside the checkout: say how to
    remove it instead of removing it."""
    yml = root / "environment.yml"
    conda = os.environ.get("CONDA_EXE") or shutil.which("conda")
    if not conda or not yml.is_file():
        return None
    m = re.search(r"^name:\s*(\S+)", yml.read_text(encoding="utf-8"), re.M)
    if not m:
        return None
    try:
        out = subprocess.run([conda, "env", "list", "--json"], capture_output=True,
                             text=True, timeout=60)
        envs = json.loads(out.stdout).get("envs", [])
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        return None
    if any(Path(e).name == m.group(1) for e in envs):
        return (f"conda env '{m.group(1)}' exists outside the checkout; remove it with: "
                f"conda env remove -n {m.group(1)}")
    return None


def included(args: argparse.Namespace) -> set[str]:
    """The user-audio groups whose --include-* flag was given."""
    return {g for g in INCLUDE_FLAGS if getattr(args, f"include_{g}")}


def select(items: list[Item], args: argparse.Namespace) -> None:
    """Mark what the flags choose. The user's audio is chosen only by its --include-*
    flag, which adds it to whatever else is chosen."""
    if args.only:
        groups = set(args.only)
    elif args.models_only:
        groups = {"models", "hub"}
    elif args.env_only:
        groups = {"env"}
    elif args.caches_only:
        groups = {"caches"}
    else:
        groups = set(GROUPS)
    groups = (groups - set(INCLUDE_FLAGS)) | included(args)
    for g, flag in (("env", args.keep_env), ("models", args.keep_models),
                    ("hub", args.keep_models or args.keep_hub_cache),
                    ("voices", args.keep_voices), ("projects", args.keep_outputs),
                    ("outputs", args.keep_outputs), ("caches", args.keep_caches)):
        if flag:
            groups.discard(g)
    for item in items:
        item.selected = item.group in groups
        if item.selected and args.variant and item.group in ("models", "hub"):
            item.selected = bool(set(item.key.split(",")) & set(args.variant))
        if item.blocked:
            item.selected = False


# ---------------------------------------------------------------------------------------
# Processes that use what would be removed
# ---------------------------------------------------------------------------------------

@dataclass
class Proc:
    pid: int
    command: str
    uses: str


def _norm(p: str) -> str:
    return os.path.normcase(os.path.normpath(p))


def _linux_processes(targets: list[str]) -> list[Proc] | None:
    procs = []
    own = {os.getpid(), os.getppid()}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        base = entry.path
        try:
            with open(f"{base}/cmdline", "rb") as fh:
                args = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
            cwd = os.readlink(f"{base}/cwd")
        except OSError:
            continue     # gone, or not ours to inspect
        candidates = [os.path.join(cwd, a) if not os.path.isabs(a) and os.sep in a else a
                      for a in args]
        for a in args:      # --option=/path forms
            if "=" in a:
                candidates.append(a.split("=", 1)[1])
        try:
            candidates.append(os.readlink(f"{base}/exe"))
        except OSError:
            pass
        try:
            with open(f"{base}/maps", encoding="utf-8", errors="replace") as fh:
                candidates.extend(line.split(None, 5)[5].strip() for line in fh
                                  if len(line.split(None, 5)) == 6)
        except OSError:
            pass
        hit = _first_hit(candidates, targets)
        if hit:
            procs.append(Proc(int(entry.name), " ".join(args)[:200], hit))
    return procs


def _first_hit(candidates: list[str], targets: list[str]) -> str | None:
    for c in candidates:
        if not c or (os.sep not in c and "/" not in c):
            continue
        n = _norm(c)
        for t in targets:
            if n == t or n.startswith(t + os.sep):
                return t
    return None


def _windows_processes(targets: list[str]) -> list[Proc] | None:
    own = {os.getpid(), os.getppid()}
    rows = None
    try:
        out = subprocess.run(
            ["powershell", "-NoProfile", "-NonInteractive", "-Command",
             "Get-CimInstance Win32_Process | Select-Object ProcessId,ExecutablePath,"
             "CommandLine | ConvertTo-Json -Compress"],
            capture_output=True, text=True, timeout=120)
        if out.returncode == 0 and out.stdout.strip():
            data = json.loads(out.stdout)
            rows = [(r.get("ProcessId"), r.get("ExecutablePath") or "",
                     r.get("CommandLine") or "") for r in
                    (data if isinstance(data, list) else [data])]
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        rows = None
    if rows is None:
        return None
    procs = []
    for pid, exe, cmd in rows:
        if pid in own:
            continue
        hay = _norm(exe) + " " + os.path.normcase(cmd).replace("/", "\\")
        hit = next((t for t in targets if t in hay), None)
        if hit:
            procs.append(Proc(int(pid), (cmd or exe)[:200], hit))
    return procs


def _ps_processes(targets: list[str]) -> list[Proc] | None:
    try:
        out = subprocess.run(["ps", "-axww", "-o", "pid=,args="], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    own = {os.getpid(), os.getppid()}
    procs = []
    for line in out.stdout.splitlines():
        pid, _, cmd = line.strip().partition(" ")
        if not pid.isdigit() or int(pid) in own:
            continue
        hit = next((t for t in targets if t in cmd), None)
        if hit:
            procs.append(Proc(int(pid), cmd[:200], hit))
    return procs


def processes_using(paths: list[Path]) -> list[Proc] | None:
    """Processes whose program, arguments or (Linux) mapped files lie inside any of the
    paths: a Voila server or Jupyter kernel running from the environment, a kernel with
    weights memory-mapped. None when the process list cannot be read."""
    targets = sorted({_norm(os.path.realpath(p)) for p in paths}
                     | {_norm(os.path.abspath(p)) for p in paths})
    if sys.platform.startswith("linux") and os.path.isdir("/proc"):
        return _linux_processes(targets)
    if os.name == "nt":
        return _windows_processes(targets)
    return _ps_processes(targets)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = UsageParser("python cleanup.py", DESCRIPTION, EXIT_CODES_HELP, EXIT_USAGE)
    only = p.add_mutually_exclusive_group()
    only.add_argument("--models-only", action="store_true",
                      help="remove only model weights (model_cache/ and Hub cache entries)")
    only.add_argument("--env-only", action="store_true",
                      help=f"remove only the Python environment ({VENV_DIR_NAME}/)")
    only.add_argument("--caches-only", action="store_true",
                      help="remove only caches (__pycache__, .pytest_cache, .fixture_cache, "
                           ".pip_cache, build leftovers)")
    only.add_argument("--only", type=lambda s: [g.strip() for g in s.split(",") if g.strip()],
                      metavar="GROUPS", help=f"comma-separated groups: {', '.join(GROUPS)}")
    p.add_argument("--keep-env", action="store_true", help="keep the environment")
    p.add_argument("--keep-models", action="store_true",
                   help="keep model weights (model_cache/ and the Hub cache)")
    p.add_argument("--keep-hub-cache", action="store_true",
                   help="keep the Hugging Face Hub cache entries")
    p.add_argument("--keep-voices", action="store_true", help="keep the voice library")
    p.add_argument("--include-projects", action="store_true",
                   help="also remove your long-form projects (projects/ in the output folder: "
                        "outputs/ or CBX_OUTPUT_DIR), unfinished ones included; never "
                        "removed without this flag, even with --yes")
    p.add_argument("--include-outputs", action="store_true",
                   help="also remove your one-off generated audio (everything in the "
                        "output folder except projects/); never removed without this flag")
    p.add_argument("--keep-outputs", action="store_true",
                   help="keep projects and generated audio (the default already; wins "
                        "over --include-projects and --include-outputs)")
    p.add_argument("--keep-caches", action="store_true", help="keep caches")
    p.add_argument("--variant", action="append", metavar="NAME",
                   help="with models/hub: only this variant (repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="show the table and what would be freed; remove nothing")
    p.add_argument("-y", "--yes", action="store_true",
                   help="do not ask for confirmation (removes your projects and generated "
                        "audio only with their --include-* flag)")
    p.add_argument("--force", action="store_true",
                   help="also remove the runtime state of kernels that still hold a model")
    p.add_argument("--json", action="store_true",
                   help="print the items and results as JSON (needs --dry-run or --yes)")
    p.add_argument("--root", type=Path, default=SCRIPT_ROOT,
                   help="the checkout to clean (default: the folder of this script)")
    return p


def print_table(items: list[Item], extra_notes: list[str]) -> None:
    say("Chatterbox Studio: disk use (x = will be removed)")
    if not items:
        say("  nothing found")
    width = max([len(i.label) for i in items] + [20])
    for group in GROUPS:
        for item in (i for i in items if i.group == group):
            mark = "x" if item.selected else " "
            where = item.shown or (item.paths[0] if len(item.paths) == 1
                                   else f"{len(item.paths)} folders")
            say(f"  [{mark}] {item.label:<{width}}  {format_bytes(item.size):>10}   {where}")
            for note in (item.blocked, item.note):
                if note:
                    say(f"        {'':<{width}}  {'':>10}   ({note})")
    chosen = sum(i.size for i in items if i.selected)
    say(f"  {'total found':<{width + 4}}  {format_bytes(sum(i.size for i in items)):>10}")
    say(f"  {'to remove':<{width + 4}}  {format_bytes(chosen):>10}")
    kept = [INCLUDE_FLAGS[i.group] for i in items
            if i.group in INCLUDE_FLAGS and not i.selected and not i.blocked]
    if kept:
        say(f"  kept: your own audio (add {' and '.join(dict.fromkeys(kept))} to remove "
            "it)")
    for note in extra_notes:
        say(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.only and set(args.only) - set(GROUPS):
        print(f"error: unknown group(s) {', '.join(set(args.only) - set(GROUPS))}; choose "
              f"from {', '.join(GROUPS)}", file=sys.stderr)
        return EXIT_USAGE
    named = (set(args.only or ()) & set(INCLUDE_FLAGS)) - included(args)
    if named:
        flags = " and ".join(INCLUDE_FLAGS[g] for g in sorted(named))
        print(f"error: --only {','.join(sorted(named))} is your own audio; add {flags} "
              "to remove it", file=sys.stderr)
        return EXIT_USAGE
    if args.json and not (args.dry_run or args.yes):
        print("error: --json needs --dry-run or --yes (there is no prompt in JSON mode)",
              file=sys.stderr)
        return EXIT_USAGE
    root = args.root.expanduser().absolute()
    if not ((root / "pyproject.toml").is_file() and (root / "cbx").is_dir()):
        print(f"error: {root} is not a Chatterbox Studio checkout (no pyproject.toml and "
              "cbx/ there); refusing to clean it", file=sys.stderr)
        return EXIT_USAGE

    items = discover(root, force=args.force)
    select(items, args)
    notes = [n for n in [conda_env_note(root)] if n]
    chosen = [i for i in items if i.selected]
    out = say if not args.json else (lambda *_a, **_k: None)

    def finish(code: int, **extra) -> int:
        if args.json:
            print(json.dumps({"root": str(root), "items": [i.to_dict() for i in items],
                              "notes": notes, "exit_code": code, **extra}, indent=2))
        return code

    if not args.json:
        print_table(items, notes)
    if not chosen:
        out("Nothing to remove.")
        return finish(EXIT_OK)
    total = sum(i.size for i in chosen)
    if args.dry_run:
        out(f"Dry run: nothing removed; this would free about {format_bytes(total)}.")
        return finish(EXIT_OK)
    refusal = in_use(chosen, out)
    if refusal is not None:
        code, extra = refusal
        return finish(code, **extra)
    if not args.yes and not confirmed(chosen, total, out):
        return finish(EXIT_DECLINED)
    freed, failed = remove_items(chosen, root, out)
    out(f"Freed {format_bytes(freed)}.")
    if any(i.group == "env" and not i.failures for i in chosen):
        out("To set up again: python setup_env.py")
    if failed:
        out(f"{failed} item(s) could not be removed completely; close programs using them "
            "and run cleanup.py again.")
        return finish(EXIT_FAILED, freed=freed)
    return finish(EXIT_OK, freed=freed)


def in_use(chosen: list[Item], out) -> tuple[int, dict] | None:
    """(exit code, extra JSON) when something running uses what would be removed."""
    env_items = [p for i in chosen if i.group == "env" for p in i.paths]
    if os.name == "nt" and any(_within(Path(sys.prefix).resolve(), Path(p).resolve())
                               for p in env_items):
        print("error: this is the environment's own Python, which Windows cannot delete "
              "while it runs. Run cleanup.py with the system Python (py cleanup.py).",
              file=sys.stderr)
        return EXIT_BUSY, {}
    busy = processes_using([p for i in chosen for p in i.paths])
    if busy:
        print("These running processes use what would be removed; nothing was removed:",
              file=sys.stderr)
        for proc in busy:
            print(f"  pid {proc.pid}: {proc.command}\n      uses {proc.uses}", file=sys.stderr)
        print("Stop them first (Ctrl+C in the window running the dashboard, shut down the "
              "notebook kernel), then run cleanup.py again.", file=sys.stderr)
        return EXIT_BUSY, {"busy": [p.__dict__ for p in busy]}
    if busy is None:
        out("warning: could not list running processes; make sure the dashboard and any "
            "notebook kernels are stopped.")
    return None


def confirmed(chosen: list[Item], total: int, out) -> bool:
    """Ask on the terminal; no terminal means no."""
    if not sys.stdin or not sys.stdin.isatty():
        print("Not removing anything: no terminal to ask for confirmation. Re-run with "
              "--yes to remove the items marked x, or --dry-run to only look.",
              file=sys.stderr)
        return False
    own = [i.label for i in chosen if i.group in INCLUDE_FLAGS]
    if own:
        out(f"This includes your own audio ({'; '.join(own)}): removing it cannot be "
            "undone.")
    try:
        answer = input(f"Remove the {len(chosen)} item(s) marked x "
                       f"({format_bytes(total)})? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        out("Nothing removed.")
        return False
    return True


def remove_items(chosen: list[Item], root: Path, out) -> tuple[int, int]:
    """Remove each chosen item (each path checked again first); (bytes freed, number of
    items not removed completely)."""
    failed = 0
    hub_real = Path(os.path.realpath(hub_cache_dir()))
    for item in chosen:
        for p in item.paths:
            # checked again at the moment of removal: links may have changed since
            reason = protected_reason(p, root, item_outside_ok(item, hub_real))
            if reason:
                item.failures.append(f"{p}: {reason}")
                continue
            try:
                remove_path(p, item.failures)
            except OSError as exc:
                item.failures.append(f"{p}: {exc}")
        left = disk_usage(*item.paths)
        item.freed = max(item.size - left, 0)
        if item.failures:
            failed += 1
            out(f"  FAILED  {item.label}: freed {format_bytes(item.freed)}, "
                f"{format_bytes(left)} left")
            for f in item.failures:
                out(f"          {f}")
        else:
            out(f"  removed {item.label} ({format_bytes(item.freed)})")
    return sum(i.freed for i in chosen), failed


if __name__ == "__main__":
    sys.exit(main())

"""Writing the user's files so that a failure never leaves half of one, and says why.

Why one module: audio takes, project stores, exports and sidecars are all the user's
work. Each is written to a temporary file beside its target, flushed to the disk, then
renamed over it (or linked in place when the target must be new), so a kill or a full
disk leaves the old state or the new one. Every failure is `output_not_saved` naming
the path; only a full disk is told to free space.

Layer 1: standard library only.
"""
from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from .errors import OutputNotSaved

TMP_PREFIX = "."
TMP_SUFFIX = ".cbxtmp"


def tmp_name(path: Path) -> Path:
    """A temporary name beside `path` that no other writer picks, and that
    `sweep_temporaries` recognises after a kill."""
    return path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}-"
                          f"{secrets.token_hex(4)}{TMP_SUFFIX}")


def not_saved(path, exc: OSError) -> OutputNotSaved:
    """`output_not_saved` for a failed write to `path`; the fix fits the cause."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        solution = ("Free disk space on that drive (or choose a folder on another drive), "
                    "then try again; nothing was half-written.")
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        solution = "Choose a folder you may write to, or change the folder's permissions."
    else:
        solution = "Check that the folder exists and is writable, then try again."
    return OutputNotSaved(f"Could not write {path}: {reason}.", solution)


def _write_tmp(path: Path, data: bytes) -> Path:
    tmp = tmp_name(path)
    try:
        with tmp.open("xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path, data: bytes) -> Path:
    """Replace `path` with `data` whole: temporary file, fsync, rename."""
    path = Path(path)
    try:
        tmp = _write_tmp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise not_saved(path, exc) from exc
    return path


def write_new(path, data: bytes) -> Path:
    """Create `path` with `data` whole, failing with FileExistsError when it exists
    (raised as is, so a caller can pick the next free name)."""
    path = Path(path)
    try:
        tmp = _write_tmp(path, data)
        try:
            os.link(tmp, path)          # atomic and exclusive: never replaces a file
        finally:
            tmp.unlink(missing_ok=True)
    except FileExistsError:
        raise
    except OSError as exc:
        raise not_saved(path, exc) from exc
    return path


def sweep_temporaries(folder) -> list[Path]:
    """Remove what killed writers left in `folder`: cbx's temporary files that are
    older than a minute (a live writer's file is younger)."""
    import time

    removed = []
    limit = time.time() - 60
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name.startswith(TMP_PREFIX) and entry.name.endswith((TMP_SUFFIX, ".tmp")):
            try:
                if entry.stat(follow_symlinks=False).st_mtime < limit:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except FileNotFoundError:
                continue
    return removed

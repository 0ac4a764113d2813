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
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        solution = ("Part of that path is a file where a folder is needed, or a folder "
                    "where a file is: choose another name or folder.")
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
            _place_new(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except FileExistsError:
        raise
    except OSError as exc:
        raise not_saved(path, exc) from exc
    return path


def _place_new(tmp: Path, path: Path) -> None:
    """Put the written `tmp` at `path` only if nothing is there. A hard link is atomic
    and exclusive; a drive without hard links (FAT32, exFAT: USB sticks) gets the name
    reserved by creating it empty, then replaced."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        raise
    except OSError:
        path.open("xb").close()         # FileExistsError when the name is taken
    try:
        os.replace(tmp, path)
    except BaseException:
        path.unlink(missing_ok=True)    # our empty reservation, never another's file
        raise


def write_group(items: dict, *, overwrite: bool = False) -> list[Path]:
    """Write files that only make sense together (audio and its settings sidecar) so
    that a failure leaves none of them: each goes to a temporary file first (a full
    disk fails there, before any target is touched), then each is put in place; when
    one cannot be, those already placed are taken back and a replaced file gets its old
    content back. Without `overwrite` every target must be new, else FileExistsError
    naming it (and nothing written). Any other failure is `output_not_saved` naming the
    file that failed."""
    paths = [Path(p) for p in items]
    temps, placed = [], []          # placed: (target, its old content moved aside or None)
    current = paths[0]
    try:
        try:
            for current, data in zip(paths, items.values()):
                temps.append(_write_tmp(current, data))
            for current, tmp in zip(paths, temps):
                if not overwrite:
                    _place_new(tmp, current)
                    placed.append((current, None))
                    continue
                if current.is_dir():
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
                old = tmp_name(current)
                try:
                    os.replace(current, old)
                except FileNotFoundError:
                    old = None
                placed.append((current, old))
                os.replace(tmp, current)
        except BaseException:
            for path, old in reversed(placed):
                if old is None:
                    path.unlink(missing_ok=True)
                else:
                    os.replace(old, path)
            raise
        finally:
            for tmp in temps:
                tmp.unlink(missing_ok=True)
        for _path, old in placed:
            if old is not None:
                old.unlink(missing_ok=True)
    except FileExistsError as exc:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST),
                              str(current)) from exc
    except OSError as exc:
        raise not_saved(current, exc) from exc
    return paths


def check_writable(folder) -> Path:
    """Create `folder` if it is missing and prove a file can be made in it (one is
    created and removed), so a command refuses an unwritable output before minutes of
    work instead of after. Raises `output_not_saved` naming the folder."""
    folder = Path(folder)
    probe = tmp_name(folder / "write-check")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.open("xb").close()
        probe.unlink()
    except OSError as exc:
        raise not_saved(folder, exc) from exc
    return folder


def sweep_temporaries(folder, min_age: float = 60.0) -> list[Path]:
    """Remove what killed writers left in `folder`: cbx's temporary files older than
    `min_age` seconds (a live writer's file is younger; a caller that holds the
    folder's writer lock knows there is none and passes 0)."""
    import time

    removed = []
    limit = time.time() - min_age
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if entry.name.startswith(TMP_PREFIX) and entry.name.endswith((TMP_SUFFIX, ".tmp")):
            try:
                if entry.stat(follow_symlinks=False).st_mtime <= limit:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except FileNotFoundError:
                continue
    return removed


def sidecar_path(path) -> Path:
    """The settings sidecar of an audio file: its whole name plus .json, so book.wav
    and book.mp3 in one folder each keep their own."""
    path = Path(path)
    return path.with_name(path.name + ".json")

"""A fresh `git clone` has a clean working tree (issue 14, part 6).

Why: a file stored with CRLF while .gitattributes asks for LF in the repository shows
as modified in every new checkout (start_windows.bat did), which hides real changes
and makes users think setup altered their files.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True, timeout=60).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    try:
        _git("rev-parse", "--git-dir", cwd=REPO)
    except subprocess.CalledProcessError:
        pytest.skip("not a git checkout (e.g. unpacked from an archive)")
    dest = tmp_path_factory.mktemp("fresh_clone") / "repo"
    # A local clone hard-links the objects: fast, and it checks out the current branch.
    _git("clone", "--quiet", str(REPO), str(dest), cwd=dest.parent)
    return dest


def test_fresh_clone_has_clean_status(clone):
    assert _git("status", "--porcelain", cwd=clone) == ""


def test_no_text_file_is_stored_with_crlf(clone):
    """The index copy of every text file is LF; CRLF comes only from checkout rules."""
    crlf = [line for line in _git("ls-files", "--eol", cwd=clone).splitlines()
            if line.split()[0] in ("i/crlf", "i/mixed")]
    assert crlf == []


def test_windows_script_is_checked_out_with_crlf(clone):
    """cmd.exe needs CRLF (labels and `goto` misbehave with LF), so the checkout must
    still convert it; the shell script must stay LF."""
    bat = (clone / "start_windows.bat").read_bytes()
    assert b"\r\n" in bat and bat.count(b"\n") == bat.count(b"\r\n")
    assert b"\r\n" not in (clone / "start_linux.sh").read_bytes()

"""What the two stand-alone scripts, setup_env.py and cleanup.py, share.

Why here: both must run on a bare interpreter (before the environment exists, or after
it is removed), so they import nothing but cbx's standard-library layer, from the
checkout they live in. Sharing through that layer keeps one copy without giving either
script a dependency it cannot have.

Layer 1: standard library only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UsageParser(argparse.ArgumentParser):
    """argparse, but bad arguments exit with `usage_exit_code`: argparse's own 2 has
    another meaning in both scripts (setup_env.py: wrong Python; cleanup.py: declined).
    The epilog (the scripts' exit-code table) is printed as written."""

    def __init__(self, prog: str, description: str, epilog: str, usage_exit_code: int):
        super().__init__(prog=prog, description=description, epilog=epilog,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
        self.usage_exit_code = usage_exit_code

    def error(self, message: str):
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(self.usage_exit_code)


# The site-packages folders PyPI's Linux torch wheel pulls in for CUDA (about 3.4 GB):
# shown beside the environment's size, since a machine without an NVIDIA GPU never
# needs them and PyTorch's CPU-only build (setup_env.py's default there) has none.
CUDA_PACKAGES = ("nvidia", "triton")


def cuda_library_dirs(env_prefix: Path) -> list[Path]:
    """The CUDA library folders inside an environment (venv or conda; Linux, macOS or
    Windows layout), real folders only: a link's target is not this environment's."""
    found = []
    for site in (*sorted(Path(env_prefix).glob("lib/python3*/site-packages")),
                 Path(env_prefix) / "Lib" / "site-packages"):
        found += [site / name for name in CUDA_PACKAGES
                  if (site / name).is_dir() and not (site / name).is_symlink()]
    return found

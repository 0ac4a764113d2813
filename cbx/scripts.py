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

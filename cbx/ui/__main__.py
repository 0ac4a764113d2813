"""`python -m cbx.ui`: serve the dashboard with Voila and the repository's settings.

The start scripts and the README use this one command so the Voila configuration
(localhost only, 50 MB uploads, idle-kernel culling) is always applied, on Windows and
Linux alike. It is

    voila --Voila.config_file_paths=<repo>/voila_config notebooks/dashboard.ipynb

plus what Voila's configuration has no way to add: the route that serves the output
folder's files to the page's Download links (cbx/ui/fileserver.py), the guard that
refuses requests made by other web sites' pages and the "too many dashboard tabs" page
(cbx/ui/guard_http.py).

Environment: CBX_PORT (default 8866), CBX_KERNEL_CULL_MINUTES (default 60),
CBX_IDLE_UNLOAD_MINUTES (default 15), CBX_MAX_KERNELS (default 4), plus the cbx paths
(CBX_MODEL_DIR, ...).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import envsettings
from ..paths import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "voila_config"
DEFAULT_NOTEBOOK = REPO_ROOT / "notebooks" / "dashboard.ipynb"


def voila_argv(notebook: Path = DEFAULT_NOTEBOOK, port: int | None = None,
               open_browser: bool = True) -> list[str]:
    """The Voila command-line arguments (without the program name)."""
    argv = [f"--Voila.config_file_paths={CONFIG_DIR}", str(notebook)]
    if port is not None:
        argv.insert(0, f"--port={port}")
    if not open_browser:
        argv.insert(0, "--no-browser")
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cbx.ui",
        description="Open Chatterbox Studio in the browser (served by Voila on this "
                    "machine only). Stop it with Ctrl+C.")
    parser.add_argument("--port", type=int, default=None,
                        help="port to serve on (default: $CBX_PORT or 8866)")
    parser.add_argument("--no-browser", action="store_true",
                        help="do not open a browser tab")
    parser.add_argument("--notebook", type=Path, default=DEFAULT_NOTEBOOK,
                        help="the notebook to serve (default: notebooks/dashboard.ipynb)")
    args = parser.parse_args(argv)
    problems = envsettings.server_problems()
    if problems:
        for problem in problems:     # before the server runs, not half-way into it
            print(f"error [{problem.code}]: {problem.message}\n  fix: {problem.solution}",
                  file=sys.stderr)
        return 2
    if not args.notebook.is_file():
        print(f"Notebook not found: {args.notebook}", file=sys.stderr)
        return 2
    try:
        from .fileserver import studio_voila
        app = studio_voila()
    except ImportError:
        print("Voila is not installed in this environment. Run `python setup_env.py`, "
              "then try again.", file=sys.stderr)
        return 3
    app.launch_instance(voila_argv(args.notebook, args.port, not args.no_browser))
    return 0


if __name__ == "__main__":
    sys.exit(main())

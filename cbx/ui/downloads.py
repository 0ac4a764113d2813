"""Links that download the dashboard's files (results, their settings, project exports)
straight from the output folder, through the route `fileserver.py` adds to the server.

Why a URL and not the bytes in the page: a `data:` URL travels inside a widget message,
and an hour-long export (239 MiB) is over the server's websocket cap; a URL streams the
file from disk to the browser's downloads, however large. The kernel side here only
builds the links; it needs no server module.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from ..audio import FORMATS

ROUTE = "cbx/outputs"                     # under the server's base URL
# audio, settings sidecars and subtitles, nothing else
SERVED_SUFFIXES = (*FORMATS, ".json", ".srt", ".vtt")


def href(path: Path, output_dir: Path) -> str | None:
    """The link that downloads `path`, a file in `output_dir` (the server serves that
    folder only), or None for a file elsewhere or of a kind it does not serve.

    The server's base URL: Voila tells its kernels (VOILA_SERVER_URL); JupyterLab's is
    "/" unless someone configured another."""
    path, root = Path(path).resolve(), Path(output_dir).resolve()
    if path.suffix.lower() not in SERVED_SUFFIXES or not path.is_relative_to(root):
        return None
    base = os.environ.get("VOILA_SERVER_URL") or "/"
    relative = quote(path.relative_to(root).as_posix())
    return f"{base.rstrip('/')}/{ROUTE}/{relative}?download=1"

"""`python -m cbx serve` on a free port with cbx's user folders under `work`, for the
server's tests and its benchmark (`python -m cbx.dev.bench_server`)."""
from __future__ import annotations

import sys

from .pageserver import PageServer


class SpeechServer(PageServer):
    """The speech server as users start it; `base_url` is what an OpenAI client takes."""

    kind = "speech_server"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "cbx", "serve", "--port", str(self.port),
                "--device", "cpu"]

    def ready_url(self) -> str:
        return f"{self.url}v1/models"        # 401 with a key set: it serves

    @property
    def base_url(self) -> str:
        return f"{self.url}v1"

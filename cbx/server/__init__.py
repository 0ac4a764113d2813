"""`python -m cbx serve`: an OpenAI-compatible speech server over cbx, so Open WebUI,
SillyTavern, Home Assistant and any OpenAI client can speak in the user's voices.

config.py (settings, checked before anything heavy loads), app.py (the HTTP API and its
guard), worker.py (the one thread that speaks, the seam to the engine), encoding.py
(OpenAI's response formats from cbx's blocks), errors.py (cbx's errors as HTTP answers).
"""
from __future__ import annotations

from .config import DEFAULT_HOST, DEFAULT_PORT, load_config


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, device: str = "auto") -> int:
    """Run the server until Ctrl+C; `invalid_setting` before anything starts when the
    settings are wrong (another address than loopback without CBX_API_KEY among them)."""
    import logging

    import uvicorn

    from .app import create_app

    config = load_config(host, port, device)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    print(f"cbx speech server: OpenAI base URL {config.base_url}"
          + ("" if config.api_key is None else " (API key required)"), flush=True)
    uvicorn.run(create_app(config), host=config.host, port=config.port,
                log_level="info", timeout_graceful_shutdown=10)
    return 0

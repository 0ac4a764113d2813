"""Layer 5: the Voila dashboard (widgets only; all logic lives in the layers above).

`from cbx.ui import dashboard; dashboard()` in a notebook cell builds and shows the page.
ipywidgets is imported only when the page is built, never at `import cbx`.
"""
from __future__ import annotations


def dashboard(model_dir=None, backend=None):
    """Build the Chatterbox Studio page (display it by making it a cell's last value)."""
    from .view import dashboard as _build

    return _build(model_dir=model_dir, backend=backend)


__all__ = ["dashboard"]

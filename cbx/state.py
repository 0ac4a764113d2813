"""The model's state as every layer sees it: one enum and one frozen snapshot.

Why: "ready", "not_loaded" and friends were strings repeated across the manager, the
controller and the page, and the manager's description a dict any of them could
misspell. A snapshot is taken under the manager's lock, so it is always consistent.

Layer 1: standard library only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum


class ModelState(str, Enum):
    """What the kernel's model is doing (a str, so it prints and serialises as its value)."""

    NOT_LOADED = "not_loaded"
    LOADING = "loading"
    READY = "ready"
    GENERATING = "generating"
    UNLOADING = "unloading"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ModelInfo:
    """One consistent look at the kernel's model (ModelManager.describe())."""

    state: ModelState = ModelState.NOT_LOADED
    idle_unload_minutes: float | None = None
    variant: str | None = None
    device: str | None = None
    dtype: str | None = None
    loaded_at: str | None = None
    load_seconds: float | None = None
    voice: str | None = None
    watermark: str | None = None        # "on", or "off: <why>"
    last_unload: str | None = None      # the last unload's memory figures
    token_loop: str | None = None       # a token-loop fallback or graph check (decode)

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    def to_dict(self) -> dict:
        """JSON-ready: the state as its value, unset fields left out."""
        return {key: str(value) if key == "state" else value
                for key, value in asdict(self).items() if value is not None}

"""Where cbx reads and writes on disk. Every location can be moved with an environment
variable so tests, other drives and read-only checkouts work.

Layer 1: standard library only.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

MODEL_DIR_ENV = "CBX_MODEL_DIR"
VOICE_DIR_ENV = "CBX_VOICE_DIR"
OUTPUT_DIR_ENV = "CBX_OUTPUT_DIR"
STATE_DIR_ENV = "CBX_STATE_DIR"


def _from_env(var: str, default: Path, override: str | os.PathLike | None) -> Path:
    if override is not None:
        return Path(override).expanduser().resolve()
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def model_dir(override: str | os.PathLike | None = None) -> Path:
    """Root of the model cache; one sub-folder per variant."""
    return _from_env(MODEL_DIR_ENV, REPO_ROOT / "model_cache", override)


def variant_dir(variant: str, override: str | os.PathLike | None = None) -> Path:
    return model_dir(override) / variant


def voice_dir(override: str | os.PathLike | None = None) -> Path:
    """The voice library: saved reference clips and their cached conditionals."""
    return _from_env(VOICE_DIR_ENV, REPO_ROOT / "voices", override)


def output_dir(override: str | os.PathLike | None = None) -> Path:
    """Where the dashboard saves generated audio and its settings sidecars."""
    return _from_env(OUTPUT_DIR_ENV, REPO_ROOT / "outputs", override)


def state_dir(override: str | os.PathLike | None = None) -> Path:
    """Small runtime files shared between kernels (the GPU hold)."""
    return _from_env(STATE_DIR_ENV, REPO_ROOT / ".cbx_state", override)

"""Settings read from environment variables, each read and validated in one place.

Why: a bad value must stop what it configures with a message that names the variable
and what it accepts. Left to the libraries, `nan` minutes silently disabled idle unload,
and a bad port made Voila drop the whole configuration file (and with it the upload cap
and kernel culling).

Layer 1: standard library only (the Voila configuration file imports it too).
"""
from __future__ import annotations

import math
import os

from .errors import InvalidSetting
from .options import MAX_BATCH

IDLE_UNLOAD_MINUTES_ENV = "CBX_IDLE_UNLOAD_MINUTES"
KERNEL_CULL_MINUTES_ENV = "CBX_KERNEL_CULL_MINUTES"
MAX_KERNELS_ENV = "CBX_MAX_KERNELS"
PORT_ENV = "CBX_PORT"
BATCH_ENV = "CBX_BATCH"
DEFAULT_IDLE_UNLOAD_MINUTES = 15.0
DEFAULT_KERNEL_CULL_MINUTES = 60.0
DEFAULT_MAX_KERNELS = 4
DEFAULT_PORT = 8866


def minutes(name: str, default: float, zero_means: str) -> float:
    """A finite, non-negative number of minutes from `name` (unset or empty: `default`)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InvalidSetting(
            f"{name}={raw!r} is not a number of minutes.",
            f"Set {name} to a number of minutes such as {default:g}, or 0 to "
            f"{zero_means}; or unset it for the default ({default:g}).")
    return value


def idle_unload_minutes() -> float:
    """Minutes without use after which a kernel unloads its model (0: never)."""
    return minutes(IDLE_UNLOAD_MINUTES_ENV, DEFAULT_IDLE_UNLOAD_MINUTES,
                   "never unload on idle")


def kernel_cull_minutes() -> float:
    """Minutes after which Voila shuts down a kernel no browser is connected to (0: never)."""
    return minutes(KERNEL_CULL_MINUTES_ENV, DEFAULT_KERNEL_CULL_MINUTES,
                   "never shut idle kernels down")


def port() -> int:
    """The dashboard's port, 1-65535."""
    raw = os.environ.get(PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_PORT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 65535:
        raise InvalidSetting(f"{PORT_ENV}={raw!r} is not a port number.",
                             f"Set {PORT_ENV} to a whole number from 1 to 65535 such as "
                             f"{DEFAULT_PORT}, or unset it.")
    return int(raw)


def max_kernels() -> int:
    """How many dashboard kernels may live at once (at least 1). Why a cap: every page
    load starts a kernel of several hundred MiB that lives until the idle cull, so
    without one a page that reloads in a loop exhausts the machine's memory."""
    raw = os.environ.get(MAX_KERNELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_KERNELS
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise InvalidSetting(f"{MAX_KERNELS_ENV}={raw!r} is not a number of kernels.",
                             f"Set {MAX_KERNELS_ENV} to a whole number of 1 or more such "
                             f"as {DEFAULT_MAX_KERNELS} (one per open dashboard tab), or "
                             f"unset it.")
    return int(raw)


def batch_size() -> int | str:
    """How many chunks to decode together when a call does not say: 'auto' unless
    CBX_BATCH names a number (1 keeps the sequential path everywhere)."""
    raw = os.environ.get(BATCH_ENV, "").strip().lower()
    if not raw or raw == "auto":
        return "auto"
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_BATCH:
        raise InvalidSetting(f"{BATCH_ENV}={raw!r} is not a number of chunks.",
                             f"Set {BATCH_ENV} to a whole number from 1 to {MAX_BATCH} (1: one chunk "
                             "at a time), or 'auto', or unset it.")
    return int(raw)


def server_problems() -> list[InvalidSetting]:
    """Every bad value among the settings the dashboard's server reads."""
    problems = []
    for read in (port, kernel_cull_minutes, idle_unload_minutes, max_kernels):
        try:
            read()
        except InvalidSetting as exc:
            problems.append(exc)
    return problems

"""Checks for values a caller hands to cbx (keyword arguments, widget values), each
turning a wrong type or value into `invalid_setting` naming the setting and what it
accepts, instead of a raw TypeError, ValueError or OverflowError deep inside.

Layer 1: standard library only.
"""
from __future__ import annotations

import math
import numbers
import re

from .errors import InvalidSetting

SEED_LIMIT = 2**32
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def choice(name: str, value, allowed) -> str:
    """`value` must be one of the strings in `allowed`."""
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise InvalidSetting(f"{name}={value!r} is not one of the allowed values.",
                             f"Use one of: {', '.join(allowed)}.")
    return value


def number(name: str, value, low: float, high: float) -> float:
    """`value` must be a real number (not text, not a bool) from `low` to `high`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(float(value)) or not low <= float(value) <= high:
        raise InvalidSetting(f"{name}={value!r} is not a number from {low:g} to {high:g}.",
                             f"Choose {name} between {low:g} and {high:g}.")
    return float(value)


def seed(value) -> int | None:
    """None (a random seed) or a whole number from 0 to 2**32 - 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or \
            not 0 <= int(value) < SEED_LIMIT:
        raise InvalidSetting(f"seed={value!r} is not a whole number from 0 to "
                             f"{SEED_LIMIT - 1}.",
                             "Pass a whole number such as 42, or None for a random seed.")
    return int(value)


def device(value) -> str:
    """'auto', 'cpu', 'mps', 'cuda' or 'cuda:N' (any case, surrounding spaces allowed)."""
    text = value.strip().lower() if isinstance(value, str) else None
    if text is None or not DEVICE_PATTERN.match(text):
        raise InvalidSetting(f"device={value!r} is not a device name.",
                             "Use 'auto', 'cpu', 'cuda' (or 'cuda:0', 'cuda:1', ...) or "
                             "'mps'.")
    return text


MAX_BATCH = 64


def batch_size(value) -> int | str:
    """'auto' or a whole number of chunks from 1 to MAX_BATCH to decode together."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or \
            not 1 <= int(value) <= MAX_BATCH:
        raise InvalidSetting(f"batch_size={value!r} is not 'auto' or a whole number from 1 "
                             f"to {MAX_BATCH}.",
                             "Use batch_size='auto' (the default), 1 for one chunk at a "
                             "time, or a number such as 8.")
    return int(value)

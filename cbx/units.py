"""Sizes written for people, the same way everywhere: the page, setup_env.py's summary
and cleanup.py's table. Binary units, as the sizes Windows' Explorer shows.

Layer 1: standard library only (the two scripts import it on a bare interpreter).
"""
from __future__ import annotations


def format_bytes(n: float | None) -> str:
    """'3.02 GiB', '512.0 MiB', '12.3 KiB', '17 B'; None (not measured) is '?'."""
    if n is None:
        return "?"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GiB" else f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"

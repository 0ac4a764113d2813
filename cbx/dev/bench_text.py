"""How long splitting takes as text grows: `python -m cbx.dev.bench_text`.

Why: the dashboard counts chunks as the user types or pastes, and speak() splits every
text before it starts, so splitting must stay linear in the text's length (a million
characters, about a novel, in well under a second). Printed as figures, not asserted
in tests, because timings on shared machines are noisy.
"""
from __future__ import annotations

import argparse
import json
import time

from ..text import split_text

SHAPES = {
    "short sentences ('Hi. ')": "Hi. ",
    "prose": "The old miller, Mr. Brown, opened the gates at 6 a.m. and waited. ",
    "one unpunctuated run of words": "word ",
    "one word without spaces": "x",
}


def time_split(text: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        split_text(text)
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbx.dev.bench_text", description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000",
                        help="comma-separated text lengths in characters")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    figures = {}
    print(f"{'text shape':<34}" + "".join(f"{size:>12,}" for size in sizes) + "  chars")
    for label, unit in SHAPES.items():
        row = {size: time_split((unit * (size // len(unit) + 1))[:size]) for size in sizes}
        figures[label] = row
        print(f"{label:<34}" + "".join(f"{row[size]:>11.3f}s" for size in sizes))
    print(json.dumps({label: {str(k): v for k, v in row.items()}
                      for label, row in figures.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

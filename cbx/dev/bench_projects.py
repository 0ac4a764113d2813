"""How long-form projects scale with a book: `python -m cbx.dev.bench_projects`.

Prints, on this machine, the time of each step issue 20 sets a target for:
- a 20 MB text file made into a project (read, split, checked, stored);
- status() and overview() of a 20,000-chunk project whose chunks are all made;
- cbx.projects() over 50 projects, one of them that big;
- one chunk's bookkeeping inside run() at 20,000 chunks (the store's reads and the
  row's commit), with the take's fsynced write and the babble guard beside it.

The model is replaced by a tone of the chunk's length, so the figures are the project
machinery's alone. To reach 20,000 made chunks in seconds, all but the last --made
chunks get their takes in one bulk transaction first (set-up, not measured). Everything is written to a temporary output
folder (or --dir). Timings on a shared or busy machine vary; run it twice.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex "
         "and judge every box of old letters near the river at dawn").split()


def book_text(size_bytes: int, seed: int = 1) -> str:
    """Paragraphs of sentences of English words, just under `size_bytes` long."""
    rng = random.Random(seed)
    paragraphs, size = [], 0
    while True:
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 20)))
                     .capitalize() + rng.choice(".!?") for _ in range(rng.randint(2, 8))]
        paragraph = " ".join(sentences)
        if size + len(paragraph) + 2 > size_bytes:
            return "\n\n".join(paragraphs)
        paragraphs.append(paragraph)
        size += len(paragraph) + 2


def _install_tone_speak(timings: list) -> None:
    """cbx.engine.synth.speak -> a tone as long as the text predicts; its time is recorded
    so it can be taken out of the bookkeeping figure."""
    import numpy as np

    from ..engine import synth
    from ..engine.synth import Result
    from ..text import estimate_seconds

    cache: dict = {}

    def speak(text, voice=None, *, seed, progress=None, cancel=None, **options):
        started = time.perf_counter()
        seconds = round(max(0.3, estimate_seconds(text)), 1)
        if seconds not in cache:
            t = np.arange(int(seconds * 24_000)) / 24_000
            cache[seconds] = (0.2 * np.sin(2 * np.pi * 140 * t)).astype(np.float32)
        wav = cache[seconds].copy()
        wav[:4] = np.frombuffer(seed.to_bytes(8, "little"), np.int16) / 32768  # unique
        result = Result(wav=wav, sample_rate=24_000, text=text, voice="tone",
                        variant="original", seed=seed, settings={}, chunks=[text],
                        timings={}, device="cpu", dtype="float32")
        timings.append(time.perf_counter() - started)
        return result

    synth.speak = speak


def _timed(fn, repeat: int = 1):
    """(median seconds, last result) of `repeat` calls."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


class _Stopwatch:
    """Seconds spent inside wrapped functions, to split run()'s time into its parts."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, owner, name: str, label: str) -> None:
        real = getattr(owner, name)

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + \
                    time.perf_counter() - started

        setattr(owner, name, timed)


def _fill(job, upto: int) -> None:
    """Mark chunks [0, upto) made, quickly: the bench's set-up, not what it measures.
    Each gets a real take file and row (written without fsync, in one transaction)."""
    import hashlib

    from ..longform.store import Store, take_file
    from ..audio import encode_wav
    from ..text import estimate_seconds
    import numpy as np

    rows = job.overview(0, upto)
    take_file(job.folder, "x").parent.mkdir(exist_ok=True)
    with job._store.transaction() as db:
        for row in rows:
            wav = np.full(int(estimate_seconds(row["text"]) * 24_000),
                          (row["index"] + 1) / 32767, np.float32)     # unique audio
            data = encode_wav(wav, 24_000)
            sha = hashlib.sha256(data).hexdigest()
            path = take_file(job.folder, f"{sha}.wav")
            path.write_bytes(data)
            stat = path.stat()
            Store.add_take(db, {
                "idx": row["index"], "text": row["text"], "seed": row["seed"],
                "seed_used": row["seed"], "file": path.name, "sha256": sha,
                "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sample_rate": 24_000,
                "channels": 1, "samples": len(wav), "duration": len(wav) / 24_000,
                "flags": [], "record": {"attempts": [], "variant": "original",
                                        "device": "cpu", "dtype": "float32"}})


def run(chunks: int, made: int, text_mb: float, small_projects: int) -> list:
    import cbx
    from .. import files
    from ..longform import guard

    rows = []
    book = Path(os.environ["CBX_OUTPUT_DIR"]) / "book.txt"
    book.parent.mkdir(parents=True, exist_ok=True)
    book.write_text(book_text(int(text_mb * 1024 * 1024)), encoding="utf-8")
    seconds, job = _timed(lambda: cbx.project("book", text=book, seed=1))
    total = job.status()["chunks"]
    rows.append((f"{text_mb:g} MB text -> project ({total:,} chunks)", f"{seconds:.2f} s",
                 "<= 10 s"))

    speak_times: list = []
    _install_tone_speak(speak_times)
    sentence = "This sentence is one chunk of a long book, about eighty characters long."
    big = cbx.project("big", text=" ".join([sentence] * chunks), seed=1,
                      max_chunk_chars=len(sentence) + 1)
    _fill(big, chunks - made)
    watch = _Stopwatch()
    watch.wrap(files, "write_atomic", "write")
    watch.wrap(guard, "check", "guard")
    watch.wrap(guard, "trim_tail", "guard")
    watch.wrap(type(big), "_rows", "start")
    started = time.perf_counter()
    big.run()
    elapsed = time.perf_counter() - started
    parts = watch.seconds
    store = elapsed - sum(speak_times) - parts["write"] - parts["guard"] - parts["start"]
    rows.append((f"run() starting at {chunks:,} chunks: every take and record checked, "
                 "once a run", f"{parts['start']:.3f} s", ""))
    rows.append((f"one chunk's bookkeeping in run() at {chunks:,} chunks: WAV encoding, "
                 f"store reads and commit (mean of the last {made})",
                 f"{store / made * 1000:.2f} ms", "<= 5 ms"))
    rows.append(("  + its take's WAV written and fsynced", 
                 f"{parts['write'] / made * 1000:.2f} ms", ""))
    rows.append(("  + the babble guard on its audio (about 5 s)",
                 f"{parts['guard'] / made * 1000:.2f} ms", ""))
    seconds, status = _timed(big.status, repeat=5)
    assert status["done"] == chunks, status
    rows.append((f"status() at {chunks:,} chunks, all made", f"{seconds:.3f} s", "<= 0.2 s"))
    seconds, _page = _timed(lambda: big.overview(chunks // 2, chunks // 2 + 50), repeat=5)
    rows.append((f"overview() of a 50-row page at {chunks:,} chunks", f"{seconds:.3f} s",
                 "<= 0.2 s"))
    seconds, _all = _timed(big.overview, repeat=3)
    rows.append((f"overview() of all {chunks:,} chunks", f"{seconds:.3f} s", "<= 0.2 s"))

    for n in range(small_projects - 2):
        cbx.project(f"chapter {n + 1}", text=" ".join([sentence] * 10), seed=n,
                    max_chunk_chars=len(sentence) + 1)
    seconds, listed = _timed(cbx.projects, repeat=5)
    rows.append((f"cbx.projects() with {len(listed)} projects ({total:,} and {chunks:,} "
                 "chunks among them)", f"{seconds:.3f} s", "<= 0.5 s"))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbx.dev.bench_projects",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=20_000,
                        help="chunks of the made project (default 20000)")
    parser.add_argument("--made", type=int, default=200,
                        help="chunks that run() makes at the end, for the bookkeeping "
                             "figure (the rest are filled in quickly; default 200)")
    parser.add_argument("--text-mb", type=float, default=20.0,
                        help="size of the text file made into a project (default 20)")
    parser.add_argument("--projects", type=int, default=50,
                        help="projects listed by cbx.projects() (default 50)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="output folder to work in (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cbx-bench-projects-") as tmp:
        folder = args.dir or Path(tmp)
        os.environ["CBX_OUTPUT_DIR"] = str(folder / "outputs")
        os.environ["CBX_VOICE_DIR"] = str(folder / "voices")
        rows = run(args.chunks, args.made, args.text_mb, args.projects)
    width = max(len(r[0]) for r in rows)
    print(f"{'step'.ljust(width)}  {'time':>10}  target")
    for step, value, target in rows:
        print(f"{step.ljust(width)}  {value:>10}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Every GPU figure README reports, in one command: `python -m cbx.dev.gpu_figures`.

Why one script: a lent GPU comes for minutes, so what it must measure is decided here,
before the lease, and run once: the token loop against upstream's with the load,
unload and VRAM figures (bench_decode --with-bench), batched decoding with the
16-chunk project and the CUDA-graph self-check's verdict (bench_batch), and S3Gen one
chunk against several per call (bench_batch --s3gen). Each runs as its own process (a
failure or an out-of-memory in one leaves the others' figures), its output kept in
`--out`, and a summary of which ran is printed last.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

STEPS = {
    "decode": ["cbx.dev.bench_decode", "--with-bench"],
    "batch": ["cbx.dev.bench_batch"],
    "s3gen": ["cbx.dev.bench_batch", "--s3gen", "--sizes", "4", "16", "--repeats", "1"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbx.dev.gpu_figures",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model-dir", default=None, help="real weights (default: fixture)")
    parser.add_argument("--out", type=Path, default=Path("gpu_figures"),
                        help="folder for each step's output (default: gpu_figures/)")
    parser.add_argument("--only", nargs="+", choices=list(STEPS), default=list(STEPS))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = []
    for name in args.only:
        command = [sys.executable, "-m", *STEPS[name], "--device", args.device]
        if args.model_dir:
            command += ["--model-dir", args.model_dir]
        started = time.perf_counter()
        with open(args.out / f"{name}.txt", "w", encoding="utf-8") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        summary.append(f"{name:>7}: exit {code} in {time.perf_counter() - started:.0f} s, "
                       f"output in {args.out / (name + '.txt')}")
        print(summary[-1], flush=True)
    print("\n".join(["", "GPU figures:", *summary]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

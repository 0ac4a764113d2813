"""Batched decoding against one chunk at a time, in one run: `python -m cbx.dev.bench_batch`.

Why it exists: batching is worth its complexity only if a project is made faster, so
this measures, alternating the sizes within every repeat so drift hits all alike:

* T3 alone, for B = 1 (the sequential path) and each batch size: speech tokens per
  second over the project's chunks, decoded in groups of B;
* for B = 1 and the size with the best T3, the whole project (`cbx.speak_chunks` in
  groups of B: T3, S3Gen and the watermark): seconds of audio per second of wall time,
  and peak resident memory (peak VRAM on CUDA); and the time to first audio of a
  multi-chunk `speak()` (its first chunk is always decoded alone, so batching must not
  delay it);
* with ``--s3gen`` instead, S3Gen and the vocoder alone: one chunk per call against
  several chunks per call.

Without ``--model-dir`` it uses the random-weight fixture that never stops by itself and
caps each chunk at ``--fixture-length`` speech tokens per text token (1.7 is what a real
English voice makes), so the work grows with the text as with real weights. The last
line of output is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time

from .bench import E2E_SENTENCES, NEVER_STOPS, _fixture_root, describe_machine

SEED = 1234


@contextlib.contextmanager
def _peak_memory(device: str):
    """Peak resident memory (MiB) of this process during the block, sampled every 20 ms;
    on CUDA the allocator's peak."""
    import psutil
    import torch

    peak = {"mb": 0.0}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        yield peak
        peak["mb"] = torch.cuda.max_memory_allocated() / 2**20
        return
    process, done = psutil.Process(), threading.Event()

    def sample():
        while not done.wait(0.02):
            peak["mb"] = max(peak["mb"], process.memory_info().rss / 2**20)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        done.set()
        thread.join()


def _texts(count: int) -> list[str]:
    return [E2E_SENTENCES[i % len(E2E_SENTENCES)] for i in range(count)]


def _t3_tokens_per_second(tts, texts: list[str], size: int) -> float:
    """T3 alone over `texts` in groups of `size` (1: the sequential loop)."""
    import torch

    from ..engine import batch, decode, synth

    kwargs = synth._upstream_kwargs("original", synth._check_settings("original", {})[0],
                                    None)
    rows = [batch.Row(batch.capture(tts, text, kwargs), decode.token_budget(text),
                      SEED + i) for i, text in enumerate(texts)]
    decoder = decode.decoder_of(tts)
    tokens, started = 0, time.perf_counter()
    for start in range(0, len(rows), size):
        group = rows[start:start + size]
        if size == 1:
            torch.manual_seed(group[0].seed)
            with decoder.chunk(group[0].budget):
                tokens += decoder.inference(**group[0].kwargs).shape[-1]
        else:
            tokens += sum(r.tokens.shape[-1] for r in batch.decode_rows(decoder, group))
    return tokens / (time.perf_counter() - started)


def _project(texts: list[str], size: int, device: str) -> dict:
    from ..engine.synth import speak_chunks

    started = time.perf_counter()
    with _peak_memory(device) as peak:
        results = []
        for start in range(0, len(texts), size):
            group = texts[start:start + size]
            results += speak_chunks(group, seeds=[SEED + start + i for i in range(len(group))],
                                    batch_size=size)
    wall = time.perf_counter() - started
    audio = sum(r.duration for r in results)
    return {"audio_per_wall": audio / wall, "wall_s": wall, "audio_s": audio,
            "peak_mb": peak["mb"]}


def _first_audio(texts: list[str], size: int) -> float:
    """Seconds from a multi-chunk speak() call to its first chunk's audio; the call is
    cancelled there (the rest would only cost time)."""
    import cbx
    from ..errors import GenerationCancelled

    started, first, cancel = time.perf_counter(), {}, cbx.CancelToken()

    def on_chunk(index, *_):
        first.setdefault("s", time.perf_counter() - started)
        cancel.cancel()

    try:
        cbx.speak(" ".join(texts[:4]), seed=SEED, max_chunk_chars=80,
                  first_chunk_chars=None, on_chunk=on_chunk, batch_size=size,
                  cancel=cancel)
    except GenerationCancelled:     # what on_chunk asked for, after the first audio
        return first["s"]
    raise RuntimeError("speak() ended without the cancel after its first chunk: the "
                       "text made one chunk")


def _speech_tokens(tts, texts: list[str]) -> list:
    """Each text's speech tokens as generate() hands them to S3Gen (decoded together)."""
    from chatterbox.models.s3tokenizer import drop_invalid_tokens

    from ..engine import batch, decode, synth

    kwargs = synth._upstream_kwargs("original", synth._check_settings("original", {})[0],
                                    None)
    rows = [batch.Row(batch.capture(tts, text, kwargs), decode.token_budget(text),
                      SEED + i) for i, text in enumerate(texts)]
    tokens = []
    for row in batch.decode_rows(decode.decoder_of(tts), rows):
        kept = drop_invalid_tokens(row.tokens[0])
        tokens.append(kept[kept < 6561])
    return tokens


def _s3gen_seconds(tts, tokens: list, size: int) -> float:
    """Wall seconds of S3Gen and HiFT over every chunk's tokens: one chunk per call as
    generate() does (size 1), or `size` chunks per call, right-padded with per-row
    lengths (the flow masks the padding; each row's audio is its own first samples)."""
    import torch

    s3gen, ref = tts.s3gen, tts.conds.gen
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(tokens), size):
            group = tokens[start:start + size]
            if size == 1:
                s3gen.inference(speech_tokens=group[0], ref_dict=ref)
                continue
            lengths = torch.tensor([len(t) for t in group], device=s3gen.device)
            padded = torch.zeros(len(group), int(lengths.max()), dtype=torch.long,
                                 device=s3gen.device)
            for i, row in enumerate(group):
                padded[i, :len(row)] = row
            mels = s3gen.flow_inference(padded, speech_token_lens=lengths, ref_dict=ref,
                                        finalize=True)
            s3gen.hift_inference(mels.to(s3gen.dtype))
    return time.perf_counter() - started


def run_s3gen(args, tts) -> dict:
    """S3Gen both ways: seconds of audio per wall second at each size, alternating."""
    from ..engine.decode import TOKENS_PER_SECOND

    tokens = _speech_tokens(tts, _texts(args.chunks))
    audio = sum(len(t) for t in tokens) / TOKENS_PER_SECOND
    sizes = [1] + [b for b in args.sizes if b > 1]
    walls = {size: [] for size in sizes}
    _s3gen_seconds(tts, tokens[:2], 2)                     # warm-up, not counted
    for rep in range(args.repeats):
        for size in sizes if rep % 2 == 0 else sizes[::-1]:
            print(f"[{rep + 1}/{args.repeats}] S3Gen B={size} ...", file=sys.stderr,
                  flush=True)
            walls[size].append(_s3gen_seconds(tts, tokens, size))
    medians = {size: audio / statistics.median(w) for size, w in walls.items()}
    return {"audio_s": audio, "s3gen_audio_per_wall": medians,
            "s3gen_speedup_best": max(medians.values()) / medians[1]}


def _load(args):
    """The model the bench measures; on the fixture, token budgets as real speech ends."""
    import cbx
    from ..engine import decode
    from ..engine.manager import get_manager

    if args.model_dir:
        os.environ["CBX_MODEL_DIR"] = args.model_dir
    else:
        os.environ["CBX_MODEL_DIR"] = str(_fixture_root("original", NEVER_STOPS))
    cbx.load("original", device=args.device, dtype=args.dtype)
    tts = get_manager().loaded.tts
    if not args.model_dir:       # the fixture never stops: cap it as real speech would end
        def capped(text, rate=args.fixture_length):
            return max(2, round(rate * tts.tokenizer.text_to_tokens(text).shape[-1]))
        decode.token_budget = capped
    return tts


def run(args) -> dict:
    """T3 at every size, then the whole project and the first audio at sequential and
    at T3's best size (a project of 16 chunks costs minutes a pass on a CPU, so those
    two sizes are what the targets compare)."""
    from ..engine import decode

    tts = _load(args)
    texts = _texts(args.chunks)
    sizes = [1] + [b for b in args.sizes if b > 1]
    t3 = {size: [] for size in sizes}
    _first_audio(texts, 1)                                 # warm-up, not counted
    for rep in range(args.repeats):
        for size in sizes if rep % 2 == 0 else sizes[::-1]:
            print(f"[T3 {rep + 1}/{args.repeats}] B={size} ...", file=sys.stderr,
                  flush=True)
            t3[size].append(_t3_tokens_per_second(tts, texts, size))
    medians = {size: {"t3_tokens_per_s": statistics.median(values)}
               for size, values in t3.items()}
    best = max(sizes, key=lambda s: medians[s]["t3_tokens_per_s"])
    whole = {size: {"audio_per_wall": [], "peak_mb": [], "first_audio_s": []}
             for size in dict.fromkeys([1, best])}
    for rep in range(args.project_repeats):
        for size in list(whole) if rep % 2 == 0 else list(whole)[::-1]:
            print(f"[project {rep + 1}/{args.project_repeats}] B={size} ...",
                  file=sys.stderr, flush=True)
            project = _project(texts, size, args.device)
            whole[size]["audio_per_wall"].append(project["audio_per_wall"])
            whole[size]["peak_mb"].append(project["peak_mb"])
            whole[size]["first_audio_s"].append(_first_audio(texts, size))
    for size, row in whole.items():
        medians[size].update({key: statistics.median(v) for key, v in row.items()})
    base = medians[1]
    return {"machine": describe_machine(args.device), "device": args.device,
            "token_loop": decode.loop_status(),     # the CUDA-graph self-check's verdict
            "dtype": args.dtype, "chunks": args.chunks, "repeats": args.repeats,
            "project_repeats": args.project_repeats,
            "fixture_length": None if args.model_dir else args.fixture_length,
            "medians": medians, "best_t3_batch": best,
            "t3_speedup_best": medians[best]["t3_tokens_per_s"] / base["t3_tokens_per_s"],
            "project_speedup_best": medians[best]["audio_per_wall"]
            / base["audio_per_wall"],
            "first_audio_ratio": medians[best]["first_audio_s"] / base["first_audio_s"]}


def format_table(summary: dict) -> str:
    lines = [f"{'B':>3} {'T3 tok/s':>9} {'x seq':>6} {'audio s/wall s':>15} {'x seq':>6} "
             f"{'peak MiB':>9} {'first audio s':>14}"]
    base = summary["medians"][1]
    for size, m in summary["medians"].items():
        line = (f"{size:>3} {m['t3_tokens_per_s']:>9.1f} "
                f"{m['t3_tokens_per_s'] / base['t3_tokens_per_s']:>6.2f}")
        if "audio_per_wall" in m:
            line += (f" {m['audio_per_wall']:>15.3f} "
                     f"{m['audio_per_wall'] / base['audio_per_wall']:>6.2f} "
                     f"{m['peak_mb']:>9.0f} {m['first_audio_s']:>14.1f}")
        lines.append(line)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cbx.dev.bench_batch",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", default=None, help="real weights (default: fixture)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=2, help="T3 passes per size")
    parser.add_argument("--project-repeats", type=int, default=1,
                        help="whole-project passes at sequential and the best size")
    parser.add_argument("--s3gen", action="store_true",
                        help="only S3Gen and the vocoder, one chunk per call against "
                             "several chunks per call")
    parser.add_argument("--fixture-length", type=float, default=1.7, metavar="R")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.s3gen:
        summary = run_s3gen(args, _load(args))
        print("\n".join(f"S3Gen B={size:>2}: {speed:.3f} s of audio per wall second"
                        for size, speed in summary["s3gen_audio_per_wall"].items()))
    else:
        summary = run(args)
        print(format_table(summary))
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

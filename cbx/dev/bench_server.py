"""`python -m cbx.dev.bench_server`: the speech server as clients see it. Time to first
byte (p50, p95) and requests per minute with 1, 4 and 8 clients at once, each asking
for one sentence as streamed PCM through the official `openai` client.

Each level runs twice: with requests one at a time (CBX_BATCH=1: each alone, streamed
as it is made) and as the server runs by default (requests that wait together are made
as one batch, each whole). Without --model-dir it runs the random-weight checkpoint (8
speech tokens a chunk), which measures the server and S3Gen rather than a real voice's
length: batching speeds T3 up, and there T3 is a small share.
"""
from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import fixture
from .speechserver import SpeechServer

TEXT = "Hello there, this is the speech server."


def one_request(client) -> tuple[float, float]:
    """(time to first byte, total seconds) of one streamed request."""
    started = time.perf_counter()
    first = None
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=TEXT, response_format="pcm") as answer:
        for _piece in answer.iter_bytes():
            first = first if first is not None else time.perf_counter() - started
    return first, time.perf_counter() - started


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def run_level(client, clients: int, rounds: int) -> dict:
    requests = clients * rounds
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _i: one_request(client), range(requests)))
    wall = time.perf_counter() - started
    firsts = [first for first, _total in results]
    return {"clients": clients, "requests": requests,
            "ttfb_p50": statistics.median(firsts), "ttfb_p95": percentile(firsts, 0.95),
            "per_minute": requests / wall * 60}


def main(argv=None) -> int:
    import openai

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="real weights (default: the random-weight "
                                            "checkpoint)")
    parser.add_argument("--clients", default="1,4,8", help="concurrency levels")
    parser.add_argument("--rounds", type=int, default=1,
                        help="requests per client at each level")
    args = parser.parse_args(argv)
    model_dir = Path(args.model_dir) if args.model_dir else \
        fixture.cached_checkpoint_root(("original",))
    key = secrets.token_hex(16)
    print(f"{'mode':>14} {'clients':>7} {'requests':>8} {'TTFB p50':>9} {'TTFB p95':>9} "
          f"{'req/min':>8}")
    for mode, env in (("one at a time", {"CBX_BATCH": "1"}), ("batched", {})):
        with tempfile.TemporaryDirectory() as work:
            server = SpeechServer(model_dir, Path(work), "bench",
                                  env={"CBX_API_KEY": key, **env})
            try:
                client = openai.OpenAI(base_url=server.base_url, api_key=key,
                                       max_retries=0, timeout=3600)
                one_request(client)                  # loads the model: not counted
                for level in (int(n) for n in args.clients.split(",")):
                    row = run_level(client, level, args.rounds)
                    print(f"{mode:>14} {row['clients']:>7} {row['requests']:>8} "
                          f"{row['ttfb_p50']:>8.1f}s {row['ttfb_p95']:>8.1f}s "
                          f"{row['per_minute']:>8.2f}", flush=True)
            finally:
                server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

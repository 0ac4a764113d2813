"""Check and time cbx's T3 token loop against upstream's, in one process:
`python -m cbx.dev.bench_decode --device cuda`.

Why: the fast loop (cbx/engine/decode.py) promises upstream's tokens.  In float32 on a CPU
the tests show they are identical; in half precision on a GPU kernels differ (a static
cache, CUDA graphs, the last-position head), so the promise becomes "the same logits
within 1e-2 under teacher forcing", and this script measures it:

1. **Teacher forcing.**  One token sequence (the fast loop's own, ``--steps`` long) is
   fed to both loops' transformer step by step: upstream's (a growing ``DynamicCache``,
   the head on every position, as ``T3.inference`` drives it) and cbx's (static cache,
   mask, CUDA graph on CUDA).  It reports the largest absolute logit difference.
2. **Free-running agreement.**  Both loops sample ``--steps`` tokens from the same seed;
   it reports the fraction of positions with the same token, up to the first
   difference and overall.
3. **Speed.**  Decode tokens/s of each loop over those steps, and the graph capture
   time (CUDA).

It runs on the never-stopping random-weight fixture (or ``--model-dir``) for every
``--dtypes`` value; the last line is one JSON object.  The end-to-end figures (time to
first audio, VRAM) come from ``python -m cbx.dev.bench``; ``--with-bench`` runs it too, for
each dtype, so one command gives every GPU figure the README reports.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from .bench import NEVER_STOPS, describe_machine
from ..settings import DTYPES

RESULT_MARKER = "CBX_DECODE_RESULT "
TEXT = "The morning train was late again, so Maria walked along the river instead."
LOGIT_TOLERANCE = 1e-2


def _load(model_dir, device: str, dtype: str):
    from ..engine.manager import _load_upstream
    from ..variants import get_variant

    if model_dir is None:
        from .fixture import cached_checkpoint_root

        model_dir = cached_checkpoint_root(("original",), stop_after=NEVER_STOPS)
    from pathlib import Path

    return _load_upstream(get_variant("original"), Path(model_dir) / "original", device,
                          dtype)


def _prompt(tts):
    """T3's inputs for TEXT with the built-in voice, as ChatterboxTTS.generate makes them."""
    import torch
    import torch.nn.functional as F
    from chatterbox.tts import punc_norm

    t3 = tts.t3
    tokens = tts.tokenizer.text_to_tokens(punc_norm(TEXT)).to(tts.device)
    tokens = torch.cat([tokens, tokens], dim=0)
    tokens = F.pad(F.pad(tokens, (1, 0), value=t3.hp.start_text_token), (0, 1),
                   value=t3.hp.stop_text_token)
    return dict(t3_cond=tts.conds.t3, text_tokens=tokens, temperature=0.8, cfg_weight=0.5,
                repetition_penalty=1.2, min_p=0.05, top_p=1.0)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _free_run(tts, decoder, kwargs: dict, steps: int, seed: int, device: str):
    """(tokens, decode tokens/s) of one loop sampling `steps` tokens from `seed`."""
    import torch

    torch.manual_seed(seed)
    _sync(device)
    if decoder is None:
        calls = {"n": 0, "t": None}

        def first_forward_done(*_):
            calls["n"] += 1
            if calls["n"] == 1:
                _sync(device)
                calls["t"] = time.perf_counter()

        handle = tts.t3.tfmr.register_forward_hook(first_forward_done)
        try:
            with torch.inference_mode():
                out = type(tts.t3).inference(tts.t3, max_new_tokens=steps, **kwargs)
        finally:
            handle.remove()
        _sync(device)
        rate = (out.shape[-1] - 1) / (time.perf_counter() - calls["t"])
    else:
        with decoder.chunk(steps):
            out = decoder.inference(max_new_tokens=steps, **kwargs)
        rate = (decoder.last.tokens - 1) / decoder.last.decode_s
    return out[0].tolist(), rate


def _teacher_forced(tts, decoder, kwargs: dict, tokens: list[int], device: str):
    """Largest |logit difference| between upstream's way of running the transformer and
    cbx's step, fed the same tokens."""
    import torch
    from transformers import DynamicCache

    from ..engine.decode import _Step

    t3 = tts.t3
    hp = t3.hp
    text_tokens = kwargs["text_tokens"]
    start = hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
    with torch.inference_mode():
        embeds, _ = t3.prepare_input_embeds(t3_cond=kwargs["t3_cond"],
                                            text_tokens=text_tokens, speech_tokens=start,
                                            cfg_weight=kwargs["cfg_weight"])
        bos = torch.tensor([[hp.start_speech_token]], device=t3.device)
        bos_embed = t3.speech_emb(bos) + t3.speech_pos_emb.get_fixed_embedding(0)
        inputs = torch.cat([embeds, torch.cat([bos_embed, bos_embed])], dim=1)
        prompt_len = inputs.shape[1]
        step = _Step(t3, prompt_len + len(tokens) + 1, 2, inputs.dtype, t3.device,
                     graph=device.startswith("cuda"))
        cache = DynamicCache()
        theirs = t3.speech_head(t3.tfmr(inputs_embeds=inputs, past_key_values=cache,
                                        use_cache=True).last_hidden_state)[:, -1]
        ours = step.prefill(inputs)[:, -1]
        worst = float((theirs.float() - ours.float()).abs().max())
        for i, token in enumerate(tokens[:-1]):
            token = torch.tensor([[token]], device=t3.device)
            embed = t3.speech_emb(token) + t3.speech_pos_emb.get_fixed_embedding(i + 1)
            embed = torch.cat([embed, embed])
            theirs = t3.speech_head(t3.tfmr(inputs_embeds=embed, past_key_values=cache,
                                            use_cache=True).last_hidden_state)[:, -1]
            step.embeds.copy_(embed)
            step.position.fill_(prompt_len + i)
            ours = step.step()[:, -1]
            worst = max(worst, float((theirs.float() - ours.float()).abs().max()))
    return worst, step.capture_s


def check(model_dir, device: str, dtype: str, steps: int, seed: int,
          repeats: int) -> dict:
    import statistics

    from ..engine.decode import Decoder

    tts = _load(model_dir, device, dtype)
    kwargs = _prompt(tts)
    decoder = Decoder(tts.t3, fast=True)
    ours, _ = _free_run(tts, decoder, kwargs, steps, seed, device)   # captures graphs
    our_rates, their_rates = [], []
    for rep in range(repeats):          # alternating which loop goes first
        order = (decoder, None) if rep % 2 else (None, decoder)
        for which in order:
            tokens, rate = _free_run(tts, which, kwargs, steps, seed, device)
            if which is None:
                theirs = tokens
                their_rates.append(rate)
            else:
                ours_again = tokens
                our_rates.append(rate)
    our_rate, their_rate = statistics.median(our_rates), statistics.median(their_rates)
    same = [a == b for a, b in zip(ours_again, theirs)]
    prefix = next((i for i, s in enumerate(same) if not s), len(same))
    worst, capture_s = _teacher_forced(tts, decoder, kwargs, ours, device)
    return {"dtype": dtype, "steps": steps, "max_logit_diff": worst,
            "logits_within_tolerance": worst <= LOGIT_TOLERANCE,
            "same_token_fraction": sum(same) / len(same),
            "identical_prefix_tokens": prefix, "repeatable": ours == ours_again,
            "fast_tokens_per_s": our_rate, "upstream_tokens_per_s": their_rate,
            "speedup": our_rate / their_rate, "graph_capture_s": capture_s,
            "fast_rates": our_rates, "upstream_rates": their_rates}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbx.dev.bench_decode",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--dtypes", nargs="+", default=None, choices=DTYPES,
                        help="default: float32 on a CPU; float32 float16 bfloat16 on CUDA")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of each loop, alternating (medians reported)")
    parser.add_argument("--model-dir", default=None,
                        help="model root holding original/ (default: the never-stopping "
                             "random-weight fixture)")
    parser.add_argument("--with-bench", action="store_true",
                        help="also run python -m cbx.dev.bench (--fixture-length 1.7) for "
                             "each dtype")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        task = json.loads(args.worker)
        print(RESULT_MARKER + json.dumps(check(**task)), flush=True)
        return 0
    dtypes = args.dtypes or (["float32", "float16", "bfloat16"]
                             if args.device.startswith("cuda") else ["float32"])
    results = []
    for dtype in dtypes:      # one process per dtype: memory and graphs start clean
        task = {"model_dir": args.model_dir, "device": args.device, "dtype": dtype,
                "steps": args.steps, "seed": args.seed, "repeats": args.repeats}
        proc = subprocess.run([sys.executable, "-m", "cbx.dev.bench_decode", "--worker",
                               json.dumps(task)], capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_MARKER)]
        if not lines:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads(lines[-1][len(RESULT_MARKER):])
        results.append(result)
        print(f"{dtype:9} max |logit diff| {result['max_logit_diff']:.2e} "
              f"({'ok' if result['logits_within_tolerance'] else 'ABOVE'} {LOGIT_TOLERANCE})"
              f" | same tokens {result['same_token_fraction']:.1%} of {args.steps}, first "
              f"{result['identical_prefix_tokens']} identical | decode "
              f"{result['fast_tokens_per_s']:.1f} vs upstream "
              f"{result['upstream_tokens_per_s']:.1f} tokens/s = {result['speedup']:.2f}x"
              f" | graph capture {result['graph_capture_s']:.2f} s", flush=True)
        if args.with_bench:
            subprocess.run([sys.executable, "-m", "cbx.dev.bench", "--device", args.device,
                            "--dtype", dtype, "--fixture-length", "1.7", "--repeats", "1"]
                           + (["--model-dir", args.model_dir] if args.model_dir else []))
    print(json.dumps({"machine": describe_machine(args.device), "device": args.device,
                      "results": results}))
    return 0 if all(r["logits_within_tolerance"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

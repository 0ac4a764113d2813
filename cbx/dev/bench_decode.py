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

``int8`` (CPU only) is measured against float32 instead of upstream: both T3s (the
float32 one and the one ``dtype="int8"`` loads) decode ``--steps`` tokens with cbx's loop,
alternating, for tokens/s and their ratio (target: ``INT8_TARGET``); then float32's
tokens are fed to both for the largest logit difference and the share of positions
whose argmax (after CFG) agrees.

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
INT8_TARGET = 1.5              # int8 T3 decode speed over float32's (issue 23)


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


def forced_inputs(t3, kwargs: dict, tokens: list[int]):
    """T3's inputs for feeding `tokens` (teacher forcing): the prompt's embeddings up to
    the start-of-speech token, then each token's but the last, CFG's two rows alike, as
    ``T3.inference`` builds them."""
    import torch

    hp = t3.hp
    text_tokens = kwargs["text_tokens"]
    start = hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
    embeds, _ = t3.prepare_input_embeds(t3_cond=kwargs["t3_cond"], text_tokens=text_tokens,
                                        speech_tokens=start, cfg_weight=kwargs["cfg_weight"])
    bos = torch.tensor([[hp.start_speech_token]], device=t3.device)
    bos_embed = t3.speech_emb(bos) + t3.speech_pos_emb.get_fixed_embedding(0)
    steps = []
    for i, token in enumerate(tokens[:-1]):
        token = torch.tensor([[token]], device=t3.device)
        embed = t3.speech_emb(token) + t3.speech_pos_emb.get_fixed_embedding(i + 1)
        steps.append(torch.cat([embed, embed]))
    return torch.cat([embeds, torch.cat([bos_embed, bos_embed])], dim=1), steps


def upstream_logits(t3, prompt, steps):
    """Speech logits at each fed position, the transformer driven as upstream's loop
    drives it (a growing DynamicCache, the head on every position).  These generators
    run under the caller's ``torch.inference_mode()``."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for embeds in [prompt, *steps]:
        yield t3.speech_head(t3.tfmr(inputs_embeds=embeds, past_key_values=cache,
                                     use_cache=True).last_hidden_state)[:, -1]


def cbx_logits(t3, prompt, steps, graph: bool = False, capture: dict | None = None):
    """The same logits from cbx's step (static cache, mask, a CUDA graph when `graph`);
    `capture["s"]` gets the graph's capture time."""
    from ..engine.decode import _Step

    step = _Step(t3, prompt.shape[1] + len(steps) + 2, 2, prompt.dtype, t3.device,
                 graph=graph)
    yield step.prefill(prompt)[:, -1]
    for i, embeds in enumerate(steps):
        step.embeds.copy_(embeds)
        step.position.fill_(prompt.shape[1] + i)
        yield step.step()[:, -1]
    if capture is not None:
        capture["s"] = step.capture_s


def compare_logits(reference, other, cfg_weight: float) -> tuple[float, float]:
    """(largest |logit difference|, share of positions whose guided logits,
    cond + cfg_weight * (cond - uncond), have the same argmax) of two logit sequences."""
    worst, same, count = 0.0, 0, 0
    for ref, got in zip(reference, other, strict=True):
        ref, got = ref.float(), got.float()
        worst = max(worst, float((ref - got).abs().max()))
        guided = [row[0] + cfg_weight * (row[0] - row[1]) for row in (ref, got)]
        same += int(guided[0].argmax() == guided[1].argmax())
        count += 1
    return worst, same / count


def _teacher_forced(tts, kwargs: dict, tokens: list[int], device: str):
    """Largest |logit difference| between upstream's way of running the transformer and
    cbx's step, fed the same tokens; and the graph's capture time."""
    import torch

    capture = {"s": 0.0}
    with torch.inference_mode():
        prompt, steps = forced_inputs(tts.t3, kwargs, tokens)
        worst, _ = compare_logits(upstream_logits(tts.t3, prompt, steps),
                                  cbx_logits(tts.t3, prompt, steps,
                                             graph=device.startswith("cuda"),
                                             capture=capture),
                                  kwargs["cfg_weight"])
    return worst, capture["s"]


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
    worst, capture_s = _teacher_forced(tts, kwargs, ours, device)
    return {"dtype": dtype, "steps": steps, "max_logit_diff": worst,
            "logits_within_tolerance": worst <= LOGIT_TOLERANCE,
            "same_token_fraction": sum(same) / len(same),
            "identical_prefix_tokens": prefix, "repeatable": ours == ours_again,
            "fast_tokens_per_s": our_rate, "upstream_tokens_per_s": their_rate,
            "speedup": our_rate / their_rate, "graph_capture_s": capture_s,
            "fast_rates": our_rates, "upstream_rates": their_rates}


def check_int8(model_dir, device: str, steps: int, seed: int, repeats: int) -> dict:
    """dtype="int8" against float32, in one process: cbx's loop's decode tokens/s on
    each T3 (alternating which goes first); the same seed's sampled tokens; and, feeding
    float32's tokens to both, the largest logit difference and the share of positions
    whose guided argmax agrees."""
    import statistics

    import torch

    from .. import envcheck
    from ..engine.decode import Decoder

    envcheck.check_precision(device, "int8")
    tts = _load(model_dir, device, "float32")
    int8_t3 = _load(model_dir, device, "int8").t3      # its S3Gen and encoder are freed
    kwargs = _prompt(tts)
    decoders = {"float32": Decoder(tts.t3, fast=True), "int8": Decoder(int8_t3, fast=True)}
    tokens = {name: _free_run(tts, decoder, kwargs, steps, seed, device)[0]
              for name, decoder in decoders.items()}           # also the warm-up
    rates: dict = {name: [] for name in decoders}
    for rep in range(repeats):
        for name in (("int8", "float32") if rep % 2 else ("float32", "int8")):
            rates[name].append(_free_run(tts, decoders[name], kwargs, steps, seed,
                                         device)[1])
    with torch.inference_mode():
        prompt, fed = forced_inputs(tts.t3, kwargs, tokens["float32"])
        worst, agreement = compare_logits(cbx_logits(tts.t3, prompt, fed),
                                          cbx_logits(int8_t3, prompt, fed),
                                          kwargs["cfg_weight"])
    same = [a == b for a, b in zip(tokens["float32"], tokens["int8"])]
    int8_rate = statistics.median(rates["int8"])
    float_rate = statistics.median(rates["float32"])
    return {"dtype": "int8", "steps": steps, "max_logit_diff": worst,
            "argmax_agreement": agreement, "same_token_fraction": sum(same) / len(same),
            "int8_tokens_per_s": int8_rate, "float32_tokens_per_s": float_rate,
            "speedup": int8_rate / float_rate,
            "meets_target": int8_rate / float_rate >= INT8_TARGET,
            "int8_rates": rates["int8"], "float32_rates": rates["float32"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbx.dev.bench_decode",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--dtypes", nargs="+", default=None, choices=DTYPES,
                        help="default: float32 int8 on a CPU; float32 float16 bfloat16 on CUDA")
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
        result = check(**task) if task["dtype"] != "int8" else \
            check_int8(**{k: v for k, v in task.items() if k != "dtype"})
        print(RESULT_MARKER + json.dumps(result), flush=True)
        return 0
    dtypes = args.dtypes or (["float32", "float16", "bfloat16"]
                             if args.device.startswith("cuda") else ["float32", "int8"])
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
        if dtype == "int8":
            print(f"int8      T3 decode {result['int8_tokens_per_s']:.2f} vs float32 "
                  f"{result['float32_tokens_per_s']:.2f} tokens/s = {result['speedup']:.2f}x "
                  f"({'ok' if result['meets_target'] else 'BELOW'} >= {INT8_TARGET}x) | "
                  f"teacher-forced max |logit diff| {result['max_logit_diff']:.3f}, argmax "
                  f"agrees at {result['argmax_agreement']:.1%} of {args.steps} | same "
                  f"sampled tokens {result['same_token_fraction']:.1%}", flush=True)
            continue
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
    return 0 if all(r.get("logits_within_tolerance", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

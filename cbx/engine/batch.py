"""Batched T3 decoding: several chunks' token loops in one static cache, one step each.

Why: on a CPU one T3 step is bound by reading the weights, so B chunks per step cost
little more than one; on a GPU a single chunk leaves most of the chip idle. Each chunk
keeps what decides its own tokens: its own conditioning and text (upstream's
``prepare_input_embeds``), its own settings (temperature, cfg_weight, min_p, top_p,
repetition penalty, through the same transformers processors in the same order as
``decode``'s loops), its own token budget, and its own random generator seeded as
the sequential path seeds the global one, so a row draws what that chunk would draw
alone from the same probabilities.

How rows share a step: prompts are left-padded to one length (a multiple of
``PAD_MULTIPLE``, so a neighbour's text changes the padding only when it crosses one),
with an additive mask that gives a row's padding slots exactly zero weight and per-row
position ids, so a row's positions are those it has alone. Finished rows stay in the
batch (their outputs are ignored) until every row has stopped.

How a chunk gets its tokens: ``intercept(tts, handler)`` stands in front of the T3 call
of chatterbox's own ``generate()``. Called once with a handler that records the call's
arguments and stops (``capture``), it yields exactly upstream's inputs for the chunk; after
the batch, ``generate()`` runs again with a handler that hands back the decoded tokens
(``replay``), so conditioning, S3Gen and the watermark stay upstream's. With the global
generator put where the row's generator ended, S3Gen draws what it would have drawn after
the sequential loop: a batched chunk whose tokens agree gives the sequential audio.

The multilingual model's alignment analyzer reads one sequence's attention at every
step, so multilingual chunks are decoded one at a time (``supports``).

Layer 3 (model level, beside decode): torch and transformers are imported inside functions.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from . import decode

PAD_MULTIPLE = 16          # prompts are left-padded to a multiple of this many positions
# batch_size="auto": the most chunks per batch on each kind of device (measured with
# python -m cbx.dev.bench; README, Performance), fewer where free memory cannot hold
# their cache
AUTO_LIMIT = {"cpu": 8, "cuda": 16}
CACHE_SHARE = 0.5          # of the free memory, the most a batch's KV cache may take
WORST_PROMPT = 512         # positions: conditioning (about 150) plus a long chunk's text


def supports(tts) -> bool:
    """Whether this model's chunks can share a batch (not the multilingual model's)."""
    return not tts.t3.hp.is_multilingual


def auto_size(tts) -> int:
    """batch_size="auto" for this model: the device's measured best, capped so the
    KV cache of a batch of the longest chunks fits in CACHE_SHARE of free memory."""
    import torch

    t3, device = tts.t3, tts.t3.device
    limit = AUTO_LIMIT.get(device.type, 1)
    if limit == 1 or not supports(tts):
        return 1
    cfg = t3.cfg
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    kv_width = cfg.hidden_size // cfg.num_attention_heads * kv_heads
    element = next(t3.tfmr.parameters()).element_size()
    positions = WORST_PROMPT + decode.UPSTREAM_MAX_TOKENS
    per_chunk = (1 if t3.is_gpt else 2) * cfg.num_hidden_layers * 2 * kv_width \
        * element * positions
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device.index or 0)[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    return max(1, min(limit, int(free * CACHE_SHARE // per_chunk)))


@dataclass
class Row:
    """One chunk's T3 call: the keyword arguments upstream's generate() passed to
    ``t3.inference`` (or ``inference_turbo``), its token budget and its seed."""

    kwargs: dict
    budget: int
    seed: int


@dataclass
class RowResult:
    """What a row decoded: tokens shaped as upstream's T3 call returns them, the call's
    record, and its generator's state after its last draw (for S3Gen's draws)."""

    tokens: object
    decoded: decode.Decoded
    rng_state: object


@dataclass
class _Trace:
    """Per-step raw scores of each row (before the processors), for tests and benches."""

    scores: list = field(default_factory=list)


class _Captured(Exception):
    def __init__(self, kwargs: dict):
        super().__init__("T3 call captured")
        self.kwargs = kwargs


@contextlib.contextmanager
def intercept(tts, handler):
    """Route this model's T3 calls (both signatures) to ``handler(kwargs)`` inside the
    block; what was there before (cbx's decoder, usually) is put back afterwards."""
    t3 = tts.t3
    saved = {name: t3.__dict__[name] for name in ("inference", "inference_turbo")
             if name in t3.__dict__}
    t3.inference = lambda **kwargs: handler(kwargs)
    t3.inference_turbo = lambda t3_cond, text_tokens, **kwargs: handler(
        {**kwargs, "t3_cond": t3_cond, "text_tokens": text_tokens})
    try:
        yield
    finally:
        for name in ("inference", "inference_turbo"):
            t3.__dict__.pop(name, None)
        t3.__dict__.update(saved)


def capture(tts, text: str, generate_kwargs: dict) -> dict:
    """The arguments upstream's generate() gives T3 for `text` (nothing is decoded)."""
    def stop(kwargs):
        raise _Captured(kwargs)

    with intercept(tts, stop):
        try:
            tts.generate(text, **generate_kwargs)
        except _Captured as captured:
            return captured.kwargs
    raise AssertionError("generate() never called T3")


def replay(tts, text: str, generate_kwargs: dict, result: RowResult):
    """Upstream's generate() for `text` with T3's tokens already decoded: conditioning,
    S3Gen and the watermark run as usual. The caller sets the random state first."""
    with intercept(tts, lambda kwargs: result.tokens):
        return tts.generate(text, **generate_kwargs)


def use_row_rng(device, result: RowResult, seed: int) -> None:
    """Put the global generators where the sequential path would have them after this
    row's T3 loop: seeded with `seed`, the model device's generator at the row's state."""
    import torch

    torch.manual_seed(seed)
    _default_generator(device).set_state(result.rng_state)


def _default_generator(device):
    import torch

    if device.type == "cuda":
        return torch.cuda.default_generators[device.index or 0]
    return torch.default_generator


def decode_rows(decoder: decode.Decoder, rows: list[Row], on_forward=None,
                trace: _Trace | None = None) -> list[RowResult]:
    """Decode every row's tokens together (original and Turbo models). `on_forward()`
    runs before every transformer forward and may raise to cancel."""
    import torch

    if not rows:
        return []
    loop_class = _GptRows if decoder.t3.is_gpt else _LlamaRows
    with torch.inference_mode():
        return loop_class(decoder, rows, on_forward, trace).run()


# --------------------------------------------------------------------------- the step

class _BatchStep(decode._Step):
    """decode's one-token step for rows whose prompts are left-padded: ``pads`` (one
    per transformer row) masks each row's padding and shifts its position ids, so a
    row sees the positions it has alone. The buffers are written in place, so a CUDA
    graph captured by the parent replays with the current values."""

    def __init__(self, t3, cache_len: int, batch: int, dtype, device, graph: bool):
        import torch

        super().__init__(t3, cache_len, batch, dtype, device, graph)
        self.pads = torch.zeros(batch, dtype=torch.long, device=device)

    def mask(self, query_positions):
        import torch

        causal = self.positions[None, :] <= query_positions[:, None]      # (q, cache)
        real = self.positions[None, :] >= self.pads[:, None]                # (rows, cache)
        allowed = causal[None, :, :] & real[:, None, :]                     # (rows, q, cache)
        zero = torch.zeros((), dtype=self.embeds.dtype, device=self.embeds.device)
        return torch.where(allowed, zero, self.mask_min)[:, None]

    def forward(self, embeds, positions):
        position_ids = (positions[None, :] - self.pads[:, None]).clamp(min=0)
        out = self.t3.tfmr(inputs_embeds=embeds, past_key_values=self.cache,
                           cache_position=positions, position_ids=position_ids,
                           attention_mask=self.mask(positions), use_cache=True)
        return self.t3.speech_head(out.last_hidden_state[:, -1:, :])


# --------------------------------------------------------------------------- the loops

class _Rows:
    """What both batched loops share: padding, the step, per-row generators, stopping."""

    per_row = 1            # transformer rows per chunk (two with CFG)

    def __init__(self, decoder, rows: list[Row], on_forward, trace):
        import torch

        self.decoder, self.t3, self.rows = decoder, decoder.t3, rows
        self.on_forward, self.trace = on_forward, trace
        self.device = self.t3.device
        self.stop_token = self.t3.hp.stop_speech_token
        self.generators = [torch.Generator(device=self.device).manual_seed(row.seed)
                           for row in rows]
        self.started = time.perf_counter()

    def forward_hook(self):
        if self.on_forward is not None:
            self.on_forward()

    def padded(self, prompts: list):
        """Left-pad each chunk's prompt (rows, length, dim) to one length; returns the
        batch and the padding of each transformer row."""
        import torch

        longest = max(p.shape[1] for p in prompts)
        length = -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
        batch = torch.zeros(len(prompts) * self.per_row, length, prompts[0].shape[2],
                            dtype=prompts[0].dtype, device=self.device)
        pads = []
        for r, prompt in enumerate(prompts):
            pad = length - prompt.shape[1]
            batch[r * self.per_row:(r + 1) * self.per_row, pad:] = prompt
            pads += [pad] * self.per_row
        return batch, torch.tensor(pads, dtype=torch.long, device=self.device)

    def make_step(self, inputs, pads, longest_budget: int):
        graph = self.device.type == "cuda"
        cache_len = -(-(inputs.shape[1] + longest_budget + 1) // decode.CACHE_BUCKET) \
            * decode.CACHE_BUCKET
        step = self.decoder.step_for(
            cache_len, ("batch", inputs.shape[0]), graph,
            lambda: _BatchStep(self.t3, cache_len, inputs.shape[0], inputs.dtype,
                               self.device, graph))
        step.pads.copy_(pads)
        return step

    def draw(self, r: int, probs):
        import torch

        return torch.multinomial(probs, num_samples=1, generator=self.generators[r])

    def results(self, step, ids, made: list, stopped: list, prefill_s: float,
                offset: int, drop_stop: bool) -> list[RowResult]:
        elapsed = time.perf_counter() - self.started - prefill_s
        capture, step.capture_s = step.capture_s, 0.0
        self.decoder.capture_s += capture
        out = []
        for r, row in enumerate(self.rows):
            tokens = ids[r:r + 1, offset:offset + made[r]].clone()
            if drop_stop and made[r] and int(tokens[0, -1]) == self.stop_token:
                tokens = tokens[:, :-1]
            record = decode.Decoded(made[r], row.budget, not stopped[r], True,
                                    step.graph is not None, prefill_s, elapsed - capture)
            out.append(RowResult(tokens, record, self.generators[r].get_state()))
        return out


class _LlamaRows(_Rows):
    """decode._LlamaLoop (original model), one row pair per chunk."""

    per_row = 2

    def run(self) -> list[RowResult]:
        import torch

        t3, hp = self.t3, self.t3.hp
        prompts, settings = [], []
        bos = torch.tensor([[hp.start_speech_token]], dtype=torch.long, device=self.device)
        bos_embed = t3.speech_emb(bos) + t3.speech_pos_emb.get_fixed_embedding(0)
        for row in self.rows:
            kw = row.kwargs
            cfg_weight = kw.get("cfg_weight", 0.5)
            text_tokens = torch.atleast_2d(kw["text_tokens"]).to(dtype=torch.long,
                                                                 device=self.device)
            start_tokens = hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
            embeds, _ = t3.prepare_input_embeds(
                t3_cond=kw["t3_cond"], text_tokens=text_tokens, speech_tokens=start_tokens,
                cfg_weight=cfg_weight)
            prompts.append(torch.cat([embeds, torch.cat([bos_embed, bos_embed])], dim=1))
            settings.append((cfg_weight, decode.llama_processing(kw)))
        inputs, pads = self.padded(prompts)
        length = inputs.shape[1]
        longest = max(row.budget for row in self.rows)
        step = self.make_step(inputs, pads, longest)
        count = len(self.rows)
        ids = torch.full((count, longest + 1), hp.start_speech_token, dtype=torch.long,
                         device=self.device)
        made, stopped, active = [0] * count, [False] * count, [True] * count
        self.forward_hook()
        logits = step.prefill(inputs)
        prefill_s = time.perf_counter() - self.started
        for i in range(longest):
            for r, (cfg_weight, process) in enumerate(settings):
                if not active[r]:
                    continue
                cond = logits[2 * r:2 * r + 1, -1, :]
                uncond = logits[2 * r + 1:2 * r + 2, -1, :]
                cfg = torch.as_tensor(cfg_weight, device=cond.device, dtype=cond.dtype)
                scores = cond + cfg * (cond - uncond)
                if self.trace is not None:
                    self.trace.scores.append((r, i, scores.detach().clone()))
                scores = process(ids[r:r + 1, :i + 1], scores)
                token = self.draw(r, torch.softmax(scores, dim=-1))
                ids[r, i + 1] = token[0, 0]
                made[r] = i + 1
                if int(token[0, 0]) == self.stop_token:
                    stopped[r], active[r] = True, False
                elif made[r] == self.rows[r].budget:
                    active[r] = False
            if not any(active):
                break
            tokens = ids[:, i + 1]
            embed = t3.speech_emb(tokens) + t3.speech_pos_emb.emb.weight[i + 1]
            step.embeds.copy_(embed.repeat_interleave(2, dim=0)[:, None, :])
            step.position.fill_(length + i)
            self.forward_hook()
            logits = step.step()
        return self.results(step, ids, made, stopped, prefill_s, 1, drop_stop=False)


class _GptRows(_Rows):
    """decode._Gpt2Loop (Turbo): one row per chunk, no CFG."""

    def run(self) -> list[RowResult]:
        import torch
        import torch.nn.functional as F

        t3, hp = self.t3, self.t3.hp
        prompts, processors, starts = [], [], []
        for row in self.rows:
            kw = row.kwargs
            processors.append(decode.turbo_processing(kw))
            text_tokens = kw["text_tokens"]
            start_tokens = hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
            starts.append(start_tokens)
            embeds, _ = t3.prepare_input_embeds(t3_cond=kw["t3_cond"],
                                                text_tokens=text_tokens,
                                                speech_tokens=start_tokens, cfg_weight=0.0)
            prompts.append(embeds)
        inputs, pads = self.padded(prompts)
        length = inputs.shape[1]
        limits = [row.budget + 1 for row in self.rows]   # upstream: budget + 1 tokens
        longest = max(limits)
        step = self.make_step(inputs, pads, longest)
        count = len(self.rows)
        ids = torch.zeros((count, longest), dtype=torch.long, device=self.device)
        made, stopped, active = [0] * count, [False] * count, [True] * count
        self.forward_hook()
        logits = step.prefill(inputs)
        prefill_s = time.perf_counter() - self.started
        for i in range(longest):
            for r, chain in enumerate(processors):
                if not active[r]:
                    continue
                raw = logits[r:r + 1, -1, :]
                if self.trace is not None:
                    self.trace.scores.append((r, i, raw.detach().clone()))
                history = starts[r] if i == 0 else ids[r:r + 1, :i]
                scores = chain(history, raw)
                if i > 0 and bool(torch.all(scores == -float("inf"))):
                    stopped[r], active[r] = True, False    # upstream stops without drawing
                    continue
                token = self.draw(r, F.softmax(scores, dim=-1))
                ids[r, i] = token[0, 0]
                made[r] = i + 1
                if int(token[0, 0]) == self.stop_token:
                    stopped[r], active[r] = True, False
                elif made[r] == limits[r]:
                    active[r] = False
            if not any(active):
                break
            step.embeds.copy_(t3.speech_emb(ids[:, i:i + 1]))
            step.position.fill_(length + i)
            self.forward_hook()
            logits = step.step()
        return self.results(step, ids, made, stopped, prefill_s, 0, drop_stop=True)

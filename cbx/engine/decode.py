"""cbx's own T3 token loop: a static KV cache, no per-token host sync, CUDA graphs.

Why: upstream's loop (``T3.inference`` / ``T3.inference_turbo``) grows its KV cache every
step, asks for every layer's hidden states and attentions, checks the stop token on the
host after every token and launches hundreds of small kernels per step, so a GPU
computes for a fraction of each 17-20 ms step.  This loop keeps what decides the tokens
exactly as upstream has it: the same input embeddings (upstream's own
``prepare_input_embeds``), CFG as the same batch of two, the same transformers logits
processors in the same order, the multilingual alignment analyzer, and one
``torch.multinomial`` draw per token.  What changes is how the transformer is driven:

* a pre-allocated ``transformers.StaticCache`` sized to the chunk's token budget
  (rounded up to ``CACHE_BUCKET`` positions so chunks reuse one cache and one graph),
  with an explicit additive attention mask, so every step has the same shapes;
* the speech head runs on the last position only;
* on CUDA the stop token is checked every ``CUDA_STOP_CHECK`` steps on a device flag;
  the steps taken past it are cut off and the random generator is put back to where it
  stood right after the stop token, so S3Gen draws what it would have drawn upstream.
  On CPU (where a check costs nothing) and for the multilingual model (its analyzer
  reads every step on the host anyway) the check is every step;
* on CUDA the one-token step (transformer and speech head) is captured in a
  ``torch.cuda.CUDAGraph`` per cache size, at first use, and replayed (not for the
  multilingual model, whose analyzer copies attention maps to the host every step).

The graph path checks itself, because a wrong graph would make wrong speech without an
error: the first graph a process captures of each kind of step (``_Step`` and its
subclasses) is replayed and the same step run eagerly, and their logits must agree
(``GRAPH_TOLERANCE``, ``GRAPH_TOLERANCE_HALF``).  A failed capture or replay, or a
disagreement, switches the process to the eager static-cache step; a failure of the
fast loop itself switches it to upstream's loop and redoes the call there from the same
random state.  ``fallback()`` says why, for ``cbx.status()`` and the Result's notes.

A token budget per chunk (``token_budget``) replaces upstream's fixed 1000 tokens, so a
chunk that never stops ends after a few times the speech its text predicts instead of
40 s of babble; ``Decoder.last`` tells the caller whether the budget ended it.

Layer 3 (model-level, beside fastload): torch, transformers and chatterbox are imported
inside functions.  ``CBX_FAST_DECODE=0`` uses upstream's loop (still under the budget).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass

from ..text import estimate_seconds

FAST_DECODE_ENV = "CBX_FAST_DECODE"
UPSTREAM_MAX_TOKENS = 1000      # what upstream's generate() asks for (40 s of speech)
TOKENS_PER_SECOND = 25          # S3 speech tokens per second of audio
BUDGET_FACTOR = 4               # room for slow, expressive reading
BUDGET_MARGIN = 50              # 2 s, for very short chunks
CACHE_BUCKET = 256              # cache lengths are rounded up to this many positions
CUDA_STOP_CHECK = 16            # steps between host reads of the stop flag on CUDA
GRAPH_TOLERANCE = 1e-3          # largest logit difference, graph against eager, float32
GRAPH_TOLERANCE_HALF = 1e-2     # the same in float16 and bfloat16
REASON_CHARS = 300              # how much of an exception's text a reason keeps

# What this process switched off after a failure, and why: "graphs" (CUDA graphs; the
# eager static-cache step runs) and "fast" (cbx's loop; upstream's runs).  Per process,
# not per model: what failed once (a driver, a kernel, this code) would fail again.
_OFF: dict[str, str] = {}
# _Step classes whose first graph passed the self-check -> the largest logit difference
_CHECKED: dict[type, float] = {}


def enabled() -> bool:
    return os.environ.get(FAST_DECODE_ENV, "1").strip().lower() not in ("0", "false", "no",
                                                                          "off")


def token_budget(text: str) -> int:
    """Most speech tokens the chunk `text` may take (never above upstream's own cap):
    about 4x the tokens of the speech its text predicts (`estimate_seconds`, which
    knows that a CJK character takes three times a Latin one's time), plus 2 s."""
    return min(UPSTREAM_MAX_TOKENS, math.ceil(
        BUDGET_FACTOR * TOKENS_PER_SECOND * estimate_seconds(text)) + BUDGET_MARGIN)


@dataclass(frozen=True)
class Decoded:
    """What one T3 call did: tokens made (the stop token included, as upstream counts
    them), the budget it ran under, and whether the budget (not the model) ended it."""

    tokens: int
    budget: int
    hit_budget: bool
    fast: bool
    graphed: bool
    prefill_s: float
    decode_s: float
    fallback: str | None = None    # set when a failure made this call run slower


def fallback() -> str | None:
    """Why this process runs a slower token loop than it was built for, in words a user
    reads (cbx.status(), a Result's notes); None while nothing has failed."""
    lines = []
    if "graphs" in _OFF:
        lines.append("CUDA graphs are off in this process, so cbx's token loop runs "
                     f"without them (slower): {_OFF['graphs']}.")
    if "fast" in _OFF:
        lines.append("cbx's fast token loop is off in this process, so upstream's slower "
                     f"loop makes the speech tokens (the failed chunk was redone with it): "
                     f"{_OFF['fast']}.")
    if not lines:
        return None
    return " ".join(lines) + " Restart the kernel (or Python) to try them again."


def loop_status() -> str | None:
    """cbx.status()'s line on the token loop: a fallback's reason, or the graph
    self-check's result once one ran; None before either."""
    if _OFF:
        return fallback()
    if _CHECKED:
        worst = max(_CHECKED.values())
        return ("CUDA graphs on: the first graph matched the same step run eagerly "
                f"(largest logit difference {worst:.2g})")
    return None


def _switch_off(what: str, reason: str) -> None:
    _OFF.setdefault(what, reason)    # the first reason is the one that explains it


def _reason(action: str, exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    if len(text) > REASON_CHARS:
        text = text[:REASON_CHARS - 3] + "..."
    return f"{action} failed ({text})"


class Decoder:
    """Stands in for a loaded model's ``t3.inference`` and ``t3.inference_turbo`` (set
    as instance attributes by ``install``), so upstream's ``generate()`` keeps doing the
    conditioning, S3Gen and the watermark and only the token loop is cbx's.

    ``chunk(budget, on_forward, on_tokens)`` sets what the next calls run under;
    ``on_forward()`` is called before every transformer forward (prompt and each token)
    and may raise to cancel; ``on_tokens(tokens, made)`` after every sampled token, with
    a device view of the chunk's tokens so far (the fast loop only: upstream's loop has
    no such seam).  ``release()`` frees caches and graphs (called on unload).
    ``graphs`` says whether steps are captured in CUDA graphs (None: on CUDA devices)."""

    def __init__(self, t3, fast: bool | None = None):
        self.t3 = t3
        self._fast = enabled() if fast is None else fast
        self.graphs: bool | None = None
        self.budget = UPSTREAM_MAX_TOKENS
        self.on_forward = None
        self.on_tokens = None
        self.last: Decoded | None = None
        self.capture_s = 0.0          # time spent capturing CUDA graphs so far
        self.callback_error: BaseException | None = None   # raised by on_forward/on_tokens
        self._steps: dict = {}        # cache length -> _Step

    @property
    def fast(self) -> bool:
        """Whether calls run cbx's loop: asked for, and not switched off in this process."""
        return self._fast and "fast" not in _OFF

    # ------------------------------------------------------------------ the seams

    @contextlib.contextmanager
    def chunk(self, budget: int, on_forward=None, on_tokens=None):
        self.budget, self.on_forward, self.on_tokens = budget, on_forward, on_tokens
        self.last = None
        try:
            yield self
        finally:
            self.budget, self.on_forward, self.on_tokens = UPSTREAM_MAX_TOKENS, None, None

    def inference(self, **kwargs):
        """``T3.inference``'s signature (original and multilingual)."""
        budget = min(self.budget, kwargs.get("max_new_tokens") or UPSTREAM_MAX_TOKENS)
        return self.guarded(
            lambda: self._run(_LlamaLoop, budget, kwargs),
            lambda: self._upstream(type(self.t3).inference, "max_new_tokens", budget,
                                   kwargs))

    def inference_turbo(self, t3_cond, text_tokens, **kwargs):
        """``T3.inference_turbo``'s signature (Turbo)."""
        kwargs.update(t3_cond=t3_cond, text_tokens=text_tokens)
        budget = min(self.budget, kwargs.get("max_gen_len") or UPSTREAM_MAX_TOKENS)
        return self.guarded(
            lambda: self._run(_Gpt2Loop, budget, kwargs),
            lambda: self._upstream(type(self.t3).inference_turbo, "max_gen_len", budget,
                                   kwargs))

    def guarded(self, fast, upstream):
        """`fast()` (cbx's loop) or, where it is not to run, `upstream()`. When the fast
        loop fails, the call is redone with upstream's loop from the random state it
        began with, so the chunk still comes out (as upstream makes it), and if that
        works this process stays on upstream's loop. Not the loop's failure: an
        exception from the caller's callbacks (a cancel), CUDA running out of memory
        (upstream's loop needs more), or one upstream's loop raises too (the input's)."""
        if not self.fast:
            out = upstream()
            if self._fast:              # asked for, but switched off after a failure
                self.last = dataclasses.replace(self.last, fallback=fallback())
            return out
        import torch

        cuda = self.t3.device.type == "cuda"
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.t3.device) if cuda else None
        self.callback_error = None
        try:
            return fast()
        except Exception as exc:
            if exc is self.callback_error or isinstance(exc, torch.cuda.OutOfMemoryError):
                raise
            reason = _reason("the loop", exc)
        finally:
            self.callback_error = None   # no traceback (its frames, tensors) kept past it
        self.release()
        torch.set_rng_state(cpu_rng)
        if cuda:
            torch.cuda.set_rng_state(cuda_rng, self.t3.device)
        out = upstream()
        _switch_off("fast", reason)
        self.last = dataclasses.replace(self.last, fallback=fallback())
        return out

    def release(self) -> None:
        self._steps.clear()

    # ------------------------------------------------------------------ internals

    def _upstream(self, method, budget_arg: str, budget: int, kwargs: dict):
        hook = None
        if self.on_forward is not None:
            hook = self.t3.tfmr.register_forward_pre_hook(lambda *_: self.on_forward())
        start = time.perf_counter()
        try:
            out = method(self.t3, **{**kwargs, budget_arg: budget})
        finally:
            if hook is not None:
                hook.remove()
        made = out.shape[-1]
        stopped = bool(made) and int(out[0, -1]) == self.t3.hp.stop_speech_token
        # Turbo's loop makes budget + 1 tokens and removes the stop token it ends on
        hit = not stopped and made >= budget
        self.last = Decoded(made, budget, hit, False, False, 0.0,
                            time.perf_counter() - start)
        return out

    def _run(self, loop_class, budget: int, kwargs: dict):
        import torch

        with torch.inference_mode():
            loop = loop_class(self, budget, kwargs)
            out = loop.run()
        self.last = loop.decoded
        return out

    def step_for(self, cache_len: int, batch: int, graph: bool, make):
        """The captured (or eager) one-token step for this cache size, reused."""
        key = (cache_len, batch, graph)
        if key not in self._steps:
            self._steps.clear()       # one cache (and graph) alive at a time
            self._steps[key] = make()
        return self._steps[key]


def install(tts) -> Decoder:
    """Put a Decoder in front of this model's T3 token loops (instance attributes, so the
    class methods stay upstream's for anyone else). The manager's load is the one place
    that calls it for cbx's models: every model synth gets has its decoder."""
    decoder = Decoder(tts.t3)
    tts.t3.inference = decoder.inference
    tts.t3.inference_turbo = decoder.inference_turbo
    tts.t3.cbx_decoder = decoder
    return decoder


def decoder_of(tts) -> Decoder | None:
    return getattr(tts.t3, "cbx_decoder", None)


@contextlib.contextmanager
def upstream_token_loop(tts):
    """Run upstream's own T3 loops on this model inside the block (to compare against
    them); the decoder, if any, is put back afterwards."""
    had = decoder_of(tts) is not None
    uninstall(tts)
    try:
        yield tts
    finally:
        if had:
            install(tts)


def uninstall(tts) -> None:
    decoder = decoder_of(tts)
    if decoder is None:
        return
    decoder.release()
    for name in ("inference", "inference_turbo", "cbx_decoder"):
        tts.t3.__dict__.pop(name, None)


# --------------------------------------------------------------------------- the step

def capture_graph(forward):
    """Capture `forward()` in a CUDA graph; returns (graph, its output tensor). It is warmed
    up on a side stream first, as CUDA graphs require. The one place that touches CUDA
    graphs, so a test on a CPU can put a capture that fails or a graph that lies here."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            forward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = forward()
    return graph, out


class _Step:
    """One token through the transformer with a static cache: inputs are written into
    fixed tensors (`embeds`, `position`), `step()` returns the last hidden state's speech
    logits.  With `graph`, the body is captured once in a CUDA graph (checked, see
    `_capture`) and replayed; subclasses (other masks) get the same capture and check."""

    def __init__(self, t3, cache_len: int, batch: int, dtype, device, graph: bool):
        import torch
        from transformers import StaticCache

        self.t3, self.cache_len = t3, cache_len
        self.cache = StaticCache(config=t3.cfg, max_cache_len=cache_len)
        self.positions = torch.arange(cache_len, device=device)
        self.embeds = torch.zeros(batch, 1, t3.dim, dtype=dtype, device=device)
        self.position = torch.zeros(1, dtype=torch.long, device=device)
        self.mask_min = torch.finfo(dtype).min
        self.logits = None
        self.graph = None
        self.capture_s = 0.0
        self._want_graph = graph

    def mask(self, query_positions):
        """Additive causal mask over the whole cache: (1, 1, q, cache_len)."""
        import torch

        allowed = self.positions[None, :] <= query_positions[:, None]
        zero = torch.zeros((), dtype=self.embeds.dtype, device=self.embeds.device)
        return torch.where(allowed, zero, self.mask_min)[None, None]

    def forward(self, embeds, positions):
        out = self.t3.tfmr(inputs_embeds=embeds, past_key_values=self.cache,
                           cache_position=positions, attention_mask=self.mask(positions),
                           use_cache=True)
        return self.t3.speech_head(out.last_hidden_state[:, -1:, :])

    def prefill(self, embeds):
        import torch

        return self.forward(embeds, torch.arange(embeds.shape[1], device=embeds.device))

    def step(self):
        """The next token's logits: the graph's replay where there is one (captured at
        first use), else the eager forward. A failed capture or replay switches this
        process to the eager step, which then runs this same step."""
        if self._want_graph and "graphs" not in _OFF:
            action = "replaying the step's graph" if self.graph is not None \
                else "capturing the step in a graph"
            try:
                if self.graph is None:
                    return self._capture()
                self.graph.replay()
                return self.logits
            except Exception as exc:
                _switch_off("graphs", _reason(action, exc))
        self.graph = None
        return self.forward(self.embeds, self.position)

    def _capture(self):
        """Capture the step and replay it for this token. The first graph of each kind
        of step in a process is checked: the same step run eagerly must give the same
        logits (GRAPH_TOLERANCE*); if not, graphs go off and the eager logits are used.
        Every forward here writes the same cache slot the step writes, so nothing a
        warm-up or the check leaves behind is read."""
        import torch

        start = time.perf_counter()
        self.graph, self.logits = capture_graph(
            lambda: self.forward(self.embeds, self.position))
        self.graph.replay()
        logits = self.logits if type(self) in _CHECKED else self._check()
        if self.embeds.is_cuda:
            torch.cuda.synchronize()
        self.capture_s = time.perf_counter() - start
        return logits

    def _check(self):
        graphed = self.logits.clone()
        eager = self.forward(self.embeds, self.position)
        import torch

        tolerance = GRAPH_TOLERANCE if self.embeds.dtype == torch.float32 \
            else GRAPH_TOLERANCE_HALF
        worst = float((graphed.float() - eager.float()).abs().max())
        if not worst <= tolerance:        # NaN fails too
            _switch_off("graphs", "its self-check failed (the graph's logits differ from "
                        f"the same step run eagerly by {worst:.3g}, more than "
                        f"{tolerance:g})")
            self.graph = None
            return eager
        _CHECKED[type(self)] = worst
        return self.logits


# --------------------------------------------------------------------------- the loops

class _Loop:
    """What both loops share: budget, stop detection, RNG bookkeeping, timing."""

    def __init__(self, decoder: Decoder, budget: int, kwargs: dict):
        import torch

        self.decoder, self.t3, self.budget, self.kw = decoder, decoder.t3, budget, kwargs
        self.device = self.t3.device
        self.cuda = self.device.type == "cuda"
        self.stop_token = self.t3.hp.stop_speech_token
        self.check_every = CUDA_STOP_CHECK if self.cuda else 1
        self.generator = torch.cuda.default_generators[self.device.index or 0] \
            if self.cuda else torch.default_generator
        self.rng_after = []        # generator state after each draw (CUDA only)
        self.decoded = None
        self.graph_wanted = False  # would use a CUDA graph, had none failed

    def forward_hook(self):
        if self.decoder.on_forward is not None:
            self._callback(self.decoder.on_forward)

    def tokens_hook(self, tokens, made: int):
        if self.decoder.on_tokens is not None:
            self._callback(self.decoder.on_tokens, tokens, made)

    def _callback(self, function, *args):
        """The caller's callback; what it raises is marked as the caller's (a cancel),
        so `Decoder.guarded` passes it on instead of taking it for a loop failure."""
        try:
            function(*args)
        except BaseException as exc:
            self.decoder.callback_error = exc
            raise

    def use_graph(self, graph_ok: bool = True) -> bool:
        """Whether this call's step is captured in a CUDA graph: the decoder asks for
        graphs (on CUDA by default), nothing in the step reads back to the host (the
        multilingual analyzer's attention hooks do), and no graph failed in this process."""
        wanted = self.decoder.graphs if self.decoder.graphs is not None else self.cuda
        self.graph_wanted = wanted and graph_ok
        return self.graph_wanted and "graphs" not in _OFF

    def step_module(self, cache_len: int, batch: int, dtype, graph_ok: bool = True):
        """The step for this call (see `use_graph`)."""
        graph = self.use_graph(graph_ok)
        step = self.decoder.step_for(cache_len, batch, graph,
                                     lambda: _Step(self.t3, cache_len, batch, dtype,
                                                   self.device, graph))
        # No reset between chunks: the mask gives every position past the current one
        # a weight of exactly 0, so what an earlier chunk left there is never read (and
        # zeroing a 1000-token fp32 cache would cost a 0.7 GB memset per chunk).
        return step

    def draw(self, probs):
        import torch

        token = torch.multinomial(probs, num_samples=1)
        if self.cuda:
            self.rng_after.append(self.generator.get_state())
        return token

    def cut_at_stop(self, tokens, made: int, masked=None) -> int:
        """On CUDA, steps may run past the end: return how many tokens upstream would
        have made (up to its stop token, or before a step whose logits were all masked)
        and put the generator back to just after upstream's last draw."""
        import torch

        if not self.cuda:
            return made
        ends = (tokens[0, :made] == self.stop_token).nonzero()[:, 0] + 1
        if masked is not None:
            ends = torch.cat([ends, masked[:made].nonzero()[:, 0]])
        if len(ends):
            made = int(ends.min())
        if made:
            self.generator.set_state(self.rng_after[made - 1])
        return made

    def finish(self, step, made: int, hit_budget: bool, prefill_s: float,
               elapsed: float) -> Decoded:
        """The call's record; a graph captured during it counts as capture, not decode,
        and a graph it would have used but could not is named as the fallback."""
        capture, step.capture_s = step.capture_s, 0.0
        self.decoder.capture_s += capture
        slower = self.graph_wanted and "graphs" in _OFF
        return Decoded(made, self.budget, hit_budget, True, step.graph is not None,
                       prefill_s, elapsed - capture, fallback() if slower else None)

    def bucket(self, needed: int) -> int:
        return -(-needed // CACHE_BUCKET) * CACHE_BUCKET


def llama_processing(kw: dict):
    """What upstream's ``T3.inference`` does to a chunk's CFG-combined scores before its
    draw, in its order (repetition penalty, temperature, min-p, top-p), with this
    call's settings: ``process(history, scores)``. Shared with the batched loop."""
    from transformers.generation.logits_process import (
        MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, TopPLogitsWarper)

    temperature = kw.get("temperature", 0.8)
    top_p = TopPLogitsWarper(top_p=kw.get("top_p", 0.95))
    min_p = MinPLogitsWarper(min_p=kw.get("min_p", 0.05))
    repetition = RepetitionPenaltyLogitsProcessor(
        penalty=float(kw.get("repetition_penalty", 1.2)))

    def process(history, scores):
        scores = repetition(history, scores)
        if temperature != 1.0:
            scores = scores / temperature
        scores = min_p(history, scores)
        return top_p(history, scores)

    return process


def turbo_processing(kw: dict):
    """Upstream ``T3.inference_turbo``'s logits processors with this call's settings,
    in its order. Shared with the batched loop."""
    from transformers.generation.logits_process import (
        LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
        TopKLogitsWarper, TopPLogitsWarper)

    temperature = kw.get("temperature", 0.8)
    top_k, top_p = kw.get("top_k", 1000), kw.get("top_p", 0.95)
    repetition_penalty = kw.get("repetition_penalty", 1.2)
    processors = LogitsProcessorList()
    if temperature > 0 and temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        processors.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    return processors


class _LlamaLoop(_Loop):
    """Upstream ``T3.inference`` (original, multilingual), token for token."""

    def run(self):
        import torch

        t3, kw, hp = self.t3, self.kw, self.t3.hp
        start = time.perf_counter()
        cfg_weight = kw.get("cfg_weight", 0.5)
        process = llama_processing(kw)

        text_tokens = torch.atleast_2d(kw["text_tokens"]).to(dtype=torch.long,
                                                             device=self.device)
        start_tokens = hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
        embeds, len_cond = t3.prepare_input_embeds(
            t3_cond=kw["t3_cond"], text_tokens=text_tokens, speech_tokens=start_tokens,
            cfg_weight=cfg_weight)
        bos = torch.tensor([[hp.start_speech_token]], dtype=torch.long, device=self.device)
        bos_embed = t3.speech_emb(bos) + t3.speech_pos_emb.get_fixed_embedding(0)
        bos_embed = torch.cat([bos_embed, bos_embed])   # batch of two for CFG, as upstream
        inputs = torch.cat([embeds, bos_embed], dim=1)
        batch, prompt_len = inputs.shape[0], inputs.shape[1]

        with _alignment_analyzer(t3, len_cond, text_tokens.size(-1)) as analyzer:
            check_every = 1 if analyzer is not None else self.check_every
            step = self.step_module(self.bucket(prompt_len + self.budget + 1), batch,
                                    inputs.dtype, graph_ok=analyzer is None)
            ids = torch.full((1, self.budget + 1), hp.start_speech_token, dtype=torch.long,
                             device=self.device)
            done = torch.zeros((), dtype=torch.bool, device=self.device)
            self.forward_hook()
            logits = step.prefill(inputs)
            prefill_end = time.perf_counter()
            cfg = None
            made = 0
            for i in range(self.budget):
                row = logits[:, -1, :]
                cond, uncond = row[0:1, :], row[1:2, :]
                if cfg is None:
                    cfg = torch.as_tensor(cfg_weight, device=cond.device, dtype=cond.dtype)
                scores = cond + cfg * (cond - uncond)
                if analyzer is not None:
                    scores = analyzer.step(scores, next_token=int(ids[0, i]))
                scores = process(ids[:, :i + 1], scores)
                token = self.draw(torch.softmax(scores, dim=-1))
                ids[:, i + 1] = token[:, 0]
                made = i + 1
                self.tokens_hook(ids[0, 1:], made)
                done |= (token[0, 0] == self.stop_token)
                if made % check_every == 0 and bool(done):
                    break
                if made == self.budget:
                    break      # upstream would run one more forward whose logits go unused
                embed = t3.speech_emb(token) + t3.speech_pos_emb.emb.weight[i + 1]
                step.embeds.copy_(embed.expand(batch, -1, -1))
                step.position.fill_(prompt_len + i)
                self.forward_hook()
                logits = step.step()
            made = self.cut_at_stop(ids[:, 1:], made)
        tokens = ids[:, 1:made + 1].clone()
        stopped = bool(made) and int(tokens[0, -1]) == self.stop_token
        self.decoded = self.finish(step, made, not stopped, prefill_end - start,
                                   time.perf_counter() - prefill_end)
        return tokens


class _Gpt2Loop(_Loop):
    """Upstream ``T3.inference_turbo`` (Turbo), token for token."""

    def run(self):
        import torch
        import torch.nn.functional as F

        t3, kw, hp = self.t3, self.kw, self.t3.hp
        start = time.perf_counter()
        processors = turbo_processing(kw)

        text_tokens = kw["text_tokens"]
        start_tokens = hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
        embeds, _ = t3.prepare_input_embeds(t3_cond=kw["t3_cond"], text_tokens=text_tokens,
                                            speech_tokens=start_tokens, cfg_weight=0.0)
        prompt_len = embeds.shape[1]
        # upstream: one token from the prompt, then up to max_gen_len more
        limit = self.budget + 1
        step = self.step_module(self.bucket(prompt_len + limit), 1, embeds.dtype)
        ids = torch.zeros((1, limit), dtype=torch.long, device=self.device)
        # upstream also stops, without drawing, when every processed logit is -inf
        masked = torch.zeros(limit, dtype=torch.bool, device=self.device)
        done = torch.zeros((), dtype=torch.bool, device=self.device)
        self.forward_hook()
        logits = step.prefill(embeds)
        prefill_end = time.perf_counter()
        made = 0
        for i in range(limit):
            history = start_tokens if i == 0 else ids[:, :i]
            scores = processors(history, logits[:, -1, :])
            if i > 0:
                masked[i] = torch.all(scores == -float("inf"))
                done |= masked[i]
                if not self.cuda and bool(done):
                    break
                if self.cuda:   # keep the draw valid; a masked step is cut off later
                    scores = torch.where(masked[i], torch.zeros_like(scores), scores)
            token = self.draw(F.softmax(scores, dim=-1))
            ids[:, i] = token[:, 0]
            made = i + 1
            self.tokens_hook(ids[0], made)
            done |= (token[0, 0] == self.stop_token)
            if made % self.check_every == 0 and bool(done):
                break
            if made == limit:
                break
            step.embeds.copy_(t3.speech_emb(token))
            step.position.fill_(prompt_len + i)
            self.forward_hook()
            logits = step.step()
        made = self.cut_at_stop(ids, made, masked)
        tokens = ids[:, :made]
        ended = bool(masked[made]) if made < limit else False
        stopped = ended or (bool(made) and int(tokens[0, -1]) == self.stop_token)
        if made and int(tokens[0, -1]) == self.stop_token:
            tokens = tokens[:, :-1]
        self.decoded = self.finish(step, made, not stopped, prefill_end - start,
                                   time.perf_counter() - prefill_end)
        return tokens.clone()


@contextlib.contextmanager
def _alignment_analyzer(t3, len_cond: int, text_len: int):
    """Upstream's multilingual AlignmentStreamAnalyzer for one call (None for the other
    variants).  Upstream leaves its three attention hooks on the model for ever, one set
    per call; here they are removed when the call ends."""
    if not t3.hp.is_multilingual:
        yield None
        return
    from chatterbox.models.t3.inference.alignment_stream_analyzer import (
        LLAMA_ALIGNED_HEADS, AlignmentStreamAnalyzer)

    layers = [t3.tfmr.layers[layer].self_attn for layer, _ in LLAMA_ALIGNED_HEADS]
    before = [set(layer._forward_hooks) for layer in layers]
    analyzer = AlignmentStreamAnalyzer(t3.tfmr, None,
                                       text_tokens_slice=(len_cond, len_cond + text_len),
                                       alignment_layer_idx=9,
                                       eos_idx=t3.hp.stop_speech_token)
    try:
        yield analyzer
    finally:
        for layer, keep in zip(layers, before):
            for key in set(layer._forward_hooks) - keep:
                del layer._forward_hooks[key]

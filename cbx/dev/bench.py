"""Benchmark cbx against upstream chatterbox in one run: `python -m cbx.dev.bench`.

Why it exists: users judge the tool by how long they wait (load, preparing a voice,
first audio, total) and by whether the model fits their GPU, so those figures are
measured for cbx and for upstream chatterbox (``from_local`` / ``prepare_conditionals``
/ ``generate``) side by side, on the same machine, in the same run.

How: every repetition runs one fresh worker process per side, alternating which side
goes first (A/B, B/A, ...), so load time and peak memory are those of a clean process
and drifts (thermal, page cache, other load) hit both sides alike.  Each worker loads,
prepares the voice (first use, then reuse of the saved voice for cbx), generates a
short sentence with the token model and the vocoder instrumented, speaks a 5-sentence
text end to end, and unloads.  Decode speed counts every T3 call of the worker (the
short sentence and the text), so it rests on more than a handful of tokens.  The table
shows medians; the last line of output is one JSON object with every figure, the
ratios and the notes.

Without ``--model-dir`` the random-weight test fixture (cbx/dev/fixture.py) is built
or reused: every ``generate()`` of it yields the same 8 tokens whatever the text, so
runs are comparable, but time-to-first-audio ratios understate what real weights give
(see the note printed with the results).  ``--fixture-length R`` fixes that: it uses a
fixture that never stops by itself and caps every ``generate()`` of both sides at R
speech tokens per text token, so, as with real weights, the work grows with the text
(a real English voice makes about 1.7 tokens per character: 25 tokens per second of
speech at about 15 characters per second).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import paths
from ..engine.decode import decoder_of
from ..settings import DTYPES
from ..variants import VARIANTS, get_variant

RESULT_MARKER = "CBX_BENCH_RESULT "
SAMPLE_RATE = 24_000
CLIP_SECONDS = 10.0
SEED = 1234
# --fixture-length: a fixture built to stop only after this many tokens, i.e. never
# within upstream's own 1000-token cap per generate()
NEVER_STOPS = 2000
SHORT_TEXT = "This is a short sentence for measuring the decoder."
E2E_SENTENCES = (
    "The morning train was late again, so Maria walked along the river instead.",
    "She noticed the fog lifting slowly over the old stone bridge.",
    "A fisherman waved at her and pointed to the herons standing near the bank.",
    "By the time she reached the office, the sun was shining brightly on the square.",
    "It turned out to be the best part of her whole day.",
)
CLIP_TEXT = ("The quick brown fox jumps over the lazy dog. Chatterbox clones a voice from a "
             "few seconds of clean speech. Please read this sentence slowly and clearly.")

# figure key -> (label, unit, better: "lower"/"higher", target ratio or None)
FIGURES = {
    "load_s": ("Load: wall time", "s", "lower", 0.4),
    "load_peak_rss_mb": ("Load: peak process RSS", "MiB", "lower", 0.7),
    "load_peak_cuda_mb": ("Load: peak CUDA allocated", "MiB", "lower", None),
    "import_s": ("Import of the model libraries (not in load)", "s", "lower", None),
    "conds_first_s": ("Voice: conditionals, first use of a clip", "s", "lower", None),
    "conds_reuse_s": ("Voice: reuse of a saved voice", "s", "lower", 0.05),
    "prefill_s": ("T3: prompt prefill", "s", "lower", None),
    # cbx's own token loop (cbx/engine/decode.py) against upstream's: at least as fast on a CPU
    # (on a GPU the targets are 2x in float32 and 3x in half precision, see README)
    "t3_tokens_per_s": ("T3: decode speed", "tokens/s", "higher", 1.0),
    "graph_capture_s": ("T3: CUDA graph capture (first use, in the above)", "s", "lower",
                        None),
    "t3_weight_mb_per_token": ("T3: weights read per token", "MiB", "lower", None),
    "t3_weight_gb_per_s": ("T3: implied weight bandwidth", "GB/s", "higher", None),
    "s3gen_rtf": ("S3Gen+vocoder: audio s per compute s", "x", "higher", None),
    "e2e_first_audio_s": ("5 sentences: time to first audio", "s", "lower", 0.35),
    "e2e_first_block_s": ("5 sentences: time to first audio, streamed", "s", "lower", 0.08),
    "e2e_total_s": ("5 sentences: total", "s", "lower", None),
    "e2e_speak_total_s": ("5 sentences: total, speak() without streaming", "s", "lower",
                          None),
    # cbx against itself: stream()'s total (speak with on_block) over plain speak()'s
    "e2e_stream_cost": ("5 sentences: streamed total / speak() total", "x", "lower", 1.25),
    "e2e_chunks": ("5 sentences: chunks generated", "", "lower", None),
    "e2e_audio_s": ("5 sentences: audio length", "s", "higher", None),
    "peak_rss_mb": ("Whole run: peak process RSS", "MiB", "lower", None),
    "peak_cuda_mb": ("Whole run: peak CUDA allocated", "MiB", "lower", None),
    "unload_rss_retained_mb": ("Unload: RSS above the pre-load level", "MiB", "lower", None),
    "unload_cuda_allocated_mb": ("Unload: CUDA allocated after", "MiB", "lower", None),
    "unload_cuda_reserved_mb": ("Unload: CUDA reserved after", "MiB", "lower", None),
}
# Ratios whose denominator is not the same figure of upstream.
CROSS_RATIOS = {
    # reusing a saved voice vs computing its conditionals (upstream always computes)
    "conds_reuse_s": "conds_first_s",
    # cbx's first chunk vs upstream's one call for the whole text (it returns only then)
    "e2e_first_audio_s": "e2e_total_s",
    "e2e_first_block_s": "e2e_total_s",
}
# Figures that are already cbx's own ratio: their target applies to the value itself.
OWN_RATIOS = {"e2e_stream_cost"}


# --------------------------------------------------------------------------- memory

def peak_rss_mb() -> float:
    """Peak resident set of this process so far (MiB)."""
    if sys.platform == "win32":
        import psutil

        return psutil.Process().memory_info().peak_wset / 2**20
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024   # bytes vs KiB


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# --------------------------------------------------------------------------- worker

class _Probe:
    """Times T3's token loop (prefill vs decode, counting forward calls of t3.tfmr) and
    S3Gen's inference on a model, around whatever calls generate().

    With `tokens_per_text_token`, each T3 call is capped at that many speech tokens per
    text token (the length model of --fixture-length), the same rule for both sides."""

    def __init__(self, tts, tokens_per_text_token: float | None = None):
        self.tts = tts
        self.tokens_per_text_token = tokens_per_text_token
        self.runs: list[dict] = []
        self._handles = []

    def __enter__(self):
        import time as _time

        t3, s3gen = self.tts.t3, self.tts.s3gen
        decoder = decoder_of(self.tts)
        state = {}
        # an instance attribute already there is cbx's decoder: put it back on exit
        self._saved = (t3.__dict__.get("inference"), s3gen.__dict__.get("inference"))
        inner_t3, inner_s3 = t3.inference, s3gen.inference

        def forward_done(_module, _inputs, _output):
            state["calls"] += 1
            if state["calls"] == 1:
                state["prefill_end"] = _time.perf_counter()

        def t3_inference(*args, **kwargs):
            if self.tokens_per_text_token:
                text_tokens = kwargs["text_tokens"].shape[-1]
                kwargs["max_new_tokens"] = max(2, round(self.tokens_per_text_token
                                                        * text_tokens))
            state.update(calls=0, start=_time.perf_counter(), in_t3=True, window_s=0.0)
            try:
                out = inner_t3(*args, **kwargs)
            finally:
                state["in_t3"] = False
            end = _time.perf_counter()
            ran = decoder.last if decoder is not None else None
            if ran is not None and ran.fast:
                # cbx's loop times itself (CUDA graph replays run no module hooks);
                # it makes one token per forward, the prompt's included
                run = {"t3_calls": ran.tokens, "prefill_s": ran.prefill_s,
                       "decode_s": ran.decode_s, "graphed": ran.graphed}
            else:
                run = {"t3_calls": state["calls"],
                       "prefill_s": state["prefill_end"] - state["start"],
                       "decode_s": end - state["prefill_end"]}
            # streaming: S3Gen windows made between tokens are not decoding time
            run["decode_s"] -= state["window_s"]
            self.runs.append({**run, "max_new_tokens": kwargs.get("max_new_tokens"),
                              "window_s": state["window_s"]})
            return out

        def s3_inference(*args, **kwargs):
            start = _time.perf_counter()
            wav, extra = inner_s3(*args, **kwargs)
            if state.get("in_t3"):          # a streaming window, made inside T3's loop
                state["window_s"] += _time.perf_counter() - start
            else:
                self.runs[-1].update(s3gen_s=_time.perf_counter() - start,
                                     audio_s=wav.shape[-1] / SAMPLE_RATE)
            return wav, extra

        t3.inference, s3gen.inference = t3_inference, s3_inference
        self._handles.append(t3.tfmr.register_forward_hook(forward_done))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        t3, s3gen = self.tts.t3, self.tts.s3gen
        for owner, saved in zip((t3, s3gen), self._saved):
            if saved is None:
                del owner.inference          # back to the class method
            else:
                owner.inference = saved      # back to cbx's decoder
        return False


def _cuda(device: str):
    import torch

    return torch if device.startswith("cuda") and torch.cuda.is_available() else None


def _cuda_mb(device: str, what: str) -> float | None:
    torch = _cuda(device)
    if torch is None:
        return None
    return getattr(torch.cuda, what)() / 2**20


class _Upstream:
    """Upstream chatterbox's own calls, as its README uses them."""

    def __init__(self, task: dict, module, spec):
        self.task, self.module, self.spec = task, module, spec
        self.kwargs = {"language_id": "en"} if task["variant"] == "multilingual" else {}

    def load(self):
        return getattr(self.module, self.spec.class_name).from_local(self.task["folder"],
                                                                      self.task["device"])

    def prepare_voice(self, tts, out: dict):
        t0 = time.perf_counter()
        tts.prepare_conditionals(self.task["clip"], exaggeration=0.5)
        out["conds_first_s"] = time.perf_counter() - t0
        return None

    def short(self, tts, _voice) -> None:
        import torch

        torch.manual_seed(SEED)
        tts.generate(SHORT_TEXT, **self.kwargs)

    def e2e_unstreamed(self, tts, voice, text: str, out: dict) -> None:
        """Upstream has one way to make a text; cbx's is timed with and without
        streaming."""

    def e2e(self, tts, _voice, text: str, out: dict) -> None:
        import torch

        t0 = time.perf_counter()
        torch.manual_seed(SEED)
        wav = tts.generate(text, **self.kwargs)
        out["e2e_total_s"] = out["e2e_first_audio_s"] = time.perf_counter() - t0
        out["e2e_chunks"] = 1
        out["e2e_audio_s"] = wav.shape[-1] / SAMPLE_RATE

    def unload(self, out: dict) -> None:
        import gc

        gc.collect()
        cuda = _cuda(self.task["device"])
        if cuda is not None:
            cuda.cuda.empty_cache()


class _Cbx(_Upstream):
    """The same steps through cbx's public API."""

    def speak_kwargs(self) -> dict:
        task = self.task
        return dict(variant=task["variant"], device=task["device"], dtype=task["dtype"],
                    seed=SEED, model_dir=task["model_root"],
                    **({"language": "en"} if task["variant"] == "multilingual" else {}))

    def load(self):
        import cbx
        from cbx.engine.manager import get_manager

        task = self.task
        cbx.load(task["variant"], device=task["device"], dtype=task["dtype"],
                 model_dir=task["model_root"])
        return get_manager().loaded.tts

    def prepare_voice(self, tts, out: dict):
        import cbx
        from cbx.engine.conditionals import prepare_conditionals

        variant = self.task["variant"]
        voice = cbx.voice(self.task["clip"], name="bench voice", variant=variant)
        for key in ("conds_first_s", "conds_reuse_s"):     # first use, then the cache
            t0 = time.perf_counter()
            prepare_conditionals(tts, voice, variant, exaggeration=0.5)
            out[key] = time.perf_counter() - t0
        return voice

    def short(self, _tts, voice) -> None:
        import cbx

        cbx.speak(SHORT_TEXT, voice=voice, **self.speak_kwargs())

    def e2e_unstreamed(self, _tts, voice, text: str, out: dict) -> None:
        """The text through plain speak(), the yardstick of streaming's total cost."""
        import cbx

        t0 = time.perf_counter()
        cbx.speak(text, voice=voice, max_chunk_chars=self.task["max_chunk_chars"],
                  **self.speak_kwargs())
        out["e2e_speak_total_s"] = time.perf_counter() - t0

    def e2e(self, _tts, voice, text: str, out: dict) -> None:
        import cbx

        first = {}
        t0 = time.perf_counter()
        result = cbx.speak(text, voice=voice, max_chunk_chars=self.task["max_chunk_chars"],
                           on_chunk=lambda *_a: first.setdefault("at", time.perf_counter()),
                           on_block=lambda _b: first.setdefault("block",
                                                                time.perf_counter()),
                           **self.speak_kwargs())
        out["e2e_total_s"] = time.perf_counter() - t0
        out["e2e_stream_cost"] = out["e2e_total_s"] / out["e2e_speak_total_s"]
        out["e2e_first_audio_s"] = first["at"] - t0       # the first whole chunk
        out["e2e_first_block_s"] = first["block"] - t0    # the first streamed block
        out["e2e_chunks"] = len(result.chunks)
        out["e2e_audio_s"] = result.duration

    def unload(self, out: dict) -> None:
        import cbx

        out["unload_released"] = cbx.unload().released


def run_worker(task: dict) -> dict:
    """One side, one repetition, in this (fresh) process."""
    import gc
    import importlib

    device = task["device"]
    spec = get_variant(task["variant"])
    out: dict = {"side": task["side"]}
    started = time.perf_counter()
    import psutil  # noqa: F401 - before the RSS baseline
    import torch
    module = importlib.import_module(spec.module)
    side = (_Cbx if task["side"] == "cbx" else _Upstream)(task, module, spec)
    if task["side"] == "cbx":
        import cbx  # noqa: F401 - its import time belongs here, not in load
    out["import_s"] = time.perf_counter() - started
    torch.manual_seed(0)
    cuda = _cuda(device)
    if cuda is not None:
        cuda.cuda.init()
        cuda.cuda.reset_peak_memory_stats()
    gc.collect()
    rss_before = rss_mb()
    cuda_before = (_cuda_mb(device, "memory_allocated"), _cuda_mb(device, "memory_reserved"))

    tts = _measure_load(side, out, device)
    voice = side.prepare_voice(tts, out)
    _measure_generation(side, tts, voice, task, out)
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_cuda_mb"] = _cuda_mb(device, "max_memory_allocated")

    del tts      # this frame's reference goes first, or it would keep the model alive
    side.unload(out)
    out["unload_rss_retained_mb"] = rss_mb() - rss_before
    allocated, reserved = (_cuda_mb(device, "memory_allocated"),
                           _cuda_mb(device, "memory_reserved"))
    out["unload_cuda_allocated_mb"] = None if allocated is None else allocated - cuda_before[0]
    out["unload_cuda_reserved_mb"] = None if reserved is None else reserved - cuda_before[1]
    return out


def _measure_load(side: _Upstream, out: dict, device: str):
    t0 = time.perf_counter()
    tts = side.load()
    out["load_s"] = time.perf_counter() - t0
    out["load_peak_rss_mb"] = peak_rss_mb()
    out["load_peak_cuda_mb"] = _cuda_mb(device, "max_memory_allocated")
    out["loaded_rss_mb"] = rss_mb()
    weights = list(tts.t3.tfmr.parameters()) + list(tts.t3.speech_head.parameters())
    out["t3_weight_mb_per_token"] = sum(p.numel() * p.element_size() for p in weights) / 2**20
    return tts


def _measure_generation(side: _Upstream, tts, voice, task: dict, out: dict) -> None:
    """T3 decode speed and S3Gen's real-time factor on a short sentence, then the
    end-to-end text; decode speed counts every T3 call of this worker."""
    length_model = task.get("tokens_per_text_token")
    with _Probe(tts, length_model) as probe:
        side.short(tts, voice)
    run = probe.runs[0]
    out["prefill_s"] = run["prefill_s"]
    out["s3gen_rtf"] = run["audio_s"] / run["s3gen_s"]
    t3_runs = list(probe.runs)
    text = " ".join(task["e2e_sentences"])
    with _Probe(tts, length_model) as probe:
        side.e2e_unstreamed(tts, voice, text, out)
        unstreamed = len(probe.runs)
        side.e2e(tts, voice, text, out)
    out["e2e_t3_tokens"] = sum(r["t3_calls"] for r in probe.runs[unstreamed:])
    t3_runs += probe.runs
    out["t3_decode_steps"] = sum(r["t3_calls"] - 1 for r in t3_runs)
    decode_s = sum(r["decode_s"] for r in t3_runs)
    out["t3_tokens_per_s"] = out["t3_decode_steps"] / decode_s if decode_s else 0
    out["t3_weight_gb_per_s"] = out["t3_weight_mb_per_token"] * 2**20 * \
        out["t3_tokens_per_s"] / 1e9
    decoder = decoder_of(tts)
    if decoder is not None and any(r.get("graphed") for r in t3_runs):
        out["graph_capture_s"] = decoder.capture_s


def _worker_main(task_json: str) -> int:
    task = json.loads(task_json)
    context = _offline_context(task)
    with context:
        result = run_worker(task)
    sys.stdout.flush()
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


def _offline_context(task: dict):
    """The fixture's multilingual model needs the test suite's offline shim (pkuseg)."""
    import contextlib

    if task.get("fixture") and task["variant"] == "multilingual":
        from .fixture import offline_multilingual
        return offline_multilingual()
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- parent

def _fixture_root(variant: str, stop_after: int | None = None) -> Path:
    """Build (or reuse) the random-weight fixture of `variant` (stopping after
    `stop_after` tokens, default the test suite's)."""
    from .fixture import DEFAULT_STOP_AFTER, cached_checkpoint_root

    print(f"Using the random-weight fixture for {variant} (built once, then cached)...",
          file=sys.stderr)
    return cached_checkpoint_root((variant,), stop_after=stop_after or DEFAULT_STOP_AFTER)


def _resolve_model_root(model_dir: str | None, variant: str,
                        fixture_stop_after: int | None = None) -> tuple[Path, bool]:
    """(model root holding <variant>/, whether it is the random fixture)."""
    if model_dir is None:
        return _fixture_root(variant, fixture_stop_after), True
    root = Path(model_dir).expanduser().resolve()
    spec = get_variant(variant)
    if not (root / variant).is_dir() and all((root / f).is_file()
                                               for f in spec.required_files):
        root = root.parent if root.name == variant else root   # given the variant folder
    if not (root / variant).is_dir():
        raise SystemExit(f"{root} has no '{variant}' folder; pass the model root "
                         f"(the folder that holds '{variant}/').")
    return root, False


def make_clip(path: Path, seconds: float = CLIP_SECONDS) -> tuple[Path, str]:
    """A `seconds` reference clip: espeak-ng speech if installed, else a voice-like
    synthetic signal (pitch glide, formant-shaped harmonics, syllable envelope)."""
    import shutil

    import numpy as np
    import soundfile as sf

    n = int(seconds * SAMPLE_RATE)
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    wav, source = None, "synthetic"
    if exe:
        raw = path.with_name("espeak_raw.wav")
        proc = subprocess.run([exe, "-v", "en", "-s", "150", "-w", str(raw), CLIP_TEXT],
                              capture_output=True, timeout=120)
        if proc.returncode == 0 and raw.is_file():
            import librosa

            data, rate = sf.read(str(raw), dtype="float32", always_2d=False)
            data = data.mean(axis=1) if data.ndim > 1 else data
            data = librosa.resample(data, orig_sr=rate, target_sr=SAMPLE_RATE)
            gap = np.zeros(int(0.3 * SAMPLE_RATE), dtype=np.float32)
            wav = np.tile(np.concatenate([data, gap]), n // (len(data) + len(gap)) + 1)[:n]
            source = "espeak-ng"
    if wav is None:
        t = np.arange(n) / SAMPLE_RATE
        pitch = 130 * (1 + 0.15 * np.sin(2 * np.pi * 0.3 * t) + 0.02 * np.sin(2 * np.pi * 5.5 * t))
        phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
        f1 = 500 + 250 * np.sin(2 * np.pi * 1.7 * t)
        f2 = 1500 + 600 * np.sin(2 * np.pi * 1.1 * t)
        wav = sum((np.exp(-((k * pitch - f1) / 180) ** 2)
                   + 0.6 * np.exp(-((k * pitch - f2) / 250) ** 2) + 0.05 / k) * np.sin(k * phase)
                  for k in range(1, 30))
        wav = wav * (0.5 - 0.5 * np.cos(2 * np.pi * 4.0 * t))
    wav = 0.8 * wav / (np.abs(wav).max() + 1e-9)
    sf.write(str(path), wav.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    return path, source


def _prewarm(folder: Path) -> None:
    """Read the weight files once so both sides load from the OS file cache (the first
    side would otherwise pay the disk alone)."""
    for file in sorted(folder.iterdir()):
        if file.is_file():
            with open(file, "rb") as handle:
                while handle.read(1 << 24):
                    pass


def _run_side(task: dict, scratch: Path, index: int, timeout: float) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.REPO_ROOT),
                                                      env.get("PYTHONPATH")]))
    base = scratch / f"{index:02d}-{task['side']}"
    for var, sub in (("CBX_VOICE_DIR", "voices"), ("CBX_STATE_DIR", "state"),
                     ("CBX_OUTPUT_DIR", "outputs")):
        env[var] = str(base / sub)       # a fresh library: "first use" is a real first use
    env.setdefault("TQDM_DISABLE", "1")
    proc = subprocess.run([sys.executable, "-m", "cbx.dev.bench", "--worker", json.dumps(task)],
                          capture_output=True, text=True, env=env, cwd=str(paths.REPO_ROOT),
                          timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
    raise RuntimeError(f"The {task['side']} worker failed (exit {proc.returncode}):\n{tail}")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(runs: dict, meta: dict) -> dict:
    """Medians per side, ratios cbx/upstream, targets met, notes."""
    medians = {side: {key: _median([r.get(key) for r in results])
                      for key in sorted({k for r in results for k in r if k != "side"})
                      if not isinstance(results[0].get(key), bool)}
               for side, results in runs.items()}
    ratios, met = {}, {}
    for key, (_label, _unit, better, target) in FIGURES.items():
        mine = medians["cbx"].get(key)
        if key in OWN_RATIOS:
            if mine is not None:
                met[key] = mine <= target if better == "lower" else mine >= target
            continue
        theirs = medians["upstream"].get(CROSS_RATIOS.get(key, key))
        if mine is None or not theirs:
            continue
        ratios[key] = mine / theirs
        if target is not None:
            met[key] = ratios[key] <= target if better == "lower" else ratios[key] >= target
    notes = list(meta.pop("notes", []))
    if meta.get("tokens_per_text_token"):
        notes.append(
            f"Length model: a random-weight fixture that never stops by itself, every "
            f"generate() of both sides capped at {meta['tokens_per_text_token']:g} speech "
            f"tokens per text token, so the work grows with the text as with real weights "
            f"(the fixture's English tokenizer has one token per character).")
    elif meta.get("fixture"):
        notes.append(
            "Random-weight fixture: every generate() yields the same 8 speech tokens whatever "
            "the text, so upstream's one call for the 5 sentences costs about one cbx chunk. "
            "The time-to-first-audio ratio here therefore understates what real weights give "
            "(there upstream's one call grows with the text; cbx's first chunk does not). "
            "Measure on real weights with --model-dir for those figures.")
    notes.append("Upstream runs in float32 in every run; --dtype applies to cbx only.")
    notes.append("Voice reuse ratio: cbx loading a saved voice's conditionals vs upstream "
                 "computing them (upstream has no saved voices). First-audio ratios: cbx's "
                 "first chunk, and its first streamed block (the same run, speak() with "
                 "on_block, as the dashboard calls it), vs upstream's single generate() "
                 "call for the whole text. Streamed total / speak() total: cbx makes the "
                 "same text twice in the same worker, plain speak() first.")
    released = [r.get("unload_released") for r in runs["cbx"]]
    return {**meta, "cbx": medians["cbx"], "upstream": medians["upstream"],
            "ratios": ratios, "targets": {k: FIGURES[k][3] for k in met}, "targets_met": met,
            "cbx_unload_released": all(released), "notes": notes}


def _fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("MiB",):
        return f"{value:,.0f}"
    if unit == "":
        return f"{value:g}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"


def format_table(summary: dict) -> str:
    rows = [("Figure (median of %d)" % summary["repeats"], "cbx", "upstream",
             "cbx / upstream", "target")]
    for key, (label, unit, better, target) in FIGURES.items():
        mine, theirs = summary["cbx"].get(key), summary["upstream"].get(key)
        if mine is None and theirs is None:
            continue
        ratio = summary["ratios"].get(key)
        ratio_text = "-" if ratio is None else \
            (f"{ratio:.2f}x" if ratio >= 0.1 else
             f"{ratio:.2g}x ({1 / ratio:,.0f}x {'faster' if unit == 's' else 'less'})")
        if key in CROSS_RATIOS and ratio is not None:
            ratio_text += f" (vs upstream {FIGURES[CROSS_RATIOS[key]][0].split(': ')[-1]})"
        target_text = "-" if target is None else (f"<= {target}x" if better == "lower"
                                                  else f">= {target}x")
        if key in summary["targets_met"]:
            target_text += " ok" if summary["targets_met"][key] else " MISSED"
        if label.startswith("5 sentences"):
            n = summary.get("e2e_sentences", 5)
            label = label.replace("5 sentences", f"{n} sentence{'s' if n != 1 else ''}")
        name = f"{label} ({unit})" if unit else label
        rows.append((name, _fmt(mine, unit), _fmt(theirs, unit), ratio_text, target_text))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    head = (f"cbx vs upstream chatterbox: {summary['variant']} on {summary['device']} "
            f"({summary['dtype']} for cbx), {summary['machine']}, "
            f"{'random-weight fixture' if summary['fixture'] else summary['model_root']}")
    return "\n".join([head, ""] + lines + [""] + [f"Note: {n}" for n in summary["notes"]])


def describe_machine(device: str) -> str:
    """E.g. '2-core x86_64 CPU, no GPU'."""
    cores = os.cpu_count() or 0
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            gpu = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    except ImportError:
        pass
    return f"{cores}-core {platform.machine()} CPU, {gpu}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cbx.dev.bench",
        description="Measure cbx against upstream chatterbox (from_local, "
                    "prepare_conditionals, generate) in one interleaved run: load time "
                    "and memory, voice preparation, T3 tokens/s, vocoder speed, time to "
                    "first audio, unload. Prints a table, then one JSON line.")
    parser.add_argument("--model-dir", default=None,
                        help="model root holding <variant>/ (default: the random-weight "
                             "test fixture, built on first use)")
    parser.add_argument("--variant", default="original", choices=sorted(VARIANTS))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32",
                        choices=DTYPES,
                        help="cbx's T3 precision (upstream always float32)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="repetitions per side (medians are reported)")
    parser.add_argument("--clip", default=None,
                        help="reference clip (default: a generated 10 s clip)")
    parser.add_argument("--sentences", type=int, default=len(E2E_SENTENCES),
                        choices=range(1, len(E2E_SENTENCES) + 1), metavar="1-5",
                        help="sentences in the end-to-end text (default 5)")
    parser.add_argument("--max-chunk-chars", type=int, default=None,
                        help="cbx chunk size for the end-to-end text (default: cbx's)")
    parser.add_argument("--fixture-length", type=float, default=None, metavar="R",
                        help="with the fixture (original variant): use one that never "
                             "stops by itself and cap every generate() of both sides at R "
                             "speech tokens per text token (about 1.7 for real English "
                             "speech), so first-audio and total times grow with the text")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds one worker may take")
    parser.add_argument("--json-only", action="store_true",
                        help="print only the JSON line")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker is not None:
        return _worker_main(args.worker)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.fixture_length is not None:
        if args.model_dir is not None or args.variant != "original":
            parser.error("--fixture-length applies to the random-weight fixture of the "
                         "original variant only (no --model-dir, --variant original)")
        if not args.fixture_length > 0:
            parser.error("--fixture-length must be a positive number of tokens")
    summary = run_all(args)
    if not args.json_only:
        print(format_table(summary))
    print(json.dumps(summary, separators=(",", ":")))
    return 0


def run_all(args: argparse.Namespace) -> dict:
    """Every repetition of both sides, alternating which goes first; the summary."""
    from ..text import DEFAULT_MAX_CHARS

    def say(message: str) -> None:
        if not args.json_only:
            print(message, file=sys.stderr, flush=True)

    root, fixture = _resolve_model_root(args.model_dir, args.variant,
                                        NEVER_STOPS if args.fixture_length else None)
    folder = root / args.variant
    with tempfile.TemporaryDirectory(prefix="cbx_bench_") as tmp:
        scratch = Path(tmp)
        if args.clip:
            clip, clip_source = Path(args.clip).expanduser().resolve(), "given"
        else:
            clip, clip_source = make_clip(scratch / "reference_10s.wav")
        _prewarm(folder)
        task = {"variant": args.variant, "device": args.device, "dtype": args.dtype,
                "folder": str(folder), "model_root": str(root), "clip": str(clip),
                "fixture": fixture, "e2e_sentences": list(E2E_SENTENCES[:args.sentences]),
                "max_chunk_chars": args.max_chunk_chars or DEFAULT_MAX_CHARS,
                "tokens_per_text_token": args.fixture_length}
        runs = {"cbx": [], "upstream": []}
        for rep in range(args.repeats):
            order = ("cbx", "upstream") if rep % 2 == 0 else ("upstream", "cbx")
            for side in order:
                say(f"[{rep + 1}/{args.repeats}] {side}: fresh process ...")
                started = time.perf_counter()
                runs[side].append(_run_side({**task, "side": side}, scratch,
                                            2 * rep + order.index(side), args.timeout))
                say(f"[{rep + 1}/{args.repeats}] {side}: done in "
                    f"{time.perf_counter() - started:.0f} s")
    meta = {"machine": describe_machine(args.device), "variant": args.variant,
            "device": args.device, "dtype": args.dtype, "repeats": args.repeats,
            "fixture": fixture, "model_root": str(root), "clip_source": clip_source,
            "e2e_sentences": args.sentences, "max_chunk_chars": task["max_chunk_chars"],
            "tokens_per_text_token": args.fixture_length,
            "python": platform.python_version(), "notes": []}
    summary = summarise(runs, meta)
    summary["runs"] = runs
    return summary


if __name__ == "__main__":
    sys.exit(main())

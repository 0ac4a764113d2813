"""dtype="int8": T3's transformer with dynamically quantized int8 Linear layers, on the
CPU only (cbx/engine/fastload.py quantize_int8, cbx/envcheck.py check_precision).

What is tested here is correctness: where int8 is allowed, that the quantized model
loads without keeping its float32 weights, decodes through cbx's own loop, agrees with
float32 under teacher forcing, speaks, and says so in its result.  Its speed against
float32 is measured by `python -m cbx.dev.bench_decode --dtypes int8` (README,
Performance), not asserted here: a timed assertion on this shared 2-core machine would
fail by chance.
"""
from __future__ import annotations

import ctypes
import gc
import json
import sys

import psutil
import pytest
import torch

from cbx import envcheck
from cbx.dev import bench_decode, fixture
from cbx.engine import decode, fastload
from cbx.errors import InvalidSetting
from cbx.files import sidecar_path
from cbx.variants import get_variant

FIXTURE_TOKENS = fixture.DEFAULT_STOP_AFTER + 1      # the speech tokens and the stop token


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _trim_heap() -> None:
    gc.collect()
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# --------------------------------------------------------------------------- where

def test_int8_runs_on_the_cpu_only(monkeypatch):
    monkeypatch.setattr(envcheck, "cpu_has", lambda name: True)
    envcheck.check_precision("cpu", "int8")
    for device in ("cuda", "cuda:1", "mps"):
        with pytest.raises(InvalidSetting) as info:
            envcheck.check_precision(device, "int8")
        assert "CPU only" in info.value.message and device in info.value.message
        assert "device='cpu'" in info.value.solution and "float16" in info.value.solution


def test_int8_needs_the_cpu_it_was_measured_faster_on(monkeypatch):
    monkeypatch.setattr(envcheck, "cpu_has", lambda name: name != "avx2")
    with pytest.raises(InvalidSetting) as info:
        envcheck.check_precision("cpu", "int8")
    assert "AVX2" in info.value.message and "dtype='float32'" in info.value.solution


def test_load_refuses_int8_where_it_is_not_allowed_and_keeps_what_was_loaded(monkeypatch):
    import cbx
    from cbx.engine.manager import get_manager

    monkeypatch.setattr(envcheck, "cpu_has", lambda name: False)
    before = get_manager().describe()
    with pytest.raises(InvalidSetting):
        cbx.load("original", device="cpu", dtype="int8")
    after = get_manager().describe()
    assert (after.state, after.dtype) == (before.state, before.dtype)


# --------------------------------------------------------------------------- quantizing

@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_every_linear_layer_of_either_transformer_becomes_int8(kind):
    """Original and multilingual T3 are Llama (nn.Linear); Turbo's is GPT-2, whose
    Conv1D layers must become int8 too, computing what they computed."""
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear
    from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaModel(LlamaConfig(hidden_size=64, intermediate_size=128,
                                       num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=4, vocab_size=32))
    else:
        model = GPT2Model(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=32,
                                     n_positions=64))
    model.eval()
    inputs = torch.randn(2, 7, 64)
    with torch.inference_mode():
        expected = model(inputs_embeds=inputs).last_hidden_state
    fastload.quantize_int8(model)
    layers = list(model.modules())
    assert not any(type(m) is torch.nn.Linear or isinstance(m, Conv1D) for m in layers)
    assert sum(isinstance(m, Int8Linear) for m in layers) == (14 if kind == "llama" else 8)
    with torch.inference_mode():
        got = model(inputs_embeds=inputs).last_hidden_state
    assert torch.isfinite(got).all()
    error = (got - expected).norm() / expected.norm()
    assert error < 0.05, f"relative error {error:.3f}"


# --------------------------------------------------------------------------- the fixture

@pytest.fixture(scope="module")
def reference(checkpoint_root):
    """float32's tokens (the cbx loop, seed 0), teacher-forced logits and weight sizes
    on the fixture; the float32 model is gone (and its heap returned) afterwards."""
    tts = fastload.load_tts(get_variant("original"), checkpoint_root / "original", "cpu")
    kwargs = bench_decode._prompt(tts)
    decoder = decode.Decoder(tts.t3, fast=True)
    torch.manual_seed(0)
    with decoder.chunk(decode.UPSTREAM_MAX_TOKENS):
        tokens = decoder.inference(**kwargs)[0].tolist()
    with torch.inference_mode():
        prompt, fed = bench_decode.forced_inputs(tts.t3, kwargs, tokens)
        logits = [row.clone() for row in bench_decode.cbx_logits(tts.t3, prompt, fed)]
    weight_bytes = sum(t.numel() * t.element_size()
                       for part in (tts.t3, tts.s3gen, tts.ve)
                       for t in [*part.parameters(), *part.buffers()])
    linear_bytes = sum(m.weight.numel() * m.weight.element_size()
                       for m in tts.t3.tfmr.modules() if isinstance(m, torch.nn.Linear))
    ref = {"tokens": tokens, "logits": logits, "weight_bytes": weight_bytes,
           "linear_bytes": linear_bytes, "cfg_weight": kwargs["cfg_weight"]}
    del tts, decoder, kwargs, prompt, fed
    _trim_heap()
    return ref


@pytest.fixture(scope="module")
def int8_model(model_env, reference):
    """The fixture loaded with cbx.load(dtype="int8"), and the RSS the load added."""
    import cbx
    from cbx.engine.manager import get_manager

    if not envcheck.cpu_has(envcheck.INT8_CPU_PROBE):
        pytest.skip("this CPU is not one int8 is allowed on")
    get_manager().unload()
    _trim_heap()
    before = _rss()
    info = cbx.load("original", device="cpu", dtype="int8")
    return get_manager(), info, _rss() - before


@pytest.mark.model
def test_int8_load_quantizes_the_transformer_and_frees_its_float_weights(int8_model,
                                                                         reference):
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    manager, info, added = int8_model
    assert info.dtype == "int8" and manager.describe().dtype == "int8"
    t3 = manager.loaded.tts.t3
    layers = list(t3.tfmr.modules())
    assert sum(isinstance(m, Int8Linear) for m in layers) == 7 * len(t3.tfmr.layers)
    assert not any(type(m) is torch.nn.Linear for m in layers)
    assert t3.speech_head.weight.dtype == torch.float32          # kept: see quantize_int8
    assert {p.dtype for p in manager.loaded.tts.s3gen.parameters()} == {torch.float32}
    # RSS does not hold both: the load adds less than halfway from the int8 model's
    # size (int8 weights are a quarter of the float32 ones they replace) to float32's
    int8_size = reference["weight_bytes"] - reference["linear_bytes"] * 3 / 4
    halfway = (int8_size + reference["weight_bytes"]) / 2
    assert added < halfway, f"the int8 load added {added / 2**30:.2f} GiB, more than " \
                            f"{halfway / 2**30:.2f}"


@pytest.mark.model
def test_int8_logits_follow_float32_under_teacher_forcing(int8_model, reference):
    """cbx's own static-cache step runs the int8 transformer; fed float32's tokens, its
    guided argmax agrees with float32's at most positions."""
    manager = int8_model[0]
    tts = manager.loaded.tts
    kwargs = bench_decode._prompt(tts)
    with torch.inference_mode():
        prompt, fed = bench_decode.forced_inputs(tts.t3, kwargs, reference["tokens"])
        worst, agreement = bench_decode.compare_logits(
            reference["logits"], bench_decode.cbx_logits(tts.t3, prompt, fed),
            reference["cfg_weight"])
    assert len(reference["tokens"]) == FIXTURE_TOKENS
    assert agreement >= 0.75, f"argmax agrees at {agreement:.0%}, max diff {worst:.3f}"
    assert 0 < worst < 5.0


@pytest.mark.model
def test_int8_speaks_and_its_result_says_int8(int8_model, tmp_path):
    import cbx

    manager = int8_model[0]
    t3 = manager.loaded.tts.t3
    result = cbx.speak("Int eight speaks.", seed=3)     # keeps the loaded int8 model
    assert manager.loaded.tts.t3 is t3 and result.dtype == "int8"
    assert len(result.wav) == fixture.expected_samples("original")
    assert torch.isfinite(torch.from_numpy(result.wav)).all()
    saved = result.save(tmp_path / "take.wav")
    sidecar = json.loads(sidecar_path(saved).read_text("utf-8"))
    assert sidecar["dtype"] == "int8"

"""cbx.engine.fastload builds the same model as chatterbox's from_local, bit for bit.

Fast unit tests cover the safetensors reader and the fall-backs; the `model` tests load
the random-weight fixture both ways and compare every parameter and buffer (persistent
and not), the built-in voice, the tokenizer and a seeded generation; a checkpoint that
lacks keys (upstream's S3Gen load is strict=False) must not leave garbage memory; and
half precision (bf16 on CPU) must run through cbx.speak.
"""
from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cbx.engine import fastload  # noqa: E402
from cbx.variants import get_variant  # noqa: E402
from cbx.dev import fixture  # noqa: E402


# --------------------------------------------------------------------------- reader

def test_reader_matches_safetensors_for_every_dtype(tmp_path):
    from safetensors.torch import load_file, save_file

    gen = torch.Generator().manual_seed(0)
    tensors = {
        "f32": torch.randn(3, 5, generator=gen),
        "f16": torch.randn(7, generator=gen).half(),
        "bf16": torch.randn(2, 2, 3, generator=gen).bfloat16(),
        "f64": torch.randn(4, generator=gen).double(),
        "i64": torch.arange(-5, 6),
        "i32": torch.arange(9, dtype=torch.int32).reshape(3, 3),
        "u8": torch.arange(200, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    ours = fastload.read_safetensors(path, torch.device("cpu"))
    reference = load_file(str(path))
    assert set(ours) == set(reference) == set(tensors)
    for name, value in reference.items():
        assert ours[name].dtype == value.dtype and ours[name].shape == value.shape, name
        assert torch.equal(ours[name], value), name
    # converted on the way when asked (integers and bools untouched)
    half = fastload.read_safetensors(path, torch.device("cpu"), float_dtype=torch.bfloat16)
    assert half["f32"].dtype == torch.bfloat16 and half["i64"].dtype == torch.int64
    assert torch.equal(half["f32"], tensors["f32"].bfloat16())


def test_reader_refuses_a_truncated_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "whole.safetensors"
    save_file({"w": torch.ones(1000)}, str(path))
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        fastload.read_safetensors(cut, torch.device("cpu"))
    (tmp_path / "header.safetensors").write_bytes(data[:20])
    with pytest.raises(ValueError, match="truncated"):
        fastload.read_safetensors(tmp_path / "header.safetensors", torch.device("cpu"))


def test_reader_leaves_no_file_mapping(tmp_path):
    """The weights must be plain memory: the file can be replaced while loaded."""
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"w": torch.arange(16, dtype=torch.float32)}, str(path))
    tensors = fastload.read_safetensors(path, torch.device("cpu"))
    path.write_bytes(b"\0" * 8)       # overwrite in place (Windows: fails if mapped)
    os.remove(path)
    assert torch.equal(tensors["w"], torch.arange(16, dtype=torch.float32))


def test_build_skips_init_and_records_what_it_skipped():
    linear, skipped = fastload._build(lambda: torch.nn.Linear(4, 3))
    assert skipped == {"weight", "bias"}
    # after the build, torch's init functions are the real ones again
    layer = torch.nn.Linear(64, 64)
    assert layer.weight.std() > 0.01


def test_tied_weights_are_not_fast_loaded():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(2, 2)
            self.b = self.a

    with pytest.raises(fastload.FastLoadUnsupported, match="tied"):
        fastload._build(Tied)


def test_fallback_to_from_local_is_logged(monkeypatch, caplog, tmp_path):
    spec = get_variant("original")
    import chatterbox.tts

    calls = []
    monkeypatch.setattr(chatterbox.tts.ChatterboxTTS, "from_local",
                        classmethod(lambda cls, folder, device: calls.append((folder, device))
                                    or "upstream"))

    def unsupported(*args, **kwargs):
        raise fastload.FastLoadUnsupported("test reason")

    monkeypatch.setattr(fastload, "fast_from_local", unsupported)
    with caplog.at_level(logging.WARNING, logger="cbx.engine.fastload"):
        assert fastload.load_tts(spec, tmp_path, "cpu") == "upstream"
    assert "test reason" in caplog.text and calls == [(tmp_path, "cpu")]

    monkeypatch.setenv(fastload.FAST_LOAD_ENV, "0")
    monkeypatch.setattr(fastload, "fast_from_local", lambda *a, **k: pytest.fail("used"))
    assert fastload.load_tts(spec, tmp_path, "cpu") == "upstream"


def test_unknown_chatterbox_version_is_not_fast_loaded(monkeypatch, tmp_path):
    monkeypatch.setattr(fastload, "_chatterbox_version", lambda: "9.9.9")
    with pytest.raises(fastload.FastLoadUnsupported, match="9.9.9"):
        fastload.fast_from_local("original", tmp_path, "cpu")


# --------------------------------------------------------------------------- models

def _tensors(module) -> dict:
    """Every parameter and buffer, persistent or not, with its requires_grad flag."""
    out = {f"param:{n}": (t, t.requires_grad) for n, t in module.named_parameters()}
    out.update({f"buffer:{n}": (t, False) for n, t in module.named_buffers()})
    out.update({f"state:{n}": (t, False) for n, t in module.state_dict().items()})
    return out


def _assert_same_model(fast, upstream):
    assert type(fast) is type(upstream)
    for attr in ("t3", "s3gen", "ve"):
        ours, theirs = getattr(fast, attr), getattr(upstream, attr)
        a, b = _tensors(ours), _tensors(theirs)
        assert a.keys() == b.keys(), (attr, sorted(set(a) ^ set(b))[:10])
        for name, (tensor, grad) in b.items():
            mine, my_grad = a[name]
            assert mine.dtype == tensor.dtype and mine.device == tensor.device, (attr, name)
            assert my_grad == grad, (attr, name)
            assert torch.equal(mine, tensor), (attr, name)
        assert [m.training for m in ours.modules()] == [m.training for m in theirs.modules()]
    assert fast.device == upstream.device and fast.sr == upstream.sr
    assert type(fast.tokenizer) is type(upstream.tokenizer)
    assert (fast.conds is None) == (upstream.conds is None)
    if upstream.conds is not None:
        for key, value in vars(upstream.conds.t3).items():
            mine = getattr(fast.conds.t3, key)
            assert torch.equal(mine, value) if torch.is_tensor(value) else mine == value, key
        assert fast.conds.gen.keys() == upstream.conds.gen.keys()
        for key, value in upstream.conds.gen.items():
            mine = fast.conds.gen[key]
            assert torch.equal(mine, value) if torch.is_tensor(value) else mine == value, key


def _same_generation(fast, upstream, text, **kwargs):
    outputs = []
    for model in (fast, upstream):
        torch.manual_seed(1234)
        outputs.append(model.generate(text, **kwargs).numpy())
    assert outputs[0].shape == outputs[1].shape
    assert np.array_equal(outputs[0], outputs[1])


@pytest.mark.model
def test_original_equals_from_local_bit_for_bit(checkpoint_root):
    from chatterbox.tts import ChatterboxTTS

    folder = checkpoint_root / "original"
    upstream = ChatterboxTTS.from_local(folder, "cpu")
    fast = fastload.fast_from_local("original", folder, "cpu")
    _assert_same_model(fast, upstream)
    assert fast.tokenizer.text_to_tokens("Hello there.").tolist() == \
        upstream.tokenizer.text_to_tokens("Hello there.").tolist()
    _same_generation(fast, upstream, "Hello there.")


@pytest.mark.model
def test_multilingual_equals_from_local_bit_for_bit(multilingual_root):
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS

    folder = multilingual_root / "multilingual"
    upstream = ChatterboxMultilingualTTS.from_local(folder, "cpu")
    fast = fastload.fast_from_local("multilingual", folder, "cpu")
    _assert_same_model(fast, upstream)
    _same_generation(fast, upstream, "Bonjour.", language_id="fr")


@pytest.mark.model
def test_turbo_equals_from_local_bit_for_bit(turbo_root):
    from chatterbox.tts_turbo import ChatterboxTurboTTS

    folder = turbo_root / "turbo"
    upstream = ChatterboxTurboTTS.from_local(folder, "cpu")
    fast = fastload.fast_from_local("turbo", folder, "cpu")
    assert not hasattr(fast.t3.tfmr, "wte")
    _assert_same_model(fast, upstream)
    _same_generation(fast, upstream, "Hello there.")


@pytest.mark.model
def test_keys_missing_from_a_checkpoint_are_initialised_like_upstream(checkpoint_root,
                                                                      tmp_path, caplog):
    """Upstream loads S3Gen with strict=False: a missing parameter keeps the
    constructor's random init and a missing computed buffer its computed value; the
    fast path must give the same kinds of values, never uninitialised memory."""
    from chatterbox.tts import ChatterboxTTS
    from safetensors.torch import load_file, save_file

    source = checkpoint_root / "original"
    folder = tmp_path / "original"
    folder.mkdir()
    for name in ("ve.safetensors", "t3_cfg.safetensors", "tokenizer.json", "conds.pt"):
        try:
            os.symlink(source / name, folder / name)
        except OSError:      # Windows without the symlink privilege
            shutil.copyfile(source / name, folder / name)
    state = load_file(str(source / "s3gen.safetensors"))
    dropped_param = "flow.encoder.embed.out.0.weight"
    dropped_buffer = "tokenizer._mel_filters"
    assert dropped_param in state and dropped_buffer in state
    del state[dropped_param], state[dropped_buffer]
    save_file(state, str(folder / "s3gen.safetensors"))
    del state

    with caplog.at_level(logging.INFO, logger="cbx.engine.fastload"):
        fast = fastload.fast_from_local("original", folder, "cpu")
    assert dropped_param in caplog.text
    upstream = ChatterboxTTS.from_local(folder, "cpu")
    ours, theirs = fast.s3gen.state_dict(), upstream.s3gen.state_dict()
    assert torch.equal(ours[dropped_buffer], theirs[dropped_buffer])
    weight, reference = ours[dropped_param], theirs[dropped_param]
    assert torch.isfinite(weight).all()
    # random init like upstream's: same distribution (std within 10%), not zeros/garbage
    assert weight.std().item() == pytest.approx(reference.std().item(), rel=0.1)
    assert weight.abs().max().item() <= reference.abs().max().item() * 1.5
    for key in theirs:
        if key != dropped_param:
            assert torch.equal(ours[key], theirs[key]), key


# --------------------------------------------------------------------------- half precision

@pytest.mark.model
def test_bfloat16_speaks_through_cbx(checkpoint_root, monkeypatch, speech_wav):
    import cbx
    from cbx import envcheck
    from cbx.engine.manager import get_manager

    # the mechanics, whatever this CPU is (a CPU without AVX512-BF16/AMX refuses bf16:
    # tests/test_envcheck.py)
    monkeypatch.setattr(envcheck, "cpu_has", lambda name: True)
    manager = get_manager()
    manager.unload()
    try:
        cbx.load("original", device="cpu", dtype="bfloat16")
        t3 = manager.loaded.tts.t3
        assert {p.dtype for p in t3.parameters()} == {torch.bfloat16}
        assert t3.tfmr.rotary_emb.inv_freq.dtype == torch.float32   # positions not rounded
        s3gen = manager.loaded.tts.s3gen
        estimator = s3gen.flow.decoder.estimator
        assert {p.dtype for p in estimator.parameters()} == {torch.bfloat16}
        estimator_ids = {id(p) for p in estimator.parameters()}
        assert {p.dtype for p in s3gen.parameters() if id(p) not in estimator_ids} \
            == {torch.float32}                     # tokenizer, encoder, vocoder stay fp32
        estimator_inputs = []
        estimator_forward = estimator.forward      # upstream calls .forward (no hooks)

        def recording_forward(*args, **kwargs):
            estimator_inputs.append(kwargs["x"].dtype)
            return estimator_forward(*args, **kwargs)

        monkeypatch.setattr(estimator, "forward", recording_forward)

        seen = []
        t3.tfmr.register_forward_hook(lambda _m, _i, out: seen.append(
            out.last_hidden_state.dtype))
        voice = cbx.voice(speech_wav)
        # 0.7 is not exact in bf16: upstream rebuilds float32 conditionals for it
        result = cbx.speak("Half precision works.", voice=voice, seed=5, exaggeration=0.7,
                           device="cpu", dtype="bfloat16")
        assert manager.loaded.tts.t3 is t3          # the same model, not a float32 reload
        assert seen and set(seen) == {torch.bfloat16}
        assert estimator_inputs and set(estimator_inputs) == {torch.bfloat16}
        assert result.dtype == "bfloat16" and result.wav.dtype == np.float32
        assert len(result.wav) == fixture.expected_samples("original")
        assert np.isfinite(result.wav).all() and np.abs(result.wav).max() > 0
        cached = next(iter(manager.loaded.conds_cache.values()))
        assert cached.t3.speaker_emb.dtype == torch.float32   # the cache stays float32
        # no device/dtype given: speak() keeps the loaded bf16 model instead of reloading
        builtin = cbx.speak("And the built in voice.", seed=6)
        assert manager.loaded.tts.t3 is t3 and builtin.dtype == "bfloat16"
        assert len(builtin.wav) == fixture.expected_samples("original")
    finally:
        manager.unload()


def test_cuda_attention_context_leaves_out_cudnn_only_on_cuda():
    from cbx.engine.fastload import attention_kernels

    flags = torch.backends.cuda
    assert flags.cudnn_sdp_enabled()
    with attention_kernels("cuda:0"):
        assert not flags.cudnn_sdp_enabled()
        assert flags.flash_sdp_enabled() and flags.mem_efficient_sdp_enabled() \
            and flags.math_sdp_enabled()
    assert flags.cudnn_sdp_enabled()                 # restored on exit
    with attention_kernels("cpu"):
        assert flags.cudnn_sdp_enabled()


@pytest.mark.model
def test_generation_runs_inside_the_attention_context(checkpoint_root, monkeypatch):
    """speak() wraps upstream generate() in attention_kernels(the model's device); the
    CUDA context is forced here (its flags are global, CPU compute ignores them) to see
    that the token model runs with cuDNN attention switched off."""
    import cbx
    from cbx.engine import fastload, manager as managermod, synth

    asked, seen = [], []

    def spy(device):
        asked.append(device)
        return fastload.attention_kernels("cuda")

    monkeypatch.setattr(synth, "attention_kernels", spy)
    manager = managermod.get_manager()
    try:
        cbx.load("original", device="cpu")
        manager.loaded.tts.t3.tfmr.register_forward_pre_hook(
            lambda _m, _a: seen.append(torch.backends.cuda.cudnn_sdp_enabled()))
        cbx.speak("One sentence. And a second one.", seed=1, first_chunk_chars=20)
    finally:
        manager.unload()
    assert asked == ["cpu", "cpu"]                   # one context per chunk
    assert seen and not any(seen)
    assert torch.backends.cuda.cudnn_sdp_enabled()

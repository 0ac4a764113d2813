"""Load a Chatterbox model without building a random model first.

Why: chatterbox's ``from_local`` constructs every module with random initialisation
(seconds of CPU for ~800 M parameters) and then copies the checkpoint into it, so two
copies of the weights are in memory at the peak.  Here the same upstream modules are
built with initialisation switched off (``transformers.initialization.no_init_weights``)
and the checkpoint tensors are put into them in place (``load_state_dict(assign=True)``),
loaded straight onto the target device.  The model object is then made by the upstream
class's own constructor, exactly as ``from_local`` does after loading, so generation
code, defaults and audio are upstream's (tests/test_fastload.py checks every parameter
and buffer bit for bit).

Safety: a key the checkpoint lacks (upstream's S3Gen load is ``strict=False``) must
not be left as uninitialised memory.  Init calls skipped while building are recorded;
if a missing key is a parameter, or a tensor an init function was skipped on, or sits
inside a transformers model, that module is built again *with* initialisation (as
upstream does) before the checkpoint goes in.  Missing buffers the constructor computes
itself (mel filters, windows) are already right.  What cannot be vouched for (tied
weights, an unknown chatterbox version) falls back to upstream ``from_local``, logged.

Layer 3 helper of the manager; torch, chatterbox and transformers are imported inside
functions.  Set ``CBX_FAST_LOAD=0`` to always use upstream ``from_local``.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from pathlib import Path

from ..variants import BUILTIN_VOICE_FILE, get_variant

log = logging.getLogger(__name__)

FAST_LOAD_ENV = "CBX_FAST_LOAD"
# The recipes below mirror these chatterbox-tts versions' from_local line by line.
SUPPORTED_CHATTERBOX = ("0.1.7",)


class FastLoadUnsupported(Exception):
    """The fast path cannot guarantee upstream's result; the caller uses from_local."""


# Which parts each variant's from_local loads, in its order, and whether it loads them
# strictly (chatterbox-tts 0.1.7); the file of each part is in the variant table.
RECIPES = {
    "original": (("ve", True), ("t3", True), ("s3gen", False)),
    "multilingual": (("ve", True), ("t3", True), ("s3gen", True)),
    "turbo": (("ve", True), ("t3", True), ("s3gen", True)),
}


def enabled() -> bool:
    return os.environ.get(FAST_LOAD_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def load_tts(spec, folder, device: str, t3_dtype: str | None = None):
    """The upstream TTS object for variant `spec` from `folder` on `device`.

    Uses the fast path when it applies, else (logged) the upstream ``from_local``.
    `t3_dtype` ("float16"/"bfloat16") lets the fast path convert T3's weights as they
    are read, so a GPU never holds them in float32; the caller still casts the model
    (cast_half below), which covers the from_local path too.  Errors a damaged
    checkpoint causes are raised as upstream would raise them.
    """
    cls = getattr(importlib.import_module(spec.module), spec.class_name)
    if not enabled():
        return cls.from_local(folder, device)
    try:
        return fast_from_local(spec.name, folder, device, t3_dtype=t3_dtype)
    except FastLoadUnsupported as exc:
        log.warning("Fast load of %s not used (%s); loading with chatterbox's from_local.",
                    spec.name, exc)
        return cls.from_local(folder, device)


def fast_from_local(variant: str, folder, device: str, t3_dtype: str | None = None):
    """Equivalent of ``<variant class>.from_local(folder, device)`` (chatterbox 0.1.7);
    with `t3_dtype`, T3's parameters arrive in that dtype (read, converted, then moved)."""
    import torch

    version = _chatterbox_version()
    if version not in SUPPORTED_CHATTERBOX:
        raise FastLoadUnsupported(f"chatterbox-tts {version} is not one of "
                                  f"{', '.join(SUPPORTED_CHATTERBOX)}")
    if variant not in RECIPES:
        raise FastLoadUnsupported(f"no recipe for variant {variant!r}")
    folder = Path(folder)
    device_obj = torch.device(device)
    # Same rule as upstream: CPU/MPS get the checkpoint mapped to CPU.
    map_location = torch.device("cpu") if device in ("cpu", "mps") else None

    build = _builders(variant)
    modules = {}
    spec = get_variant(variant)
    for attr, strict in RECIPES[variant]:
        float_dtype = getattr(torch, t3_dtype) if t3_dtype and attr == "t3" else None
        module = _load_part(build[attr], folder / spec.part_files[attr], strict, device_obj,
                            float_dtype)
        if variant == "turbo" and attr == "t3":
            del module.tfmr.wte          # from_local: turbo feeds embeddings, not ids
        modules[attr] = module.to(device).eval()

    module = importlib.import_module(spec.module)
    tokenizer = _tokenizer(spec, folder)
    conds = None
    builtin_voice = folder / BUILTIN_VOICE_FILE
    if builtin_voice.exists():
        conds = module.Conditionals.load(builtin_voice, map_location=map_location).to(device)
    cls = getattr(module, spec.class_name)
    return cls(modules["t3"], modules["s3gen"], modules["ve"], tokenizer, device, conds=conds)


def _chatterbox_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chatterbox-tts")
    except PackageNotFoundError:
        return "unknown"


def _builders(variant: str) -> dict:
    """Constructors of the three modules with the hyper-parameters from_local uses."""
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.models.voice_encoder import VoiceEncoder

    if variant == "original":
        t3 = T3
        s3gen = S3Gen
    elif variant == "multilingual":
        def t3():
            return T3(T3Config.multilingual())
        s3gen = S3Gen
    else:
        def t3():
            return T3(turbo_t3_config())

        def s3gen():
            return S3Gen(meanflow=True)
    return {"ve": VoiceEncoder, "t3": t3, "s3gen": s3gen}


def turbo_t3_config():
    """T3 hyper-parameters of Turbo, set exactly as ChatterboxTurboTTS.from_local sets them
    (upstream has no named config for them)."""
    from chatterbox.models.t3.modules.t3_config import T3Config

    hp = T3Config(text_tokens_dict_size=50276)
    hp.llama_config_name = "GPT2_medium"
    hp.speech_tokens_dict_size = 6563
    hp.input_pos_emb = None
    hp.speech_cond_prompt_len = 375
    hp.use_perceiver_resampler = False
    hp.emotion_adv = False
    return hp


def _tokenizer(spec, folder: Path):
    """The text tokenizer exactly as from_local makes it."""
    if spec.name == "original":
        from chatterbox.models.tokenizers import EnTokenizer
        return EnTokenizer(str(folder / spec.tokenizer_file))
    if spec.name == "multilingual":
        from chatterbox.models.tokenizers import MTLTokenizer
        return MTLTokenizer(str(folder / spec.tokenizer_file))
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if len(tokenizer) != 50276:
        print(f"WARNING: Tokenizer len {len(tokenizer)} != 50276")   # upstream's message
    return tokenizer


# --------------------------------------------------------------------------- building

_INIT_FUNCTIONS = ("uniform_", "normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
                   "kaiming_normal_", "trunc_normal_", "orthogonal_", "sparse_")


@contextlib.contextmanager
def _uninitialised(calls: list):
    """Build modules without initialising weights, recording each skipped init call.

    transformers' ``no_init_weights`` turns torch's init functions (in the modules
    where torch binds them) and ``PreTrainedModel.init_weights`` into no-ops; on top of
    that, the no-ops are replaced by recorders, so _load_part knows which tensors were
    left uninitialised.
    """
    from transformers.initialization import TORCH_MODULES_TO_PATCH, no_init_weights

    def recorder(name):
        def record(tensor, *args, **kwargs):
            calls.append((name, tensor, args, kwargs))
            return tensor
        return record

    with no_init_weights():
        patched = []
        try:
            for module_name in TORCH_MODULES_TO_PATCH:
                module = sys.modules.get(module_name)
                if module is None:
                    continue
                for name in _INIT_FUNCTIONS:
                    if hasattr(module, name):
                        patched.append((module, name, getattr(module, name)))
                        setattr(module, name, recorder(name))
            yield
        finally:
            for module, name, previous in reversed(patched):
                setattr(module, name, previous)


def _named_tensors(module) -> dict:
    """Every parameter and buffer (persistent or not) by name, aliases included."""
    named = dict(module.named_parameters(remove_duplicate=False))
    named.update(module.named_buffers(remove_duplicate=False))
    return named


def _build(builder):
    """(module built without init, names of its tensors whose init was skipped)."""
    calls: list = []
    with _uninitialised(calls):
        module = builder()
    names_by_id: dict[int, list[str]] = {}
    for name, tensor in _named_tensors(module).items():
        names_by_id.setdefault(id(tensor), []).append(name)
    tied = [names for names in names_by_id.values() if len(names) > 1]
    if tied:
        # assign=True would untie them; upstream's copy keeps them shared
        raise FastLoadUnsupported(f"{type(module).__name__} has tied weights {tied[:3]}")
    # Inits of tensors that are no longer weights (e.g. a conv weight that weight_norm
    # re-parametrised) do not matter: whatever derives from them is in the checkpoint,
    # or it is a parameter, which _load_part rebuilds with init when missing.
    skipped = {names_by_id[id(t)][0] for _fn, t, _a, _k in calls if id(t) in names_by_id}
    calls.clear()       # drop references to the empty tensors so they are freed on assign
    return module, skipped


# safetensors dtype names (the format's header) -> torch dtype names
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16",
                       "BF16": "bfloat16", "I64": "int64", "I32": "int32", "I16": "int16",
                       "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def read_safetensors(path: Path, device, float_dtype=None) -> dict:
    """Read a .safetensors file into fresh tensors on `device`, one tensor at a time.

    Why not ``safetensors.torch.load_file``: on CPU it returns views of a private
    memory map of the file, so the bytes are only read when first used (the load looks
    fast, the first generation pays) and the file stays mapped (on Windows it cannot
    be deleted or replaced while the model is loaded).  Plain reads give materialised
    tensors and a closed file with one copy in memory; for a GPU each tensor is staged
    alone, never the whole model in RAM.  `float_dtype` converts floating tensors on
    the way (before they reach the device).
    """
    import json
    import struct

    import torch

    tensors = {}
    with open(path, "rb") as handle:
        header_size = struct.unpack("<Q", _read_exactly(handle, 8, path))[0]
        header = json.loads(_read_exactly(handle, header_size, path))
        header.pop("__metadata__", None)
        base = 8 + header_size
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            dtype_name = _SAFETENSORS_DTYPES.get(info["dtype"])
            if dtype_name is None:
                raise FastLoadUnsupported(f"{path.name}: tensor {name} has dtype "
                                          f"{info['dtype']}")
            start, end = info["data_offsets"]
            tensor = torch.empty(info["shape"], dtype=getattr(torch, dtype_name))
            nbytes = tensor.numel() * tensor.element_size()
            if nbytes != end - start:
                raise ValueError(f"{path}: tensor {name} has {end - start} bytes for shape "
                                 f"{info['shape']} ({nbytes} expected); the file is damaged")
            if nbytes:
                handle.seek(base + start)
                view = memoryview(tensor.view(-1).view(torch.uint8).numpy())
                got = 0
                while got < nbytes:
                    n = handle.readinto(view[got:])
                    if not n:
                        raise ValueError(f"{path} ends inside tensor {name}; the file is "
                                         f"truncated")
                    got += n
            if float_dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(float_dtype)
            tensors[name] = tensor if device.type == "cpu" else tensor.to(device)
    return tensors


def _read_exactly(handle, n: int, path: Path) -> bytes:
    data = handle.read(n)
    if len(data) != n:
        raise ValueError(f"{path} is truncated (header)")
    return data


def _read_checkpoint(path: Path, device, float_dtype=None) -> dict:
    """The checkpoint's tensors, materialised on `device` (CPU for devices whose
    tensors upstream also moves after loading, e.g. MPS)."""
    import torch

    target = device if device.type in ("cpu", "cuda") else torch.device("cpu")
    if path.suffix == ".safetensors":
        state = read_safetensors(path, target, float_dtype)
    else:
        # mmap avoids a whole CPU copy when the tensors go on to a GPU; on CPU a plain
        # read gives materialised tensors and leaves the file closed.
        state = torch.load(path, map_location=target, weights_only=True,
                           mmap=target.type != "cpu")
        if float_dtype is not None:
            state = {k: v.to(float_dtype) if v.is_floating_point() else v
                     for k, v in state.items()}
    if "model" in state.keys():          # as upstream: a wrapped training checkpoint
        state = state["model"][0]
    return state


def _load_part(builder, path: Path, strict: bool, device, float_dtype=None):
    """Build one module uninitialised and move the checkpoint's tensors into it
    (floating ones in `float_dtype` when given, else in the module's dtype)."""
    module, skipped = _build(builder)
    state = _read_checkpoint(path, device, float_dtype)
    missing = [key for key in module.state_dict(keep_vars=True) if key not in state]
    if missing and not strict:
        unsafe = _needs_constructor_init(module, missing, skipped)
        if unsafe:
            # As upstream: the constructor's random init stays for what is missing.
            log.info("%s lacks %d key(s) the constructor initialises (%s); building %s "
                     "with initialisation for them.", path.name, len(unsafe),
                     ", ".join(unsafe[:5]), type(module).__name__)
            del module
            module = builder()
        else:
            log.info("%s lacks %d buffer(s) the constructor computes (%s).", path.name,
                     len(missing), ", ".join(missing[:5]))
    targets = module.state_dict(keep_vars=True)
    for key, value in state.items():
        target = targets.get(key)
        if target is None:
            continue
        # upstream copies into the module's tensors, which converts the dtype
        wanted = float_dtype if float_dtype is not None and target.is_floating_point() \
            else target.dtype
        if value.dtype != wanted:
            state[key] = value.to(wanted)
    del targets
    module.load_state_dict(state, strict=strict, assign=True)
    return module


def _needs_constructor_init(module, missing: list[str], skipped: set[str]) -> list[str]:
    """Missing keys whose value the skipped initialisation would have set: parameters,
    tensors an init function was called on, and anything inside a transformers model
    (its init_weights was skipped as a whole). Other buffers are computed by the
    constructor itself and are already right."""
    from transformers import PreTrainedModel

    params = dict(module.named_parameters())
    unsafe = []
    for name in missing:
        owner, inside_hf = module, isinstance(module, PreTrainedModel)
        for part in name.split(".")[:-1]:
            owner = getattr(owner, part)
            inside_hf = inside_hf or isinstance(owner, PreTrainedModel)
        if name in params or name in skipped or inside_hf:
            unsafe.append(name)
    return unsafe


# --------------------------------------------------------------------------- precision

def cast_half(tts, dtype: str) -> None:
    """Run the token model (T3: two thirds of the weights and the decode time) and
    S3Gen's flow-matching estimator in half precision.

    The estimator is the one part of S3Gen that upstream itself runs in its own dtype
    (its ODE solver casts the inputs to ``estimator.dtype`` and the mel back), so that
    cast follows upstream's fp16 mode; the rest of S3Gen (speech tokenizer, speaker
    encoder, flow encoder, vocoder) and the voice encoder stay float32 for audio quality.

    The rotary-position frequencies (non-persistent buffers) stay float32, as a
    half-precision load by transformers keeps them, so positions are not rounded.
    Upstream builds the voice conditionals in float32 (and rebuilds them in float32
    when exaggeration changes), so a hook casts them to T3's dtype on entry to the
    conditioning encoder, on a copy: cached and saved conditionals stay float32.
    """
    import dataclasses

    import torch

    target = getattr(torch, dtype)
    t3 = tts.t3
    persistent = set(t3.state_dict().keys())
    keep = {name: buf for name, buf in t3.named_buffers()
            if name not in persistent and buf.is_floating_point()}
    t3.to(dtype=target)
    for name, buf in keep.items():
        owner_name, _, attr = name.rpartition(".")
        owner = t3.get_submodule(owner_name) if owner_name else t3
        owner._buffers[attr] = buf
    if getattr(t3, "_cbx_cond_dtype_hook", None) is not None:
        t3._cbx_cond_dtype_hook.remove()

    def cast_conditionals(_module, args):
        cond = dataclasses.replace(args[0]).to(dtype=target)   # T3Cond.to casts floats only
        return (cond, *args[1:])

    t3._cbx_cond_dtype_hook = t3.cond_enc.register_forward_pre_hook(cast_conditionals)
    tts.s3gen.flow.decoder.estimator.to(dtype=target)


def quantize_int8(tfmr) -> None:
    """Make T3's transformer (``t3.tfmr``) run its Linear layers in int8 on a CPU: each
    weight becomes int8 with one float scale per matrix (``torch.ao.quantization.
    quantize_dynamic``, in place); activations are quantized per call.

    Why only the transformer: it is nearly all of T3's weights, and a CPU decode step is
    bound by reading them (2 GB per token in float32, a quarter of it in int8).  The
    speech head stays float32: it is 1.6% of the weights, and upstream reads
    ``t3.speech_head.weight.device`` as T3's device.  Embeddings, norms, the
    conditioning encoder, S3Gen and the voice encoder stay float32.  GPT-2's
    ``Conv1D`` layers (Turbo) are Linear layers with the weight transposed; they become
    ``nn.Linear`` first so they are quantized too.  The float32 weights of the replaced
    layers are dropped; the caller returns the freed heap to the OS.
    """
    import torch
    from torch.ao.quantization import quantize_dynamic

    _conv1d_to_linear(tfmr)
    quantize_dynamic(tfmr, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def _conv1d_to_linear(module) -> None:
    """Replace every transformers ``Conv1D`` under `module` by the ``nn.Linear`` that
    computes the same (x @ W + b is x @ (W.T).T + b), sharing its bias."""
    import torch
    from transformers.pytorch_utils import Conv1D

    for name, child in list(module.named_modules()):
        if not isinstance(child, Conv1D):
            continue
        linear = torch.nn.Linear(child.nx, child.nf, device="meta")   # no initialisation
        linear.weight = torch.nn.Parameter(child.weight.detach().t().contiguous(),
                                           requires_grad=False)
        linear.bias = child.bias
        owner_name, _, attr = name.rpartition(".")
        setattr(module.get_submodule(owner_name) if owner_name else module, attr, linear)


def attention_kernels(device: str):
    """A context for generating on `device`: on CUDA, scaled-dot-product attention may use
    FlashAttention, memory-efficient or math kernels, but not cuDNN's.

    Why: recent PyTorch prefers cuDNN attention for half precision on Hopper GPUs, and
    cuDNN builds a new execution graph for every new sequence length.  T3 decodes one
    token at a time with a growing KV cache, so every step is a new length: on an H200
    (torch 2.11) float16 decoding ran at 12-14 tokens/s instead of 35-50.  Float32 never
    uses cuDNN attention, so this changes nothing there."""
    import contextlib

    if not str(device).startswith("cuda"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.MATH])

"""The conditionals cache: what the model computes from a reference clip (speaker
embedding, prompt tokens, mel features), kept beside the clip in the voice library.

Computing them costs seconds, so they are cached as `conds-<variant>-<sha256[:16]>.pt`:
keyed by the audio's content and the variant, never by a name that could be reused
for different audio. In cbx.engine because it runs upstream's model and torch; the clip
checks and the library are cbx.voices'.
"""
from __future__ import annotations

import importlib
import os
import uuid
import warnings
from pathlib import Path

from .. import paths
from ..errors import InvalidVoiceFile, NoVoiceLoaded
from ..variants import BUILTIN_VOICE_FILE, get_variant
from ..voices import Voice, check_unchanged, library_folder, valid_clip_solution


def conditionals_path(voice: Voice, variant: str, library=None) -> Path:
    """Where the conditionals of `voice` for `variant` are cached: keyed by content."""
    get_variant(variant)
    return library_folder(voice, library) / f"conds-{variant}-{voice.sha256[:16]}.pt"


def _layout(obj, where: str = "") -> dict:
    """{place: (dtype, number of dims, size of the last dim)} of every tensor in a
    chatterbox `Conditionals` (dataclasses and dicts of tensors); time lengths vary
    between clips, feature sizes and types do not."""
    if hasattr(obj, "__dataclass_fields__"):
        items = ((name, getattr(obj, name)) for name in obj.__dataclass_fields__)
    elif isinstance(obj, dict):
        items = obj.items()
    elif hasattr(obj, "dtype") and hasattr(obj, "shape"):
        return {where: (str(obj.dtype), len(obj.shape),
                        obj.shape[-1] if len(obj.shape) > 1 else None)}
    else:
        return {}
    layout = {}
    for name, value in items:
        layout.update(_layout(value, f"{where}.{name}"))
    return layout


def conditionals_fit(cached, reference) -> bool:
    """True when cached conditionals have the tensors, types and feature sizes of the
    model's own (its built-in voice), so they can be used with it."""
    return _layout(cached) == _layout(reference)


def prepare_conditionals(model, voice: Voice, variant: str, *, exaggeration: float,
                         library=None, model_dir=None):
    """The upstream `Conditionals` for `voice` on `model.device`, from cache if possible.

    Cache miss: chatterbox's own `model.prepare_conditionals(clip, exaggeration=...)`
    computes them (bit-for-bit upstream behaviour) and they are saved. Cache hit: they
    are loaded and their exaggeration set exactly as upstream builds it, so the result
    equals a fresh computation. The built-in voice loads the variant's conds.pt from
    the model folder. The caller assigns the result to `model.conds`.
    """
    v = get_variant(variant)
    conditionals_cls = importlib.import_module(v.module).Conditionals
    device = model.device
    if voice.builtin:
        builtin = paths.variant_dir(variant, model_dir) / BUILTIN_VOICE_FILE
        if not builtin.is_file():
            raise NoVoiceLoaded(
                f"{v.label} has no built-in voice here ({builtin} is missing).",
                "Upload a reference clip or pick a saved voice.",
            )
        return conditionals_cls.load(builtin, map_location="cpu").to(device)

    check_unchanged(voice, v)
    cache = conditionals_path(voice, variant, library)
    if cache.is_file():
        conds = _cached(model, conditionals_cls, cache, exaggeration)
        if conds is not None:
            return conds.to(device)
    return _computed(model, voice, v, cache, exaggeration)


def _cached(model, conditionals_cls, cache: Path, exaggeration: float):
    """The cached conditionals, or None (and the file removed) when they are unreadable
    or do not fit this model."""
    try:
        conds = conditionals_cls.load(cache, map_location="cpu")
    except Exception as exc:   # noqa: BLE001 - torch.load raises many types on a bad file
        warnings.warn(f"The cached conditionals {cache} are unreadable ({exc}); "
                      f"recomputing them.", RuntimeWarning, stacklevel=3)
        cache.unlink(missing_ok=True)
        return None
    reference = getattr(model, "conds", None)
    if reference is None or conditionals_fit(conds, reference):
        import torch
        # What upstream prepare_conditionals builds for this exaggeration.
        conds.t3.emotion_adv = exaggeration * torch.ones(1, 1, 1)
        return conds
    warnings.warn(f"The cached conditionals {cache} do not fit this model (other "
                  f"shapes or types); recomputing them.", RuntimeWarning, stacklevel=3)
    cache.unlink(missing_ok=True)
    return None


def _computed(model, voice: Voice, variant, cache: Path, exaggeration: float):
    """Upstream's own prepare_conditionals on the clip, saved to the cache (a failed
    save only costs the next load the same seconds)."""
    try:
        model.prepare_conditionals(str(voice.path), exaggeration=exaggeration)
    except Exception as exc:   # noqa: BLE001 - converted below, OOM passed on
        import torch
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise   # synth turns CUDA OOM into generation_failed with its fix
        import traceback
        raise InvalidVoiceFile(
            f"The model could not use the voice {voice.name!r}: "
            f"{type(exc).__name__}: {exc}".rstrip(": "),
            valid_clip_solution(variant),
            details="".join(traceback.format_exception(exc)),
        ) from exc
    conds = model.conds
    tmp = cache.with_name(f"{cache.name}.tmp-{uuid.uuid4().hex}")
    try:
        conds.save(tmp)
        os.replace(tmp, cache)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        warnings.warn(f"Could not cache the conditionals at {cache} ({exc}); they will be "
                      f"recomputed next time.", RuntimeWarning, stacklevel=3)
    return conds

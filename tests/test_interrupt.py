"""Cancel inside S3Gen and the vocoder (cbx.engine.interrupt): a cancel that comes while
a chunk's tokens are turned into audio lands at the next Euler step or vocoder stage,
not when the chunk is done.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest

import cbx
from cbx.engine import interrupt


@pytest.mark.parametrize("meanflow", [False, True], ids=["original+multilingual", "turbo"])
def test_every_stage_is_there_in_upstreams_s3gen(meanflow):
    """Original and multilingual build S3Token2Wav(); Turbo the meanflow one."""
    from chatterbox.models.s3gen import S3Gen

    s3gen = S3Gen(meanflow=meanflow)
    found = interrupt.stage_modules(SimpleNamespace(s3gen=s3gen))
    lists = [s3gen.get_submodule(path) for path in interrupt.STAGE_LISTS]
    blocks = [s3gen.get_submodule(path) for path in interrupt.BLOCK_LISTS]
    assert len(found) == len(interrupt.STAGES) + sum(map(len, lists)) + \
        sum(map(len, blocks))
    assert all(len(found_list) >= 1 for found_list in lists + blocks)
    assert len(set(map(id, found))) == len(found)


@pytest.mark.model
def test_a_cancel_during_the_euler_steps_stops_at_the_next_one(loaded, speech_wav):
    """The test cancels at the third Euler step of the first chunk's S3Gen pass; no
    fourth step runs and the vocoder never starts."""
    s3gen = loaded.loaded.tts.s3gen
    token, steps, vocoder = cbx.CancelToken(), [], []

    def on_step(*_):
        steps.append(1)
        if len(steps) == 3:
            token.cancel()

    hooks = [s3gen.get_submodule("flow.decoder.estimator.time_mlp")
             .register_forward_pre_hook(on_step),
             s3gen.mel2wav.f0_predictor.register_forward_pre_hook(
                 lambda *_: vocoder.append(1))]
    try:
        with pytest.raises(cbx.errors.GenerationCancelled) as raised:
            cbx.speak("Hello there.", speech_wav, seed=1, cancel=token)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(steps) == 3 and not vocoder
    assert raised.value.partial is None            # nothing was finished
    # the hooks are gone with the generation: the next one runs every step
    result = cbx.speak("Hello there.", speech_wav, seed=1)
    assert result.duration > 0
    assert not any(m._forward_pre_hooks for m in interrupt.stage_modules(loaded.loaded.tts))

"""Cancel points inside S3Gen and the vocoder, so a cancel lands within one of their
steps and not only between T3 tokens.

Why: T3's loop checks the cancel token between tokens, but a chunk's S3Gen pass (the
flow's encoder, ten Euler steps of the CFM estimator, then HiFT) runs as one upstream
call that can take seconds on a CPU; a client that went away, or an Unload, waited for
it. Forward pre-hooks on the modules each stage calls once are the seam: upstream's
code stays as it is, and the hooks exist only while a generation runs.
"""
from __future__ import annotations

import contextlib

# Modules called once per stage, as paths under tts.s3gen: the flow's encoder, the
# estimator's time embedding (once per Euler step; the estimator itself is called
# through .forward, which skips hooks), the vocoder's f0 predictor. And lists whose
# every member is a stage: the encoder's conformer layers, HiFT's upsampling layers
# and residual blocks, and the first module (the resnet) of each of the estimator's
# down, mid and up blocks, so a check comes every few percent of an Euler step too.
STAGES = ("flow.encoder", "flow.decoder.estimator.time_mlp", "mel2wav.f0_predictor")
STAGE_LISTS = ("flow.encoder.encoders", "flow.encoder.up_encoders", "mel2wav.ups",
               "mel2wav.resblocks")
BLOCK_LISTS = ("flow.decoder.estimator.down_blocks", "flow.decoder.estimator.mid_blocks",
               "flow.decoder.estimator.up_blocks")


def stage_modules(tts) -> list:
    """The loaded model's modules named in STAGES, STAGE_LISTS and BLOCK_LISTS
    (each block's first module). test_interrupt checks
    that every variant has them all, so an upstream rename shows as a failing test, not
    as a cancel that silently waits for the chunk."""
    s3gen, found = getattr(tts, "s3gen", None), []
    if s3gen is None:             # a stand-in model with no S3Gen has no stages
        return found
    for path in STAGES:
        with contextlib.suppress(AttributeError):
            found.append(s3gen.get_submodule(path))
    for path in STAGE_LISTS:
        with contextlib.suppress(AttributeError):
            found.extend(s3gen.get_submodule(path))
    for path in BLOCK_LISTS:
        with contextlib.suppress(AttributeError):
            found.extend(block[0] for block in s3gen.get_submodule(path))
    return found


@contextlib.contextmanager
def cancel_points(tts, check):
    """While the block runs, `check()` is called before each S3Gen and vocoder stage;
    whatever it raises abandons the pass."""
    handles = [module.register_forward_pre_hook(lambda *_: check())
               for module in stage_modules(tts)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()

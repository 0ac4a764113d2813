"""The voice prompt a streamed window is made with (cbx/engine/blocks.py `window_prompt`):
no model needed, only the shapes S3Gen's `embed_ref` writes."""
from __future__ import annotations

import torch

from cbx.engine import blocks


def _gen(levels: list[float], tokens_per_level: int = 25) -> dict:
    """A ref_dict whose prompt is `levels` stretches of `tokens_per_level` tokens, each
    stretch's mel frames at that log-mel level; token ids count up from 0."""
    count = len(levels) * tokens_per_level
    frames = torch.cat([torch.full((2 * tokens_per_level, 80), level) for level in levels])
    return {"prompt_token": torch.arange(count).unsqueeze(0),
            "prompt_token_len": torch.tensor([count]),
            "prompt_feat": frames.unsqueeze(0), "prompt_feat_len": None,
            "embedding": torch.ones(1, 192)}


def test_a_window_reads_the_loudest_three_seconds_of_the_prompt():
    # 10 s: a pause, speech from 2 s to 5 s, a quieter stretch, then a trailing pause
    gen = _gen([-11.5, -11.5, -2.0, -2.0, -2.0, -6.0, -6.0, -11.5, -11.5, -11.5])
    prompt = blocks.window_prompt(gen)
    assert prompt["prompt_token"].tolist() == [list(range(50, 125))]
    assert prompt["prompt_token_len"].tolist() == [75]
    assert prompt["prompt_feat"].shape == (1, 150, 80)
    assert torch.equal(prompt["prompt_feat"], gen["prompt_feat"][:, 100:250])
    assert prompt["embedding"] is gen["embedding"]     # the whole clip's speaker
    assert gen["prompt_token"].shape == (1, 250)       # the voice itself is untouched


def test_a_prompt_of_three_seconds_or_less_is_read_whole():
    gen = _gen([-3.0, -2.0, -4.0])
    assert blocks.window_prompt(gen) is gen

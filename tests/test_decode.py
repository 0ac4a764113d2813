"""cbx's own T3 token loop (cbx/engine/decode.py) against upstream's, on the random-weight
fixture of each variant, on the CPU in float32.

The promise: the same token ids as upstream's loop under the same seed (so the same
audio, bit for bit), the random generator left where upstream leaves it (S3Gen draws
after T3), and a token budget that ends a runaway chunk without touching one whose
model stops by itself (every fixture model stops by itself after 8 tokens).
"""
from __future__ import annotations

import contextlib

import pytest

from cbx.engine import decode
from cbx.dev import fixture
from cbx.engine.fastload import load_tts
from cbx.variants import get_variant

TEXT = "Hello there, this is a test of the fast decoder."
SEEDS = (0, 1, 2)


# --------------------------------------------------------------------------- budget

def test_budget_grows_with_the_text_and_never_exceeds_upstreams_cap():
    budgets = [decode.token_budget("a" * n) for n in range(0, 400)]
    assert budgets == sorted(budgets)
    assert max(budgets) == decode.UPSTREAM_MAX_TOKENS
    for chars in (1, 10, 50, 100):
        expected = 1.65 * chars     # real English speech: 25 tokens/s at ~15 characters/s
        assert decode.token_budget("a" * chars) >= decode.BUDGET_FACTOR * expected
    # a 100-character chunk (dashboard default) keeps > 25 s of room, not 40 s of babble
    assert 25 * decode.TOKENS_PER_SECOND < decode.token_budget("a" * 100) \
        < decode.UPSTREAM_MAX_TOKENS


def test_the_switch_reads_the_environment(monkeypatch):
    monkeypatch.delenv(decode.FAST_DECODE_ENV, raising=False)
    assert decode.enabled()
    for off in ("0", "false", "off", " NO "):
        monkeypatch.setenv(decode.FAST_DECODE_ENV, off)
        assert not decode.enabled()


# --------------------------------------------------------------------------- models

@pytest.fixture(scope="module", params=["original", "turbo", "multilingual"])
def model(request):
    """(variant, upstream TTS object on the CPU) for each variant, one at a time."""
    variant = request.param
    root = fixture.cached_checkpoint_root((variant,))
    offline = (fixture.offline_multilingual() if variant == "multilingual"
               else contextlib.nullcontext())
    with offline:
        tts = load_tts(get_variant(variant), root / variant, "cpu")
        yield variant, tts
    decode.uninstall(tts)
    del tts


def _t3_call(variant, tts, decoder, seed, budget=None):
    """Tokens of one T3 call for TEXT (as generate() would make it) and the generator
    state after it; `decoder` None means upstream's own method."""
    import torch
    import torch.nn.functional as F

    t3 = tts.t3
    if variant == "turbo":
        text_tokens = tts.tokenizer(TEXT, return_tensors="pt").input_ids
        kwargs = dict(t3_cond=tts.conds.t3, text_tokens=text_tokens)
        if budget is not None:
            kwargs["max_gen_len"] = budget
        method = decoder.inference_turbo if decoder else (
            lambda **kw: type(t3).inference_turbo(t3, **kw))
    else:
        tokens = (tts.tokenizer.text_to_tokens(TEXT, language_id="en")
                  if variant == "multilingual" else tts.tokenizer.text_to_tokens(TEXT))
        tokens = torch.cat([tokens, tokens], dim=0)
        tokens = F.pad(F.pad(tokens, (1, 0), value=t3.hp.start_text_token),
                       (0, 1), value=t3.hp.stop_text_token)
        kwargs = dict(t3_cond=tts.conds.t3, text_tokens=tokens,
                      max_new_tokens=budget or 1000, temperature=0.8, cfg_weight=0.5,
                      repetition_penalty=1.2, min_p=0.05, top_p=1.0)
        method = decoder.inference if decoder else (
            lambda **kw: type(t3).inference(t3, **kw))
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = method(**kwargs)
    return out.clone(), torch.get_rng_state()


@pytest.mark.model
def test_fast_loop_makes_upstreams_tokens_and_leaves_the_generator_as_upstream(model):
    import torch

    variant, tts = model
    decoder = decode.Decoder(tts.t3, fast=True)
    for seed in SEEDS:
        theirs, their_rng = _t3_call(variant, tts, None, seed)
        ours, our_rng = _t3_call(variant, tts, decoder, seed)
        assert torch.equal(ours, theirs), (variant, seed)
        assert torch.equal(our_rng, their_rng), (variant, seed)
        # the fixture's model stops by itself: the budget did not end it
        assert decoder.last.fast and not decoder.last.hit_budget
        assert decoder.last.tokens == fixture.DEFAULT_STOP_AFTER + 1   # + the stop token


@pytest.mark.model
def test_generate_through_the_decoder_is_bit_identical_to_upstream(model):
    """The whole generate(): conditioning, S3Gen and watermark are upstream's, so equal
    tokens and an equal generator give equal audio."""
    import torch

    variant, tts = model
    kwargs = {"language_id": "en"} if variant == "multilingual" else {}
    decode.uninstall(tts)
    torch.manual_seed(5)
    theirs = tts.generate(TEXT, **kwargs)
    decoder = decode.install(tts)
    torch.manual_seed(5)
    with decoder.chunk(decode.token_budget(TEXT)):
        ours = tts.generate(TEXT, **kwargs)
    assert decoder.last.fast and not decoder.last.hit_budget
    assert torch.equal(ours, theirs)


@pytest.mark.model
def test_budget_ends_a_chunk_with_upstreams_first_tokens(model):
    """A budget below what the model would make ends the chunk there, says so, and the
    tokens are upstream's own first ones under the same cap."""
    import torch

    variant, tts = model
    decoder = decode.Decoder(tts.t3, fast=True)
    budget = 4
    theirs, their_rng = _t3_call(variant, tts, None, 3, budget=budget)
    with decoder.chunk(budget):
        ours, our_rng = _t3_call(variant, tts, decoder, 3)
    assert torch.equal(ours, theirs)
    assert torch.equal(our_rng, their_rng)
    assert decoder.last.hit_budget and decoder.last.budget == budget
    assert tts.t3.hp.stop_speech_token not in ours.tolist()[0]


@pytest.mark.model
def test_switched_off_it_runs_upstreams_loop_under_the_budget(model):
    import torch

    variant, tts = model
    decoder = decode.Decoder(tts.t3, fast=False)
    theirs, _ = _t3_call(variant, tts, None, 1, budget=3)
    with decoder.chunk(3):
        ours, _ = _t3_call(variant, tts, decoder, 1)
    assert torch.equal(ours, theirs)
    assert not decoder.last.fast and decoder.last.hit_budget


@pytest.mark.model
def test_cancel_between_tokens_stops_the_fast_loop(model):
    variant, tts = model
    decoder = decode.Decoder(tts.t3, fast=True)
    calls = []

    class Stop(Exception):
        pass

    def on_forward():
        calls.append(1)
        if len(calls) == 3:          # the prompt and two tokens
            raise Stop

    with decoder.chunk(decode.UPSTREAM_MAX_TOKENS, on_forward), pytest.raises(Stop):
        _t3_call(variant, tts, decoder, 0)
    assert len(calls) == 3


@pytest.mark.model
def test_multilingual_analyzer_hooks_do_not_pile_up(model):
    """Upstream leaves three attention hooks on the model per call; cbx removes its own."""
    variant, tts = model
    if variant != "multilingual":
        pytest.skip("only the multilingual model has the alignment analyzer")
    layers = [layer.self_attn for layer in tts.t3.tfmr.layers]
    before = sum(len(layer._forward_hooks) for layer in layers)
    decoder = decode.Decoder(tts.t3, fast=True)
    for seed in (0, 1):
        _t3_call(variant, tts, decoder, seed)
    assert sum(len(layer._forward_hooks) for layer in layers) == before

"""Batched T3 decoding (cbx.engine.batch) on the random-weight `original` checkpoint.

The contract (README, "Batched decoding"): a batched chunk is reproducible for the same
seed, batch size, device and dtype; its scores equal the chunk's own scores decoded alone
within SCORE_TOLERANCE, so it draws the tokens the chunk draws alone; its tokens do not
depend on what its neighbours say; every row keeps its own settings and seed.
"""
from __future__ import annotations

import numpy as np
import pytest

import cbx
from cbx.engine import batch, decode, synth
from cbx.errors import InvalidSetting
from cbx.engine.manager import get_manager

SCORE_TOLERANCE = 1e-3      # largest |batched - alone| CFG score, float32 on a CPU

TEXTS = ["Hello there, this is the first one.",
         "A second, slightly longer sentence to speak aloud right now.",
         "Third."]
SETTINGS = [dict(temperature=0.8, cfg_weight=0.5, min_p=0.05, top_p=1.0,
                 repetition_penalty=1.2, exaggeration=0.5),
            dict(temperature=0.5, cfg_weight=0.3, min_p=0.1, top_p=0.9,
                 repetition_penalty=1.5, exaggeration=0.7),
            dict(temperature=1.0, cfg_weight=0.8, min_p=0.02, top_p=1.0,
                 repetition_penalty=1.0, exaggeration=0.5)]


@pytest.fixture(scope="module")
def tts(model_env):
    cbx.load("original", device="cpu")
    loaded = get_manager().loaded
    loaded.tts.conds = synth._resolve_conditionals(loaded, None, "original", 0.5)[0]
    yield loaded.tts
    cbx.unload()


def rows_for(tts, texts, settings, seeds):
    rows = []
    for text, setting, seed in zip(texts, settings, seeds):
        kwargs = synth._upstream_kwargs("original", setting, None)
        rows.append(batch.Row(batch.capture(tts, text, kwargs), decode.token_budget(text),
                              seed))
    return rows


def alone(tts, row):
    """The row's tokens from the sequential loop, seeded as the sequential path seeds."""
    import torch

    torch.manual_seed(row.seed)
    decoder = decode.decoder_of(tts)
    with decoder.chunk(row.budget):
        return decoder.inference(**row.kwargs)


def teacher_forced_scores(tts, row, tokens):
    """The chunk's CFG scores at every step, alone and without a cache: its prompt (as
    upstream builds it: the start token, then the start token again at position 0)
    and the given tokens in one forward through the transformer."""
    import torch

    t3, hp = tts.t3, tts.t3.hp
    text_tokens = torch.atleast_2d(row.kwargs["text_tokens"]).long()
    cfg = row.kwargs["cfg_weight"]
    start = torch.full((2, 1), hp.start_speech_token)
    with torch.inference_mode():
        prompt, _ = t3.prepare_input_embeds(t3_cond=row.kwargs["t3_cond"],
                                            text_tokens=text_tokens, speech_tokens=start,
                                            cfg_weight=cfg)
        speech = torch.cat([start[:1], tokens[:, :-1]], dim=1)[0]
        steps = t3.speech_emb(speech) + t3.speech_pos_emb.emb.weight[:len(speech)]
        embeds = torch.cat([prompt, steps[None].expand(2, -1, -1)], dim=1)
        hidden = t3.tfmr(inputs_embeds=embeds).last_hidden_state
        logits = t3.speech_head(hidden[:, -len(speech):, :])
    cond, uncond = logits[0], logits[1]
    return cond + torch.as_tensor(cfg) * (cond - uncond)


def test_rows_with_their_own_settings_match_each_chunk_decoded_alone(tts):
    import torch

    rows = rows_for(tts, TEXTS, SETTINGS, [11, 12, 4294967295 % 2**31])
    trace = batch._Trace()
    results = batch.decode_rows(decode.decoder_of(tts), rows, trace=trace)
    assert len({r.kwargs["text_tokens"].shape[-1] for r in rows}) == 3, \
        "prompts of three lengths, so the rows are padded differently"
    for r, (row, result) in enumerate(zip(rows, results)):
        assert torch.equal(result.tokens, alone(tts, row)), f"row {r}"
        assert result.decoded.tokens == result.tokens.shape[-1] and not result.decoded.hit_budget
        batched = torch.stack([s[0] for (row_index, _i, s) in trace.scores if row_index == r])
        forced = teacher_forced_scores(tts, row, result.tokens)
        assert batched.shape == forced.shape
        assert float((batched - forced).abs().max()) <= SCORE_TOLERANCE, f"row {r}"


def test_a_rows_tokens_do_not_depend_on_its_neighbours(tts):
    import torch

    setting = SETTINGS[0]
    first = rows_for(tts, TEXTS, [setting] * 3, [5, 6, 7])
    # the middle chunk says something else, of a length that keeps the padding
    other = rows_for(tts, [TEXTS[0], "A second, quite different sentence to say out loud.",
                           TEXTS[2]], [setting] * 3, [5, 6, 7])
    a = batch.decode_rows(decode.decoder_of(tts), first)
    b = batch.decode_rows(decode.decoder_of(tts), other)
    for r in (0, 2):
        assert torch.equal(a[r].tokens, b[r].tokens), f"row {r}"
    again = batch.decode_rows(decode.decoder_of(tts), first)
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(a, again)), "reproducible"


def test_a_row_that_stops_leaves_the_others_running_and_the_budget_is_per_row(tts):
    rows = rows_for(tts, TEXTS[:2], [SETTINGS[0]] * 2, [1, 2])
    rows[1].budget = 3
    results = batch.decode_rows(decode.decoder_of(tts), rows)
    assert not results[0].decoded.hit_budget
    assert results[0].tokens.shape[-1] > 3
    assert results[1].decoded.hit_budget and results[1].tokens.shape[-1] == 3


def test_cancel_between_steps_of_a_batch(tts):
    rows = rows_for(tts, TEXTS[:2], [SETTINGS[0]] * 2, [1, 2])
    calls = []

    def on_forward():
        calls.append(1)
        if len(calls) == 3:
            raise synth._Stop

    with pytest.raises(synth._Stop):
        batch.decode_rows(decode.decoder_of(tts), rows, on_forward)
    assert len(calls) == 3


def test_speak_decodes_later_chunks_together_and_gives_the_sequential_audio(
        tts, monkeypatch):
    text = " ".join(f"Sentence number {word} is here to be spoken." for word in
                    ("one", "two", "three", "four"))
    sequential = cbx.speak(text, seed=3, max_chunk_chars=45, first_chunk_chars=None,
                           batch_size=1)
    groups = []
    real = batch.decode_rows
    monkeypatch.setattr(batch, "decode_rows",
                        lambda decoder, rows, *a, **k: groups.append(len(rows))
                        or real(decoder, rows, *a, **k))
    batched = cbx.speak(text, seed=3, max_chunk_chars=45, first_chunk_chars=None,
                        batch_size=3)
    assert len(batched.chunks) == 4 and groups == [3], "chunk 1 alone, then 2-4 together"
    # the tokens agree here, and the random state a row leaves is the sequential one,
    # so S3Gen draws the same noise: the very same audio
    assert np.array_equal(batched.wav, sequential.wav)
    assert batched.notes == sequential.notes

    def broken(*_args, **_kwargs):
        raise RuntimeError("a kernel this machine lacks")

    monkeypatch.setattr(batch, "decode_rows", broken)
    fallen_back = cbx.speak(text, seed=3, max_chunk_chars=45, first_chunk_chars=None,
                            batch_size=3)
    assert np.array_equal(fallen_back.wav, sequential.wav), "nothing lost"
    assert any("decoded one at a time" in note and "a kernel this machine lacks" in note
               for note in fallen_back.notes)


def test_calls_made_together_each_get_what_they_get_alone(tts, speech_wav, monkeypatch):
    """speak_together (the server's waiting requests): each call keeps its own voice,
    settings, seed, rate and cancel, and one call's bad input or cancel is that call's
    error alone."""
    from cbx import errors

    gone = cbx.CancelToken()
    gone.cancel()
    calls = [dict(text=TEXTS[0], seed=5, **SETTINGS[0]),
             dict(text=TEXTS[1], voice=speech_wav, seed=6, rate=1.25, **SETTINGS[1]),
             dict(text="One sentence. " * 30, seed=7),          # speak() would split it
             dict(text=TEXTS[2], seed=8, temperature=9.0),      # out of range
             dict(text=TEXTS[2], seed=9, cancel=gone)]          # its client went away
    groups = []
    real = batch.decode_rows
    monkeypatch.setattr(batch, "decode_rows",
                        lambda decoder, rows, *a, **k: groups.append(len(rows))
                        or real(decoder, rows, *a, **k))
    out = synth.speak_together(calls)
    assert groups == [3], "the three valid calls share one batch"
    assert isinstance(out[2], errors.InvalidText) and "chunks" in out[2].message
    assert isinstance(out[3], errors.InvalidSetting) and "temperature" in out[3].message
    assert isinstance(out[4], errors.GenerationCancelled)
    monkeypatch.setattr(batch, "decode_rows", real)
    for made, call in zip(out[:2], calls[:2]):
        call = dict(call)
        alone_result = cbx.speak(call.pop("text"), call.pop("voice", None), batch_size=1,
                                 **call)
        assert made.seed == alone_result.seed and made.rate == alone_result.rate
        assert made.voice == alone_result.voice and made.settings == alone_result.settings
        assert np.array_equal(made.wav, alone_result.wav)


def test_batch_size_is_checked_and_cbx_batch_is_read(tts, monkeypatch):
    for bad in (0, -1, 65, 2.5, True, "eight"):
        with pytest.raises(InvalidSetting, match="batch_size"):
            cbx.speak("Hello.", batch_size=bad)
    monkeypatch.setenv("CBX_BATCH", "zero")
    with pytest.raises(InvalidSetting, match="CBX_BATCH"):
        cbx.speak("Hello.")



def test_a_project_remakes_a_lost_chunk_by_decoding_its_whole_group_again(
        tts, monkeypatch):
    text = " ".join(f"Sentence number {word} is here to be spoken." for word in
                    ("one", "two", "three", "four"))
    groups = []
    real = batch.decode_rows
    monkeypatch.setattr(batch, "decode_rows",
                        lambda decoder, rows, *a, **k: groups.append(len(rows))
                        or real(decoder, rows, *a, **k))
    job = cbx.project("groups", text=text, seed=9, max_chunk_chars=45)
    assert job.run(batch_size=2)["done"] == 4 and groups == [2, 2]
    before = [row["wav"].read_bytes() for row in job.overview()]
    job.overview(3, 4)[0]["wav"].unlink()          # chunk 4's take is lost
    assert job.status()["missing"] == [3]
    assert job.run()["done"] == 4, "the project keeps its batch size"
    assert groups == [2, 2, 2], "chunk 4 is decoded with chunk 3, as at first"
    assert [row["wav"].read_bytes() for row in job.overview()] == before


def test_turbo_rows_match_each_chunk_decoded_alone(turbo_root, monkeypatch):
    """Turbo's rows (no CFG, GPT-2's own positions) through the same left padding."""
    import torch

    monkeypatch.setenv("CBX_MODEL_DIR", str(turbo_root))
    cbx.load("turbo", device="cpu")
    try:
        loaded = get_manager().loaded
        tts = loaded.tts
        tts.conds = synth._resolve_conditionals(loaded, None, "turbo", 0.0)[0]
        kwargs = synth._upstream_kwargs("turbo", synth._check_settings("turbo", {})[0], None)
        rows = [batch.Row(batch.capture(tts, text, kwargs), decode.token_budget(text), seed)
                for text, seed in zip(TEXTS[:2], (21, 22))]
        assert rows[0].kwargs["text_tokens"].shape != rows[1].kwargs["text_tokens"].shape
        results = batch.decode_rows(decode.decoder_of(tts), rows)
        decoder = decode.decoder_of(tts)
        for row, result in zip(rows, results):
            torch.manual_seed(row.seed)
            with decoder.chunk(row.budget):
                alone = decoder.inference_turbo(**row.kwargs)
            assert torch.equal(result.tokens, alone)
            assert int(result.tokens[0, -1]) != tts.t3.hp.stop_speech_token
    finally:
        cbx.unload()

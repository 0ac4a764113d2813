"""`python -m cbx.dev.bench`: the summary arithmetic, the generated clip, and one real run
on the random-weight fixture (it reports; only the structure and sanity of its JSON
are asserted, never timings)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from cbx.dev import bench
from cbx import paths


def _run(side: str, **figures) -> dict:
    return {"side": side, **figures}


def test_summary_takes_medians_and_ratios_against_upstream():
    runs = {
        "cbx": [_run("cbx", load_s=2.0, load_peak_rss_mb=4000, conds_first_s=1.5,
                     conds_reuse_s=0.01, t3_tokens_per_s=4.0, e2e_first_audio_s=3.0,
                     e2e_total_s=9.0, e2e_stream_cost=1.1, unload_released=True),
                _run("cbx", load_s=4.0, load_peak_rss_mb=4200, conds_first_s=1.4,
                     conds_reuse_s=0.03, t3_tokens_per_s=4.4, e2e_first_audio_s=5.0,
                     e2e_total_s=11.0, e2e_stream_cost=1.4, unload_released=True),
                _run("cbx", load_s=3.0, load_peak_rss_mb=4100, conds_first_s=1.6,
                     conds_reuse_s=0.02, t3_tokens_per_s=4.2, e2e_first_audio_s=4.0,
                     e2e_total_s=10.0, e2e_stream_cost=1.2, unload_released=True)],
        "upstream": [_run("upstream", load_s=10.0, load_peak_rss_mb=7000, conds_first_s=1.0,
                          t3_tokens_per_s=4.0, e2e_first_audio_s=8.0, e2e_total_s=8.0)] * 3,
    }
    summary = bench.summarise(runs, {"repeats": 3, "fixture": True, "variant": "original",
                                     "device": "cpu", "dtype": "float32",
                                     "machine": "test", "model_root": "x"})
    assert summary["cbx"]["load_s"] == 3.0 and summary["cbx"]["conds_reuse_s"] == 0.02
    assert summary["ratios"]["load_s"] == pytest.approx(0.3)
    assert summary["ratios"]["load_peak_rss_mb"] == pytest.approx(4100 / 7000)
    # reuse is compared with upstream computing the conditionals; first audio with
    # upstream's whole one-call generation
    assert summary["ratios"]["conds_reuse_s"] == pytest.approx(0.02 / 1.0)
    assert summary["ratios"]["e2e_first_audio_s"] == pytest.approx(4.0 / 8.0)
    assert summary["ratios"]["t3_tokens_per_s"] == pytest.approx(4.2 / 4.0)
    assert summary["targets_met"] == {"load_s": True, "load_peak_rss_mb": True,
                                      "conds_reuse_s": True, "t3_tokens_per_s": True,
                                      "e2e_first_audio_s": False,
                                      "e2e_stream_cost": True}
    # cbx's own ratio has no upstream counterpart: its target applies to the value
    assert "e2e_stream_cost" not in summary["ratios"]
    assert summary["cbx_unload_released"] is True
    assert any("fixture" in note for note in summary["notes"])
    table = bench.format_table(summary)
    assert "Load: wall time" in table and "0.30x" in table and "MISSED" in table


def _check_clip(path):
    import numpy as np
    import soundfile as sf

    data, rate = sf.read(str(path))
    assert rate == bench.SAMPLE_RATE and len(data) == int(bench.CLIP_SECONDS * rate)
    assert np.isfinite(data).all() and 0.5 < np.abs(data).max() <= 0.81
    assert np.sqrt(np.mean(data ** 2)) > 0.05    # not silence


def test_generated_clip_speaks_with_espeak(tmp_path):
    if shutil.which("espeak-ng") is None and shutil.which("espeak") is None:
        pytest.skip("espeak-ng is not installed")
    path, source = bench.make_clip(tmp_path / "clip.wav")
    assert source == "espeak-ng"
    _check_clip(path)


def test_generated_clip_without_espeak_is_synthetic(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    path, source = bench.make_clip(tmp_path / "clip.wav")
    assert source == "synthetic"
    _check_clip(path)


def test_machine_description_names_cores_and_gpu():
    text = bench.describe_machine("cpu")
    assert "-core" in text and "CPU" in text and ("GPU" in text or "GiB" in text)


@pytest.mark.model
def test_benchmark_runs_on_the_fixture(checkpoint_root):
    """One repetition, one sentence: every figure present and sane, ratios computed."""
    proc = subprocess.run(
        [sys.executable, "-m", "cbx.dev.bench", "--model-dir", str(checkpoint_root),
         "--repeats", "1", "--sentences", "1", "--json-only"],
        capture_output=True, text=True, cwd=str(paths.REPO_ROOT), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout[-2000:]     # --json-only: just the JSON line
    summary = json.loads(lines[0])
    assert summary["fixture"] is False and summary["repeats"] == 1
    assert summary["device"] == "cpu" and "core" in summary["machine"]
    positive = ("load_s", "load_peak_rss_mb", "import_s", "conds_first_s", "prefill_s",
                "t3_tokens_per_s", "t3_weight_mb_per_token", "t3_weight_gb_per_s",
                "s3gen_rtf", "e2e_first_audio_s", "e2e_total_s", "e2e_audio_s",
                "peak_rss_mb", "loaded_rss_mb")
    for side in ("cbx", "upstream"):
        for key in positive:
            assert summary[side][key] > 0, (side, key)
        assert summary[side]["e2e_chunks"] == 1
        assert summary[side]["e2e_t3_tokens"] == 8 + 1      # the text's, once
    # decode speed is taken over every T3 call: the short sentence and the text (cbx:
    # the text twice, plain and streamed), 8 tokens each (the fixture's fixed length)
    assert summary["upstream"]["t3_decode_steps"] == 8 * 2
    assert summary["cbx"]["t3_decode_steps"] == 8 * 3
    for side in ("cbx", "upstream"):
        assert summary[side]["load_peak_rss_mb"] >= summary[side]["loaded_rss_mb"] * 0.99
        assert "unload_rss_retained_mb" in summary[side]
    assert summary["cbx"]["conds_reuse_s"] > 0
    assert summary["cbx"]["e2e_first_audio_s"] <= summary["cbx"]["e2e_total_s"]
    # the first streamed block comes no later than the first whole chunk
    assert 0 < summary["cbx"]["e2e_first_block_s"] <= summary["cbx"]["e2e_first_audio_s"]
    assert "e2e_first_block_s" not in summary["upstream"]
    # streaming's total against plain speak()'s, cbx against itself
    assert summary["cbx"]["e2e_stream_cost"] == pytest.approx(
        summary["cbx"]["e2e_total_s"] / summary["cbx"]["e2e_speak_total_s"])
    assert "e2e_speak_total_s" not in summary["upstream"]
    assert "e2e_stream_cost" not in summary["ratios"]
    assert summary["cbx_unload_released"] is True
    for key, ratio in summary["ratios"].items():
        assert ratio > 0, key
    assert summary["ratios"]["load_s"] == pytest.approx(
        summary["cbx"]["load_s"] / summary["upstream"]["load_s"])
    assert summary["ratios"]["conds_reuse_s"] == pytest.approx(
        summary["cbx"]["conds_reuse_s"] / summary["upstream"]["conds_first_s"])
    assert set(summary["targets_met"]) == {"load_s", "load_peak_rss_mb", "conds_reuse_s",
                                           "t3_tokens_per_s", "e2e_first_audio_s",
                                           "e2e_first_block_s", "e2e_stream_cost"}
    assert len(summary["runs"]["cbx"]) == len(summary["runs"]["upstream"]) == 1


@pytest.mark.model
def test_length_model_caps_each_generate_by_the_text_length(checkpoint_root):
    """--fixture-length's rule on the real upstream generate(): the token budget follows
    the text's token count, and S3Gen receives exactly that many tokens (the fixture
    would otherwise make 8)."""
    import torch

    import cbx
    from cbx.engine.manager import get_manager
    from cbx.dev import fixture

    cbx.load("original", device="cpu", model_dir=checkpoint_root)
    try:
        tts = get_manager().loaded.tts
        rate = 0.05
        lengths = {}
        for text in ("Short one here.", "A noticeably longer sentence, with more words in it."):
            text_tokens = tts.tokenizer.text_to_tokens(text).shape[-1] + 2   # [START] [STOP]
            with bench._Probe(tts, rate) as probe:
                torch.manual_seed(0)
                wav = tts.generate(text)
            run, = probe.runs
            assert run["max_new_tokens"] == max(2, round(rate * text_tokens))
            assert run["max_new_tokens"] < fixture.DEFAULT_STOP_AFTER
            assert wav.shape[-1] == run["max_new_tokens"] * fixture.SAMPLES_PER_TOKEN
            lengths[text] = wav.shape[-1]
        assert len(set(lengths.values())) == 2        # longer text, more audio
    finally:
        cbx.unload()


def test_length_model_is_refused_where_it_cannot_apply(capsys):
    for argv in (["--fixture-length", "1.7", "--variant", "turbo"],
                 ["--fixture-length", "1.7", "--model-dir", "model_cache"],
                 ["--fixture-length", "0"]):
        with pytest.raises(SystemExit) as exc:
            bench.main(argv)
        assert exc.value.code == 2
        assert "--fixture-length" in capsys.readouterr().err


@pytest.mark.model
def test_probe_keeps_streamed_windows_out_of_decode_and_chunk_figures(checkpoint_root,
                                                                      monkeypatch,
                                                                      speech_wav):
    """A streamed chunk calls S3Gen inside T3's loop (a window); the probe times it apart
    instead of charging it to decoding or mistaking it for the chunk's S3Gen call."""
    import cbx
    from cbx.engine import blocks
    from cbx.dev import fixture
    from cbx.engine.manager import get_manager

    monkeypatch.setattr(blocks, "FIRST_BLOCK_TOKENS", 5)     # a window inside the chunk
    monkeypatch.setattr(blocks, "HOLD_TOKENS", 2)
    cbx.load("original", device="cpu", model_dir=checkpoint_root)
    try:
        tts = get_manager().loaded.tts
        got = []
        with bench._Probe(tts) as probe:
            cbx.speak("Short one here.", voice=cbx.voice(speech_wav), seed=0,
                      on_block=got.append)
        run, = probe.runs
        assert len(got) == 2                         # the window, then the chunk's end
        assert run["window_s"] > 0 and run["s3gen_s"] > 0 and run["decode_s"] > 0
        assert run["t3_calls"] == fixture.DEFAULT_STOP_AFTER + 1
        assert run["audio_s"] * bench.SAMPLE_RATE == fixture.expected_samples("original")
    finally:
        get_manager().unload()

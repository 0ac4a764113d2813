"""Turbo and Multilingual through cbx on random-weight checkpoints in their real layouts:
each loads through its own upstream class, speaks, and unloads cleanly."""
from __future__ import annotations

import pytest

import cbx
from cbx import errors
from cbx.engine.manager import get_manager
from cbx.dev import clips

pytestmark = pytest.mark.model


@pytest.fixture
def fresh_manager():
    get_manager().unload()
    yield get_manager()
    report = get_manager().unload()
    assert report.released, report.alive_modules


def test_multilingual_speaks_the_chosen_language(multilingual_root, monkeypatch,
                                                 fresh_manager, speech_wav):
    monkeypatch.setenv("CBX_MODEL_DIR", str(multilingual_root))
    with pytest.raises(errors.InvalidSetting) as info:
        cbx.speak("Hola.", variant="multilingual", language="xx", device="cpu")
    assert "fr" in info.value.solution
    voice = cbx.voice(speech_wav, variant="multilingual")
    result = cbx.speak("Bonjour tout le monde. Comment allez-vous?", voice=voice,
                       variant="multilingual", language="fr", device="cpu", seed=4,
                       max_chunk_chars=30)
    assert result.variant == "multilingual" and result.language == "fr"
    assert len(result.chunks) == 2 and result.duration > 0
    assert fresh_manager.describe().variant == "multilingual"
    assert type(fresh_manager.loaded.tts).__name__ == "ChatterboxMultilingualTTS"


def test_turbo_needs_a_longer_clip_and_says_what_it_ignores(turbo_root, monkeypatch,
                                                            fresh_manager, speech_wav,
                                                            tmp_path):
    monkeypatch.setenv("CBX_MODEL_DIR", str(turbo_root))
    short = clips.speech_clip(tmp_path / "four_seconds.wav", 4.0)
    with pytest.raises(errors.InvalidVoiceFile) as info:
        cbx.voice(short, variant="turbo")
    assert "5" in info.value.message
    voice = cbx.voice(speech_wav, variant="turbo")
    result = cbx.speak("Turbo is the fast one.", voice=voice, variant="turbo",
                       device="cpu", seed=2, cfg_weight=0.9, exaggeration=0.7)
    assert type(fresh_manager.loaded.tts).__name__ == "ChatterboxTurboTTS"
    assert result.duration > 0
    assert any("cfg_weight" in note for note in result.notes)
    assert any("exaggeration" in note for note in result.notes)
    assert "cfg_weight" not in result.settings or result.settings["cfg_weight"] == 0.0


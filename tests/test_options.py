"""Wrong types and values for speak()/load() settings are `invalid_setting` naming the
setting and what it accepts, raised before any model is loaded (issue 15, classes 9
and 15); text with nothing to speak is refused before loading too."""
from __future__ import annotations

import math

import pytest

import cbx
from cbx.errors import InvalidSetting, InvalidText


@pytest.fixture
def nothing_loads(monkeypatch):
    """The case must fail before a model is touched."""
    from cbx.engine.manager import ModelManager

    def refuse(*_args, **_kwargs):
        raise AssertionError("a model load was attempted for invalid input")
    monkeypatch.setattr(ModelManager, "load", refuse)


@pytest.mark.parametrize("kwargs,name", [
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": [.5]}, "top_p"),
    ({"exaggeration": math.nan}, "exaggeration"),
    ({"cfg_weight": math.inf}, "cfg_weight"),
    ({"min_p": True}, "min_p"),
    ({"repetition_penalty": -0.5}, "repetition_penalty"),
    ({"temperature": 9.0}, "temperature"),
    ({"seed": "abc"}, "seed"),
    ({"seed": math.nan}, "seed"),
    ({"seed": math.inf}, "seed"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"variant": ["original"]}, "variant"),
    ({"variant": {"a": 1}}, "variant"),
    ({"variant": "nope"}, "variant"),
    ({"device": 1}, "device"),
    ({"device": "gpu"}, "device"),
    ({"dtype": 16}, "dtype"),
    ({"dtype": "int4"}, "dtype"),
    ({"variant": "multilingual", "language": 5}, "anguage"),
    ({"variant": "multilingual", "language": "xx"}, "anguage"),
])
def test_bad_speak_settings_are_invalid_setting_naming_the_setting(kwargs, name,
                                                                 nothing_loads):
    with pytest.raises(InvalidSetting) as info:
        cbx.speak("Hello there.", **kwargs)
    assert name in info.value.message or name in info.value.solution
    assert info.value.solution, "every refusal says what is accepted"


@pytest.mark.parametrize("kwargs", [
    {"variant": ["original"]}, {"device": 1}, {"device": [0]}, {"device": "gpu"},
    {"dtype": 16}, {"dtype": "int4"},
])
def test_bad_load_arguments_are_invalid_setting(kwargs):
    from cbx.engine.manager import ModelManager

    with pytest.raises(InvalidSetting):
        ModelManager().load(**kwargs)
    assert ModelManager().loaded is None


@pytest.mark.parametrize("text", ["😀😀😀", "!!! ... ???", "— – …", "🎉 ! 🎉"])
def test_text_with_nothing_to_speak_is_refused_before_loading(text, nothing_loads):
    with pytest.raises(InvalidText, match="nothing to speak"):
        cbx.speak(text)


@pytest.mark.parametrize("kwargs,error", [
    ({"voice": 123}, "InvalidVoiceFile"), ({"voice": [b"RIFF"]}, "InvalidVoiceFile"),
    ({"progress": "yes"}, "InvalidSetting"), ({"on_chunk": 5}, "InvalidSetting"),
    ({"cancel": "stop"}, "InvalidSetting"), ({"cancel": object()}, "InvalidSetting"),
])
def test_other_speak_arguments_of_the_wrong_type_are_coded_before_loading(kwargs, error,
                                                                        nothing_loads):
    from cbx.errors import CbxError

    with pytest.raises(CbxError) as info:
        cbx.speak("Hello there.", **kwargs)
    assert type(info.value).__name__ == error


@pytest.mark.parametrize("variant", ["original", "turbo", "multilingual"])
@pytest.mark.parametrize("language", [["en"], ("fr",), 5, b"en"])
def test_a_language_that_is_not_a_code_is_refused_for_every_variant(variant, language,
                                                                   nothing_loads):
    """Issue 21 item 8: language=["en"] was accepted silently by the English models;
    a project's saved options (check_options) follow the same rule."""
    from cbx.engine.synth import check_options

    for attempt in (lambda: cbx.speak("Hello there.", variant=variant, language=language),
                    lambda: check_options({"variant": variant, "language": language})):
        with pytest.raises(InvalidSetting) as info:
            attempt()
        assert f"language={language!r} is not a language code" in info.value.message


@pytest.mark.parametrize("language", ["xx", "english", ""])
def test_an_unknown_code_is_refused_even_where_the_variant_has_no_languages(
        language, nothing_loads):
    from cbx.engine.synth import check_options

    for attempt in (lambda: cbx.speak("Hello there.", language=language),
                    lambda: check_options({"variant": "turbo", "language": language})):
        with pytest.raises(InvalidSetting) as info:
            attempt()
        assert "not a language code cbx knows" in info.value.message
        assert "multilingual" in info.value.solution and "fr" in info.value.solution


def test_a_known_code_for_an_english_only_variant_is_kept_for_its_note():
    """A real code is not an error for the English models: speak() says in the notes
    that it was not used (tests/test_stream.py sees the note on the real model)."""
    from cbx.engine.synth import check_options

    kept = check_options({"variant": "original", "language": "FR"})
    assert kept == {"variant": "original", "language": "FR"}

"""Chatterbox Studio's kernel-side package: load a Chatterbox model, clone a voice,
speak long text, unload and get the memory back.

    import cbx
    cbx.status()
    voice = cbx.voice("my_clip.wav")
    result = cbx.speak("Hello there.", voice=voice, seed=42)
    result.save("out.wav")
    cbx.unload()

Importing cbx is cheap and never imports torch or chatterbox, so a broken installation
can still be reported (`cbx.status()` says what is missing and how to fix it).
"""
from __future__ import annotations

from . import errors
from .errors import CbxError

__version__ = "0.1.0"
__all__ = ["status", "load", "unload", "voice", "saved_voices", "speak", "stream",
           "CancelToken", "Result", "AudioBlock", "errors", "CbxError", "project",
           "projects"]


def status(model_dir=None):
    """What is installed, which weights are present, device and memory, what is loaded."""
    from .envcheck import status as _status
    from .engine.manager import get_manager

    return _status(model_dir=model_dir, model_state=get_manager().describe().to_dict())


def load(variant: str = "original", device: str = "auto", dtype: str = "float32",
         model_dir=None):
    """Load a model now (optional: speak() loads on first use). Returns its description
    (a frozen ModelInfo: state, variant, device, dtype, load time, watermark)."""
    from .engine.manager import get_manager

    return get_manager().load(variant, device=device, dtype=dtype, model_dir=model_dir)


def unload():
    """Free the model and report memory before/after (an UnloadReport)."""
    from .engine.manager import get_manager

    return get_manager().unload()


def voice(source, name: str | None = None, *, variant: str = "original"):
    """Validate a reference clip (path or bytes), save it in the voice library, return it."""
    from .voices import load_voice

    return load_voice(source, name, variant=variant)


def saved_voices():
    """The saved voices in the library (named so it never shadows the cbx.voices module)."""
    from .voices import list_voices

    return list_voices()


def speak(text: str, voice=None, **options):
    """Speak text of any length; see cbx.engine.synth.speak for every option."""
    from .engine.synth import speak as _speak

    return _speak(text, voice, **options)


def stream(text: str, voice=None, **options):
    """Speak text as a generator of AudioBlocks, the first after about 0.8 s of speech
    is decoded; takes speak()'s options; see cbx.engine.synth.stream."""
    from .engine.synth import stream as _stream

    return _stream(text, voice, **options)


def project(name: str, text=None, **options):
    """Open or create a long-form project on disk; see cbx.longform.project."""
    from .longform import project as _project

    return _project(name, text, **options)


def projects():
    """The projects in the output folder, with their progress."""
    from .longform import projects as _projects

    return _projects()


def __getattr__(name):
    # Classes that live in heavy-ish modules, resolved on first use only.
    if name in ("CancelToken", "Result", "Progress"):
        from .engine import synth

        return getattr(synth, name)
    if name == "AudioBlock":
        from .engine.blocks import AudioBlock

        return AudioBlock
    raise AttributeError(f"module 'cbx' has no attribute {name!r}")

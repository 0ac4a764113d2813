"""Shared test fixtures.

Model checkpoints
    Real weights cannot be downloaded here (docs/DESIGN.md), so `checkpoint_root` is a model
    root (what ``CBX_MODEL_DIR`` points to) holding ``original/`` with random weights in
    the real on-disk layout, built by cbx/dev/fixture.py once per machine and cached in
    ``$CBX_FIXTURE_CACHE`` (default ``<repo>/.fixture_cache``).  Every ``generate()`` of
    such a model yields exactly ``fixture.DEFAULT_STOP_AFTER`` (8) speech tokens =
    ``fixture.expected_samples(variant)`` samples at 24 kHz.

    A test that requests ``checkpoint_root`` gets ``CBX_MODEL_DIR`` set to it for its
    own duration.  Module- or session-scoped fixtures must set it themselves, e.g.::

        @pytest.fixture(scope="module")
        def model_env(checkpoint_root):
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("CBX_MODEL_DIR", str(checkpoint_root))
                yield checkpoint_root

    or, inside a test: ``monkeypatch.setenv("CBX_MODEL_DIR", str(checkpoint_root))``.
    ``multilingual_root`` / ``turbo_root`` are the same kind of root with those variants
    (building each costs about a minute the first time).  Mark tests that load a
    full-size model with ``@pytest.mark.model`` (~7 GB RAM, ~20 s load, ~25 s a
    generation on 2 CPU cores); ``pytest -m "not model"`` skips them.

User folders
    Every test runs with ``CBX_VOICE_DIR``, ``CBX_OUTPUT_DIR`` and ``CBX_STATE_DIR``
    pointing at fresh temporary folders, so no test writes into the repository.

Clips
    ``speech_wav`` (6 s espeak-ng speech, 24 kHz 16-bit WAV), ``long_speech_wav``
    (20 s), ``short_speech_wav`` (1.5 s, below every variant's minimum), ``silent_wav``,
    ``tone_wav``; made by cbx/dev/clips.py, session-scoped and read-only by
    convention (copy before modifying).
"""
from __future__ import annotations

import pytest

from cbx.dev import clips
from cbx.dev import fixture


def pytest_configure(config):
    config.addinivalue_line("markers", "model: loads a full-size random-weight chatterbox "
                                       "model (slow: ~7 GB RAM, tens of seconds)")
    config.addinivalue_line("markers", "e2e: drives the Voila dashboard in a real browser")


# --------------------------------------------------------------------------- isolation

@pytest.fixture(autouse=True)
def _isolated_user_dirs(request, monkeypatch, tmp_path_factory):
    """Voices, outputs and runtime state go to per-test temp folders, never the repo;
    CBX_MODEL_DIR follows `checkpoint_root` when the test asked for it."""
    base = tmp_path_factory.mktemp("cbx_user_dirs")
    monkeypatch.setenv("CBX_VOICE_DIR", str(base / "voices"))
    monkeypatch.setenv("CBX_OUTPUT_DIR", str(base / "outputs"))
    monkeypatch.setenv("CBX_STATE_DIR", str(base / "state"))
    if "checkpoint_root" in request.fixturenames:
        monkeypatch.setenv("CBX_MODEL_DIR", str(request.getfixturevalue("checkpoint_root")))


# --------------------------------------------------------------------------- checkpoints

@pytest.fixture(scope="session")
def checkpoint_root():
    """Model root with `original/` (random weights, real layout); built once, cached."""
    return fixture.cached_checkpoint_root(("original",))


@pytest.fixture(scope="session")
def multilingual_root():
    """Model root with `multilingual/`.  Loading it offline needs the pkuseg shim this
    fixture installs for the session (see fixture.offline_multilingual)."""
    root = fixture.cached_checkpoint_root(("multilingual",))
    with fixture.offline_multilingual():
        yield root


@pytest.fixture(scope="session")
def turbo_root():
    """Model root with `turbo/` (GPT-2 T3, meanflow S3Gen, byte-level BPE tokenizer)."""
    return fixture.cached_checkpoint_root(("turbo",))


@pytest.fixture(scope="module")
def model_env(checkpoint_root):
    """CBX_MODEL_DIR at the `original` fixture for a whole module, which shares one loaded
    model (a load costs ~15 s and ~3 GB); it is unloaded when the module ends."""
    from cbx.engine.manager import get_manager

    patch = pytest.MonkeyPatch()
    patch.setenv("CBX_MODEL_DIR", str(checkpoint_root))
    yield checkpoint_root
    get_manager().unload()
    patch.undo()


@pytest.fixture
def loaded(model_env, monkeypatch):
    """The kernel's model manager with the `original` fixture loaded on the CPU."""
    import cbx
    from cbx.engine.manager import get_manager

    monkeypatch.setenv("CBX_MODEL_DIR", str(model_env))
    cbx.load("original", device="cpu")
    return get_manager()


# --------------------------------------------------------------------------- clips

@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def speech_wav(clip_dir):
    """6 s of English speech (espeak-ng; a voice-like signal if espeak-ng is missing):
    above every variant's minimum (Turbo's 5 s), and short, because S3Gen reads the whole
    clip at every step of every chunk."""
    return clips.speech_clip(clip_dir / "speech_6s.wav", 6.0)


@pytest.fixture(scope="session")
def long_speech_wav(clip_dir):
    """20 s of speech: longer than any variant reads, for trimming/limit tests."""
    return clips.speech_clip(clip_dir / "speech_20s.wav", 20.0)


@pytest.fixture(scope="session")
def short_speech_wav(clip_dir):
    """1.5 s of speech: shorter than every variant's minimum voice length."""
    return clips.speech_clip(clip_dir / "speech_1_5s.wav", 1.5)


@pytest.fixture(scope="session")
def silent_wav(clip_dir):
    return clips.silent_clip(clip_dir / "silent_5s.wav", 5.0)


@pytest.fixture(scope="session")
def tone_wav(clip_dir):
    return clips.tone_clip(clip_dir / "tone_5s.wav", 5.0)


@pytest.fixture
def no_espeak(monkeypatch):
    """Pretend espeak-ng is not installed (the fallback clip path)."""
    monkeypatch.setattr(clips, "_espeak_binary", lambda: None)

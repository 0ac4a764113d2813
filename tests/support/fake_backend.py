"""The dashboard's backend without a model: `FakeBackend` replaces only the model
(status, voices, text splitting, Result, saving and WAV encoding are the real cbx
code), so widget and controller tests see what the page shows; and the `env` and
`backend` fixtures that give each test its own folders.

Test modules take the fixtures by importing them:
`from tests.support.fake_backend import backend, env  # noqa: F401`.
"""
from __future__ import annotations

import dataclasses
import json
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cbx.engine.blocks import AudioBlock
from cbx.engine.synth import CancelToken, Progress, Result
from cbx.errors import GenerationFailed, InvalidSetting
from cbx.state import ModelInfo, ModelState
from cbx.text import split_text
from cbx.ui.backend import Backend, ProjectsOnDisk
from cbx.variants import VARIANTS

SR = 24_000


def write_fake_weights(root: Path, variant: str = "original") -> Path:
    """Structurally valid (tiny) weight files so the file check calls them complete."""
    folder = root / variant
    folder.mkdir(parents=True, exist_ok=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    for name in VARIANTS[variant].required_files:
        path = folder / name
        if name.endswith(".safetensors"):
            path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
        elif name.endswith(".json"):
            path.write_text("{}", encoding="utf-8")
        elif name.endswith(".txt"):
            path.write_text("#version: 0.2\n", encoding="utf-8")
        else:
            raise AssertionError(f"no fake writer for {name}")
    return root


class FakeUnloadReport:
    def __init__(self, variant):
        self.variant = variant
        self.before = {"rss_mb": 3000.0}
        self.after = {"rss_mb": 900.0}

    def summary(self) -> str:
        if self.variant is None:
            return "No model was loaded; nothing to free."
        return f"Unloaded {self.variant}: process RAM 3000 -> 900 MiB; all model memory released."


class FakeBackend(ProjectsOnDisk, Backend):
    """The real cbx helpers around a pretend model that makes sine-wave chunks
    (projects too: the real cbx.longform, each chunk made by this speak()).

    `gate` (when set) makes each chunk wait until the test releases it, so a test can
    look at the page while a generation is running.
    """

    def __init__(self, model_dir: Path, output_dir: Path):
        self.model_dir = model_dir
        self._output_dir = output_dir
        self.state = ModelInfo(idle_unload_minutes=15.0)
        self.listeners = []
        self.idle_minutes = None
        self.gate: threading.Event | None = None
        self.chunk_started = threading.Event()
        self.fail_with: Exception | None = None
        self.speak_calls: list[dict] = []
        self.prepared: list[tuple] = []      # prepare_voice calls: (voice name, exaggeration)
        self.split_calls: list = []
        self.token = None
        self.fail_after: int | None = None     # raise after this many chunks

    def _set(self, **info):
        self.state = ModelInfo(idle_unload_minutes=self.state.idle_unload_minutes, **info)
        self._notify()

    def _change(self, **info):
        """Change some fields of the current state (e.g. ready -> generating)."""
        self.state = dataclasses.replace(self.state, **info)
        self._notify()

    def _notify(self):
        for callback in list(self.listeners):
            callback(self.state)

    # environment + model
    def status(self, model_state=None, device="auto"):
        from cbx.envcheck import status

        return status(model_dir=self.model_dir, model_state=model_state, device="cpu")

    def describe_model(self):
        return self.state

    def load(self, variant, device, dtype):
        self._set(state=ModelState.LOADING)
        self._set(state=ModelState.READY, variant=variant, device="cpu", dtype=dtype,
                  load_seconds=0.5, loaded_at="now", voice=None)
        return self.state

    def unload(self):
        variant = self.state.variant
        self._set(state=ModelState.NOT_LOADED,
                  last_unload=FakeUnloadReport(variant).summary())
        return FakeUnloadReport(variant)

    def add_model_listener(self, callback):
        self.listeners.append(callback)

    def start_idle_unload(self, minutes):
        self.idle_minutes = minutes
        self.state = dataclasses.replace(self.state, idle_unload_minutes=minutes)

    # voices and text: the real modules
    def list_voices(self, variant="original"):
        from cbx.voices import list_voices

        return list_voices(variant=variant)

    def save_voice(self, data, filename, variant):
        from cbx.voices import load_voice

        return load_voice(data, name=filename, variant=variant)

    def builtin_voice(self, variant):
        return None

    def split_text(self, text, max_chars, *, first_chunk_chars):
        # no default: the controller must say which first chunk it counts with
        self.split_calls.append(first_chunk_chars)
        return split_text(text, max_chars=max_chars, first_chunk_chars=first_chunk_chars)

    def estimate_seconds(self, text):
        from cbx.text import estimate_seconds

        return estimate_seconds(text)

    def paralinguistic_tags(self, variant):
        from cbx.tags import variant_tags

        return variant_tags(variant, self.model_dir)

    def make_cancel_token(self):
        return CancelToken()

    def cancel_running(self):
        return self.token is not None and (self.token.cancel() or True)

    def output_dir(self):
        return self._output_dir


    def prepare_voice(self, voice, *, exaggeration):
        if not self.state.ready:
            raise InvalidSetting("No model is loaded.", "Load a model first.")
        self.prepared.append((voice.name, exaggeration))

    def speak(self, text, voice, *, variant, device, dtype, seed, max_chunk_chars,
              first_chunk_chars, progress, cancel, language=None, on_chunk=None,
              on_block=None, rate=1.0, **settings):
        from cbx import audio
        from cbx.errors import GenerationCancelled

        self.speak_calls.append(dict(text=text, voice=voice, variant=variant, seed=seed,
                                     language=language, settings=settings,
                                     max_chunk_chars=max_chunk_chars,
                                     first_chunk_chars=first_chunk_chars, rate=rate))
        self.token = cancel
        progress = progress or (lambda _event: None)      # speak() takes None too
        cancel = cancel or CancelToken()
        if self.fail_with is not None:
            raise self.fail_with
        if not self.state.ready:
            progress(Progress(0, 0, 0, 0.0, None, "loading"))
            self.load(variant, device, dtype)
        chunks = split_text(text, max_chars=max_chunk_chars, first_chunk_chars=first_chunk_chars)
        started = time.perf_counter()
        pieces = []
        for i, chunk in enumerate(chunks):
            self._change(state=ModelState.GENERATING)
            progress(Progress(i + 1, len(chunks), 40, time.perf_counter() - started,
                              None if i == 0 else 1.0, "tokens"))
            self.chunk_started.set()
            if self.gate is not None:
                self.gate.wait(10)
                self.gate.clear()
            if cancel.cancelled:
                self._change(state=ModelState.READY)
                raise GenerationCancelled(
                    f"Generation cancelled after {i} of {len(chunks)} chunks.",
                    "Press Generate to start again.")
            if self.fail_after == i:
                raise GenerationFailed(f"Chunk {i + 1} failed.", "Try again.")
            t = np.arange(int(0.5 * SR)) / SR
            pitch = 200 + 50 * i + (seed or 0) % 100 + len(chunk) % 50   # seed, text
            wav = 0.3 * np.sin(2 * np.pi * pitch * t)
            wav = audio.stretch(wav.astype(np.float32), SR, rate)
            if on_block is not None:      # two contiguous blocks per chunk, as speak() sends
                start = sum(len(p) for p in pieces)
                for k, half in enumerate(np.array_split(wav, 2)):
                    on_block(AudioBlock(half, SR, i + 1, start / SR,
                                        last=(i == len(chunks) - 1 and k == 1)))
                    start += len(half)
            pieces.append(wav)
            progress(Progress(i + 1, len(chunks), 0, time.perf_counter() - started, 0.0,
                              "chunk_done"))
            if on_chunk is not None:
                on_chunk(i, len(chunks), wav, SR)
        self._change(state=ModelState.READY)
        used_seed = seed if seed is not None else 1234
        return Result(wav=np.concatenate(pieces), sample_rate=SR, text=text,
                      voice=getattr(voice, "name", voice) or "built-in", variant=variant,
                      seed=used_seed, settings=dict(settings), chunks=chunks,
                      timings={"total": 1.5, "first_audio": 0.4}, device="cpu",
                      dtype=dtype, language=language, rate=rate)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CBX_VOICE_DIR", str(tmp_path / "voices"))
    monkeypatch.setenv("CBX_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("CBX_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


@pytest.fixture
def backend(env):
    return FakeBackend(write_fake_weights(env / "models"), env / "outputs")

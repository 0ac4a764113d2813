"""The model manager's two locks under contention (issue 15, class 20): one documented
order, so a load or switch and a generation never deadlock, and no unload frees the
model while a generation still runs after the unload's wait ran out.

The model here is a small stand-in with the attributes the manager inspects (t3,
s3gen, ve as torch modules); loading real checkpoints is tested elsewhere, and these
tests are about who may hold the model when."""
from __future__ import annotations

import threading
import time

import pytest

torch = pytest.importorskip("torch")

from cbx.engine import manager as M  # noqa: E402
from cbx.errors import ModelBusy  # noqa: E402
from cbx.engine.synth import CancelToken  # noqa: E402


class TinyTTS:
    def __init__(self):
        self.t3, self.s3gen, self.ve = (torch.nn.Linear(2, 2) for _ in range(3))
        self.conds = None
        self.sr = 24_000


@pytest.fixture
def manager(monkeypatch, tmp_path):
    monkeypatch.setattr(M.weights, "require_weights", lambda variant, model_dir=None: tmp_path)
    monkeypatch.setattr(M, "_load_upstream", lambda spec, folder, device, dtype: TinyTTS())
    mgr = M.ModelManager()
    mgr.load("original", device="cpu")
    yield mgr
    if mgr.loaded is not None:
        mgr.unload()


def test_switching_variant_during_a_generation_is_refused_not_deadlocked(manager):
    started, release = threading.Event(), threading.Event()

    def generate():
        with manager.generation(CancelToken()):
            started.set()
            release.wait(10)

    worker = threading.Thread(target=generate)
    worker.start()
    assert started.wait(5)
    outcome = []
    switcher = threading.Thread(
        target=lambda: outcome.append(_try(lambda: manager.load("turbo", device="cpu"))))
    switcher.start()
    switcher.join(5)
    assert not switcher.is_alive(), "load() and generation() deadlocked"
    assert isinstance(outcome[0], ModelBusy)
    assert manager.load("original", device="cpu").state == "generating", \
        "loading what is loaded stays a no-op, even during a generation"
    release.set()
    worker.join(5)
    assert manager.state == "ready"


def test_unload_never_frees_the_model_under_a_running_generation(manager):
    started, release = threading.Event(), threading.Event()
    seen = []

    def generate():
        with manager.generation(CancelToken()) as loaded:
            started.set()
            release.wait(10)             # a chunk that ignores the cancel for a while
            seen.append(loaded.tts.t3.weight.sum().item())

    worker = threading.Thread(target=generate)
    worker.start()
    assert started.wait(5)
    with pytest.raises(ModelBusy, match="not unloaded"):
        manager.unload(wait=0.2)
    assert manager.loaded is not None, "the model must still be there"
    release.set()
    worker.join(5)
    assert seen and manager.unload().released


def test_many_threads_loading_generating_and_unloading_finish(manager):
    """A burst of every operation from several threads: each ends (no deadlock) with a
    result or a coded error, and the manager is left consistent."""
    errors = []

    def generate():
        try:
            manager.load("original", device="cpu")
            with manager.generation(CancelToken()):
                time.sleep(0.01)
        except ModelBusy:
            pass
        except Exception as exc:           # anything else is a bug
            errors.append(exc)

    def unload():
        try:
            manager.unload(wait=0.5)
        except ModelBusy:
            pass
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=generate if i % 3 else unload) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert errors == []
    assert (manager.loaded is None) == (manager.state == "not_loaded")


def _try(fn):
    try:
        return fn()
    except Exception as exc:
        return exc


def test_a_load_that_fails_inside_upstream_is_model_load_failed(monkeypatch, tmp_path):
    monkeypatch.setattr(M.weights, "require_weights", lambda variant, model_dir=None: tmp_path)

    def broken(*_args):
        raise RuntimeError("size mismatch for t3.tfmr")

    monkeypatch.setattr(M, "_load_upstream", broken)
    mgr = M.ModelManager()
    from cbx.errors import ModelLoadFailed

    with pytest.raises(ModelLoadFailed) as info:
        mgr.load("original", device="cpu")
    assert info.value.code == "model_load_failed" and "size mismatch" in info.value.message
    assert "setup_env.py --models original" in info.value.solution and info.value.traceback
    assert mgr.state == "not_loaded" and mgr.holds.live() == []

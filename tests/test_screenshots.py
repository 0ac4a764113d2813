"""The README screenshots' weights: the random-weight checkpoint is linked into the model
cache only for the shots and only where the user has no weights of their own, and the
link never outlives the run (not even a killed run's, which the next run removes)."""
from __future__ import annotations

import pytest

from cbx.dev import fixture
from cbx.dev.screenshots import weights_in_model_cache


def test_links_the_checkpoint_for_the_block_and_removes_it(tmp_path):
    source = fixture.cached_checkpoint_root(("original",)) / "original"
    with weights_in_model_cache(tmp_path) as cache:
        assert cache == tmp_path
        assert (tmp_path / "original").is_symlink()
        assert (tmp_path / "original").resolve() == source.resolve()
        assert (tmp_path / "original" / "t3_cfg.safetensors").is_file()
    assert not (tmp_path / "original").exists() and not (tmp_path / "original").is_symlink()


def test_removes_the_link_when_the_block_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with weights_in_model_cache(tmp_path):
            raise RuntimeError("page failed")
    assert not (tmp_path / "original").is_symlink()


def test_the_users_own_weights_are_used_and_never_touched(tmp_path):
    own = tmp_path / "original"
    own.mkdir()
    (own / "t3_cfg.safetensors").write_bytes(b"the user's real weights")
    with weights_in_model_cache(tmp_path):
        assert not own.is_symlink()
    assert (own / "t3_cfg.safetensors").read_bytes() == b"the user's real weights"


def test_a_killed_runs_link_is_replaced_and_then_removed(tmp_path):
    source = fixture.cached_checkpoint_root(("original",)) / "original"
    (tmp_path / "original").symlink_to(source, target_is_directory=True)
    with weights_in_model_cache(tmp_path):
        assert (tmp_path / "original").is_symlink()
    assert not (tmp_path / "original").is_symlink()

"""Only one kernel may hold a model on an exclusive device (the 6 GB GPU); a killed
holder must never block. The GPU is simulated by marking 'cpu' exclusive."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from cbx.errors import GpuInUse
from cbx.manager import ModelHolds

HOLDER = textwrap.dedent("""
    import os, sys, time
    from cbx.manager import ModelHolds, _process_create_time
    holds = ModelHolds()
    holds.claim({"pid": os.getpid(), "create_time": _process_create_time(),
                 "session": "kernel pid %d (holder.ipynb)" % os.getpid(),
                 "variant": "original", "device": "cpu", "since": "now"}, {"cpu"})
    print("claimed", flush=True)
    time.sleep(120)
""")


def _record(pid=None, device="cpu"):
    from cbx.manager import _process_create_time

    return {"pid": pid or os.getpid(), "create_time": _process_create_time(),
            "session": "this test", "variant": "original", "device": device, "since": "now"}


@pytest.fixture
def holder(tmp_path):
    env = dict(os.environ, CBX_STATE_DIR=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE,
                            text=True, cwd=os.getcwd())
    assert proc.stdout.readline().strip() == "claimed"
    yield proc
    proc.kill()
    proc.wait()


def test_second_process_is_refused_and_told_who_holds(holder, tmp_path):
    holds = ModelHolds(tmp_path)
    with pytest.raises(GpuInUse) as info:
        holds.claim(_record(), {"cpu"})
    err = info.value
    assert err.code == "gpu_in_use"
    assert f"kernel pid {holder.pid} (holder.ipynb)" in err.message
    assert "python -m cbx deload" in err.solution
    assert [r["pid"] for r in holds.live()] == [holder.pid]


def test_non_exclusive_device_is_not_blocked(holder, tmp_path):
    holds = ModelHolds(tmp_path)
    holds.claim(_record(), {"cuda"})  # 'cpu' is not exclusive here: both may hold
    assert sorted(r["pid"] for r in holds.live()) == sorted([holder.pid, os.getpid()])


def test_killed_holders_stale_hold_is_cleared(holder, tmp_path):
    holds = ModelHolds(tmp_path)
    holder.kill()
    holder.wait()
    holds.claim(_record(), {"cpu"})
    assert [r["pid"] for r in holds.live()] == [os.getpid()]
    assert not (tmp_path / "holds" / f"{holder.pid}.json").exists()


def test_recycled_pid_does_not_keep_a_hold(tmp_path):
    holds = ModelHolds(tmp_path)
    stale = _record()
    stale["create_time"] -= 3600  # same pid, but a process started an hour earlier
    holds.root.mkdir(parents=True)
    (holds.root / f"{os.getpid()}.json").write_text(__import__("json").dumps(stale))
    assert holds.live() == []


def test_lock_left_by_killed_process_is_broken(tmp_path):
    holds = ModelHolds(tmp_path)
    holds.root.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (holds.root / ".lock").write_text(dead)
    started = time.monotonic()
    holds.claim(_record(), {"cpu"})
    assert time.monotonic() - started < 5
    assert not (holds.root / ".lock").exists()

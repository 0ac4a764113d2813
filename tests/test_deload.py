"""`python -m cbx deload` frees a model held by another process (a kernel), and a
second kernel cannot load onto the held device meanwhile. The GPU is simulated by
marking 'cpu' as an exclusive device."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.model

KERNEL = textwrap.dedent("""
    import sys, time, cbx
    cbx.load("original", device="cpu")
    print("loaded", flush=True)
    from cbx.engine.manager import get_manager
    while get_manager().loaded is not None:
        time.sleep(0.2)
    print("unloaded", flush=True)
    time.sleep(60)
""")

SECOND_KERNEL = textwrap.dedent("""
    import json, cbx
    try:
        cbx.load("original", device="cpu")
        print(json.dumps({"loaded": True}))
    except cbx.CbxError as exc:
        print(json.dumps(exc.to_dict()))
""")


def _wait_for_line(proc, marker: str) -> bool:
    """Read the child's stdout up to `marker` (upstream prints its own lines too)."""
    for line in proc.stdout:
        if line.strip() == marker:
            return True
    return False


def test_deload_unloads_the_holder_and_frees_the_device(checkpoint_root, tmp_path):
    env = dict(os.environ, CBX_MODEL_DIR=str(checkpoint_root), CBX_STATE_DIR=str(tmp_path),
               CBX_EXCLUSIVE_DEVICES="cpu", CBX_VOICE_DIR=str(tmp_path / "voices"))
    holder = subprocess.Popen([sys.executable, "-c", KERNEL], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for_line(holder, "loaded")

        second = subprocess.run([sys.executable, "-c", SECOND_KERNEL], env=env, text=True,
                                capture_output=True, timeout=120)
        refusal = json.loads(second.stdout.strip().splitlines()[-1])
        assert refusal["error"] == "gpu_in_use"
        assert f"kernel pid {holder.pid}" in refusal["message"]

        done = subprocess.run([sys.executable, "-m", "cbx", "deload", "--json"], env=env,
                              text=True, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr
        [outcome] = json.loads(done.stdout)
        assert outcome["pid"] == holder.pid and outcome["action"] == "unloaded"
        assert outcome["report"]["released"] is True
        assert outcome["report"]["freed"]["rss_mb"] > 500  # a full-size model's weights
        assert _wait_for_line(holder, "unloaded")
        assert holder.poll() is None  # unloaded, not killed: the kernel lives on
        assert not list((tmp_path / "holds").glob("*.json"))

        human = subprocess.run([sys.executable, "-m", "cbx", "deload"], env=env, text=True,
                               capture_output=True, timeout=60)
        assert "nothing to free" in human.stdout
    finally:
        holder.kill()
        holder.wait()

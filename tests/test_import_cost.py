"""`import cbx` must stay cheap: the dashboard has to render and explain a missing or
broken installation, so nothing heavy may be imported until a function needs it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchaudio", "chatterbox", "librosa", "soundfile", "ipywidgets",
         "transformers")

_PROBE = """
import json, sys
{imports}
heavy = {heavy!r}
print(json.dumps([m for m in heavy if m in sys.modules]))
"""


def _loaded_heavy(imports: str) -> list[str]:
    code = _PROBE.format(imports=imports, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("imports", [
    "import cbx",
    "import cbx, cbx.envcheck, cbx.paths, cbx.variants, cbx.errors",
    "import cbx.__main__",
])
def test_import_does_not_load_heavy_libraries(imports):
    assert _loaded_heavy(imports) == []


def test_library_check_does_not_import_torch():
    # The cheap check must answer from import specs and metadata alone.
    loaded = _loaded_heavy("import cbx.envcheck as e\n"
                           "libs = e.check_libraries()\n"
                           "assert any(l.name == 'torch' for l in libs)")
    assert loaded == []


def test_probe_detects_a_heavy_import():
    # Guard against a probe that could never fail.
    assert "soundfile" in _loaded_heavy("import soundfile")

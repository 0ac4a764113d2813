"""Every notebook in notebooks/ executes top to bottom in a real kernel (nbclient) on the
random-weight checkpoint; and with an empty model folder the experiment notebook stops
at its first checks with model_files_missing and the fix, not somewhere later."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from cbx.dev import clips  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _env(monkeypatch, tmp_path: Path, model_dir: Path) -> None:
    """The kernel nbclient starts inherits this process's environment."""
    monkeypatch.setenv("CBX_MODEL_DIR", str(model_dir))
    monkeypatch.setenv("CBX_VOICE_DIR", str(tmp_path / "voices"))
    monkeypatch.setenv("CBX_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("CBX_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PYTHONPATH", str(REPO))


def _execute(path: Path, cwd: Path, timeout: int = 600):
    nb = nbformat.read(str(path), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def _outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        for value in out.get("data", {}).values():
            parts.append(value if isinstance(value, str) else json.dumps(value))
        parts.append(out.get("evalue", ""))
        parts.extend(out.get("traceback", []))
    return "\n".join(parts)


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"dashboard.ipynb", "experiment.ipynb"} <= names


def test_dashboard_notebook_is_one_line():
    nb = nbformat.read(str(REPO / "notebooks" / "dashboard.ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) == 1
    assert len(code[0].source.strip().splitlines()) == 1


@pytest.mark.model
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path, checkpoint_root, tmp_path, monkeypatch):
    _env(monkeypatch, tmp_path, checkpoint_root)
    clip = clips.speech_clip(tmp_path / "my_voice.wav", 8.0)
    monkeypatch.setenv("CBX_EXAMPLE_VOICE", str(clip))
    nb = _execute(path, tmp_path)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not [o for o in cell.outputs if o.output_type == "error"], cell.source
    text = "\n".join(_outputs_text(c) for c in nb.cells if c.cell_type == "code")
    if path.name == "dashboard.ipynb":
        kinds = {kind for c in nb.cells if c.cell_type == "code" for o in c.outputs
                 for kind in o.get("data", {})}
        assert "application/vnd.jupyter.widget-view+json" in kinds
    if path.name == "experiment.ipynb":
        assert "same seed, same audio:      True" in text
        assert "different seed, same audio: False" in text
        assert "all model memory released" in text
        assert (tmp_path / "outputs" / "notebook_long_text.wav").is_file()
        assert (tmp_path / "outputs" / "notebook_long_text.wav.json").is_file()
        assert (tmp_path / "voices").is_dir(), "the clip was saved in the voice library"


def test_experiment_without_weights_stops_early_with_the_fix(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    _env(monkeypatch, tmp_path, tmp_path / "empty")
    nb = nbformat.read(str(REPO / "notebooks" / "experiment.ipynb"), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(nbclient.exceptions.CellExecutionError) as info:
        client.execute()
    assert info.value.ename == "ModelFilesMissing"
    code = [c for c in nb.cells if c.cell_type == "code"]
    failed = [i for i, c in enumerate(code)
              if any(o.output_type == "error" for o in c.get("outputs", []))]
    guard = next(i for i, c in enumerate(code) if "check-weights" in c.metadata.get("tags", []))
    assert failed == [guard] and guard <= 1, "it must stop at the first checks"
    status_text = _outputs_text(code[0])
    assert "model_files_missing" in status_text
    assert "python setup_env.py" in status_text
    assert "python setup_env.py" in _outputs_text(code[guard])
    assert all(not c.get("outputs") for c in code[guard + 1:]), "nothing ran after the stop"

"""`cbx speak` and `cbx voices` through the real console entry point (issue 14, part 2).

The installed `cbx` script is run with PYTHONPATH at this checkout, so it is the
entry point pyproject.toml declares (`cbx.__main__:main`) running this code. Errors
are checked to fail before a model loads; one test generates on the random-weight
fixture with stderr on a pseudo-terminal, to see the progress bar.
"""
from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import wave
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import srt                    # a dev dependency: python setup_env.py --dev installs it

from cbx import errors
from cbx.__main__ import _ProgressBar, build_parser, main
from cbx.engine.synth import Progress, Result, sidecar_path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / ("cbx.exe" if os.name == "nt" else "cbx")


def _entry_points() -> list[list[str]]:
    """`python -m cbx` always; the `cbx` script where the project is installed."""
    commands = [[sys.executable, "-m", "cbx"]]
    if SCRIPT.is_file():
        commands.append([str(SCRIPT)])
    return commands


def _env(**extra: str) -> dict:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _run(command: list[str], *args: str, timeout: float = 120,
         **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], cwd=REPO, env=_env(**env), text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_console_script_is_declared_for_this_main():
    [script] = [ep for ep in metadata.entry_points(group="console_scripts")
                if ep.name == "cbx"]
    assert script.value == "cbx.__main__:main"
    assert 'cbx = "cbx.__main__:main"' in (REPO / "pyproject.toml").read_text()


def _all_error_classes(cls=errors.CbxError):
    """The taxonomy's classes (cbx/errors.py). A subclass elsewhere, such as the
    server's queue_full (an HTTP answer, never a command's), takes its nearest listed
    ancestor's status, whichever modules this process has imported."""
    if cls.__module__ == errors.__name__:
        yield cls
    for sub in cls.__subclasses__():
        yield from _all_error_classes(sub)


def test_every_error_class_has_its_own_exit_status():
    classes = set(_all_error_classes())
    assert classes <= set(errors.EXIT_STATUS), classes - set(errors.EXIT_STATUS)
    statuses = [errors.EXIT_STATUS[c] for c in classes]
    assert len(set(statuses)) == len(statuses)
    # 0 = ok, 1 = a check failed (cbx status), 2 = bad arguments: none is an error class's
    assert not {0, 1, 2, errors.EXIT_INTERRUPTED} & set(statuses)
    assert errors.exit_status(errors.GenerationFailed("m", "s")) == 21
    assert errors.exit_status(type("Later", (errors.InvalidSetting,), {})("m", "s")) == 16
    from cbx.server.errors import QueueFull

    assert errors.exit_status(QueueFull("m", "s", retry_after=1)) == \
        errors.EXIT_STATUS[errors.ModelBusy]


@pytest.mark.parametrize("command", _entry_points(), ids=lambda c: Path(c[-1]).name)
@pytest.mark.parametrize("args, error", [
    (["Hello there.", "--variant", "bogus"], errors.InvalidSetting),
    (["Hello there.", "--voice", "no/such/clip.wav"], errors.VoiceFileNotFound),
    (["Hello there.", "--voice", "Nobody saved this"], errors.VoiceFileNotFound),
    (["Hello there.", "-o", "out.xyz"], errors.InvalidSetting),
    (["Hello there.", "--seed", "-3"], errors.InvalidSetting),
    (["Hello there.", "--device", "gpu9"], errors.InvalidSetting),
    (["-f", "no/such/text.txt"], errors.InvalidText),
    ([], errors.InvalidText),
    (["...!"], errors.InvalidText),
])
def test_speak_errors_print_code_message_fix_and_exit_with_their_status(
        command, args, error, tmp_path):
    # CBX_MODEL_DIR points at an empty folder: had any of these reached a model load,
    # the error would be model_files_missing instead.
    proc = _run(command, "speak", *args, "--model-dir", str(tmp_path), timeout=60)
    assert proc.returncode == errors.EXIT_STATUS[error], proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith(f"error [{error.code}]: "), proc.stderr
    assert lines[1].startswith("fix: ") and len(lines[1]) > len("fix: ") + 10
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_unsupported_output_suffix_lists_the_supported_ones(tmp_path):
    from cbx.audio import FORMATS

    proc = _run(_entry_points()[-1], "speak", "Hi there.", "-o", str(tmp_path / "a.xyz"))
    assert "'.xyz'" in proc.stderr
    assert all(suffix in proc.stderr for suffix in FORMATS)
    assert not (tmp_path / "a.xyz").exists() and not (tmp_path / "a.wav").exists()


def test_a_taken_output_is_refused_before_the_model_loads_unless_overwrite(tmp_path):
    # --model-dir is an empty folder: a run that got past the output check would end in
    # model_files_missing, after the check, with the file still untouched.
    out = tmp_path / "take.mp3"
    out.write_bytes(b"an earlier take")
    command = _entry_points()[-1]
    proc = _run(command, "speak", "Hello there.", "-o", str(out), "--model-dir",
                str(tmp_path), timeout=60)
    assert proc.returncode == errors.EXIT_STATUS[errors.OutputExists] == 28, proc.stderr
    assert f"error [output_exists]: {out} already exists" in proc.stderr
    assert "--overwrite" in proc.stderr and proc.stdout == ""
    proc = _run(command, "speak", "Hello there.", "-o", str(out), "--overwrite",
                "--model-dir", str(tmp_path), timeout=60)
    assert proc.returncode == errors.EXIT_STATUS[errors.ModelFilesMissing], proc.stderr
    assert out.read_bytes() == b"an earlier take"


def test_an_unwritable_output_folder_is_refused_before_the_model_loads(tmp_path):
    # Tests run as root, whom permissions do not stop: a folder under a regular file
    # cannot be made by anyone.
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    proc = _run(_entry_points()[-1], "speak", "Hello there.", "-o",
                str(blocker / "out.wav"), "--model-dir", str(tmp_path), timeout=60)
    assert proc.returncode == errors.EXIT_STATUS[errors.OutputNotSaved], proc.stderr
    assert f"error [output_not_saved]: Could not write {blocker}" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_speak_saves_refuses_overwrites_and_numbers_its_own_name(tmp_path, monkeypatch,
                                                                 capsys):
    """In process with speak() faked: what is written for -o, --overwrite and no -o."""
    import cbx

    calls = []

    def fake_speak(text, voice, **kwargs):
        calls.append(kwargs["seed"])
        return Result(wav=np.full(2400, kwargs["seed"] / 100, dtype=np.float32),
                      sample_rate=24000, text=text, voice="built-in", variant="original",
                      seed=kwargs["seed"], settings={}, chunks=[text], timings={},
                      device="cpu", dtype="float32")

    monkeypatch.setattr(cbx, "speak", fake_speak)
    out = tmp_path / "new" / "take.flac"

    def seed_of(path):
        return json.loads(sidecar_path(path).read_text())["seed"]

    assert main(["speak", "Hi there.", "-o", str(out), "--seed", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(out) and seed_of(out) == 1
    assert main(["speak", "Hi there.", "-o", str(out), "--seed", "2"]) == 28
    assert calls == [1] and seed_of(out) == 1, "refused before generating"
    assert main(["speak", "Hi there.", "-o", str(out), "--seed", "3", "--overwrite"]) == 0
    assert seed_of(out) == 3 and sorted(p.name for p in out.parent.iterdir()) == \
        ["take.flac", "take.flac.json"]

    outputs = Path(os.environ["CBX_OUTPUT_DIR"])
    capsys.readouterr()
    for seed in (4, 5):
        assert main(["speak", "Hi there.", "--seed", str(seed)]) == 0
    assert capsys.readouterr().out.split() == [str(outputs / "cbx-speak.wav"),
                                               str(outputs / "cbx-speak-2.wav")]
    assert seed_of(outputs / "cbx-speak-2.wav") == 5


def test_bad_voice_file_is_refused_before_the_model_loads(tmp_path, silent_wav):
    proc = _run(_entry_points()[-1], "speak", "Hello there.", "--voice", str(silent_wav),
                "--model-dir", str(tmp_path))
    assert proc.returncode == errors.EXIT_STATUS[errors.InvalidVoiceFile], proc.stderr
    assert "error [invalid_voice_file]" in proc.stderr and "silent" in proc.stderr.lower()


def test_voices_lists_the_library(speech_wav):
    import cbx

    command = _entry_points()[-1]
    empty = _run(command, "voices")
    assert empty.returncode == 0 and "No saved voices in" in empty.stdout
    assert _run(command, "voices", "--json").stdout.strip() == "[]"

    saved = cbx.voice(speech_wav, "Narrator")
    proc = _run(command, "voices", "--json")
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(proc.stdout)
    assert entry["name"] == "Narrator" and entry["path"] == str(saved.path)
    assert entry["seconds"] == pytest.approx(6.0, abs=0.1)
    text = _run(command, "voices").stdout
    assert text.startswith("Narrator") and "6.0 s" in text


def test_progress_bar_shows_chunk_of_total_and_time_left():
    import io

    stream = io.StringIO()
    bar = _ProgressBar(stream)
    for p in (Progress(0, 0, 0, 0.1, None, "loading"),
              Progress(1, 3, 5, 2.0, None, "tokens"),
              Progress(1, 3, 0, 3.0, 75.0, "chunk_done"),
              Progress(3, 3, 0, 9.0, 0.0, "chunk_done")):
        bar(p)
    bar.close()
    frames = stream.getvalue().split("\r")
    assert any("loading model: chunk 0/?" in f for f in frames)
    assert any("generating: chunk 0/3" in f and "5 tokens" in f for f in frames)
    assert any("chunk 1/3" in f and "about 01:15 left" in f for f in frames)
    assert "chunk 3/3" in frames[-1]


def test_speak_options_cover_every_generation_setting():
    from cbx.settings import SETTINGS

    speak = build_parser()._subparsers._group_actions[0].choices["speak"]
    dests = {a.dest for a in speak._actions}
    assert set(SETTINGS) <= dests


def _run_with_stderr_on_a_terminal(argv: list[str], env: dict, timeout: float):
    """Run with stderr on a pseudo-terminal (80 x 24) and stdout on a pipe, as in a
    shell that captures the output: `out=$(cbx speak ...)`."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL, text=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:          # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    stdout = proc.stdout.read()
    proc.wait(timeout=timeout)
    os.close(master)
    return proc.returncode, stdout, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.model
@pytest.mark.skipif(not SCRIPT.is_file(), reason="the cbx console script is not installed")
def test_speak_generates_on_the_fixture_with_a_progress_bar(checkpoint_root, speech_wav,
                                                            tmp_path):
    text_file = tmp_path / "chapter.txt"
    text = "The first sentence is here. A second one follows it."
    text_file.write_bytes("\ufeff".encode() + text.encode())   # Notepad's UTF-8 BOM
    out = tmp_path / "take.wav"
    argv = [str(SCRIPT), "speak", "-f", str(text_file), "--voice", str(speech_wav),
            "-o", str(out), "--seed", "7", "--max-chunk-chars", "30", "--device", "cpu",
            "--subtitles", "srt"]
    rc, stdout, terminal = _run_with_stderr_on_a_terminal(
        argv, _env(CBX_MODEL_DIR=str(checkpoint_root)), timeout=600)
    assert rc == 0, terminal
    # stdout is the saved paths alone: the audio, then its subtitles
    assert stdout.split() == [str(out), str(tmp_path / "take.srt")]
    cues = list(srt.parse((tmp_path / "take.srt").read_text(encoding="utf-8")))
    assert " ".join(" ".join(c.content.split()) for c in cues) == text
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:]))
    frames = terminal.replace("\n", "\r").split("\r")
    assert any("loading model: chunk 0/2" in f for f in frames), terminal
    assert any("generating: chunk 1/2" in f and "left" in f for f in frames), terminal
    assert any("chunk 2/2" in f for f in frames), terminal
    assert "Sampling" not in terminal       # upstream's own token bars are kept quiet

    with wave.open(str(out)) as wav:
        assert wav.getframerate() == 24000 and wav.getnframes() > 0
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["text"] == text and sidecar["seed"] == 7
    assert sidecar["chunks"] == ["The first sentence is here.", "A second one follows it."]
    assert sidecar["voice"] == speech_wav.stem and sidecar["device"] == "cpu"
    assert sidecar["duration_seconds"] == pytest.approx(wav.getnframes() / 24000, abs=1e-3)


def test_readme_lists_each_error_codes_exit_status():
    rows = {}
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and cells[3].isdigit():
            rows[cells[0].strip("`")] = int(cells[3])
    assert rows == {cls.code: status for cls, status in errors.EXIT_STATUS.items()
                    if cls is not errors.CbxError}

"""Issue 20 (6): a failed save leaves no broken pair. Result.save writes the audio and
its sidecar to temporaries and puts both in place or neither; a full disk (a real
file-size limit here) is output_not_saved naming the path; a name the user chose is
refused when taken unless overwrite=True, and only cbx's own names are numbered.
No model: each Result is built from numpy audio."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cbx import errors, files
from cbx.engine.synth import Result, sidecar_path

REPO = Path(__file__).resolve().parents[1]
SR = 24_000
FSIZE_LIMIT = 64 * 1024        # bytes any one file may grow to in the "full disk" child


def make_result(seed=7, seconds=1.0, text="The quick brown fox."):
    level = seed / 100
    return Result(wav=np.full(int(seconds * SR), level, dtype=np.float32),
                  sample_rate=SR, text=text, voice="narrator", variant="original",
                  seed=seed, settings={}, chunks=[text], timings={}, device="cpu",
                  dtype="float32")


def pair_seed(path: Path) -> int:
    """The seed the sidecar records, after checking the audio is the same take."""
    seed = json.loads(sidecar_path(path).read_text(encoding="utf-8"))["seed"]
    data, _rate = sf.read(str(path), dtype="float32")
    assert abs(float(data[0]) - seed / 100) < 1e-3, "the audio belongs to its sidecar"
    return seed


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --------------------------------------------------------------------------- full disk

_CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    from pathlib import Path
    import numpy as np
    from cbx.errors import CbxError
    from cbx.engine.synth import Result

    path, seconds, text_chars, limit, overwrite = json.loads(sys.argv[1])
    result = Result(wav=np.full(int(seconds * 24000), 0.5, dtype=np.float32),
                    sample_rate=24000, text="x" * text_chars, voice="v",
                    variant="original", seed=1, settings={}, chunks=["x"], timings={},
                    device="cpu", dtype="float32")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)    # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        result.save(path, overwrite=overwrite)
    except CbxError as exc:
        print(json.dumps(exc.to_dict()))
""")


@pytest.mark.skipif(os.name == "nt", reason="RLIMIT_FSIZE is POSIX")
@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
@pytest.mark.parametrize("seconds, text_chars, failing", [
    (4.0, 20, "take.wav"),                  # 192 kB of audio: the audio cannot be written
    (0.1, 200_000, "take.wav.json"),        # a 200 kB text: the sidecar cannot be
], ids=["audio-too-big", "sidecar-too-big"])
def test_a_full_disk_leaves_neither_half_and_names_the_path(tmp_path, seconds, text_chars,
                                                           failing, overwrite):
    folder = tmp_path / "out"
    target = folder / "take.wav"
    if overwrite:       # an earlier take that a failed overwrite must leave whole
        make_result(seed=3).save(target)
    before = {name: (folder / name).read_bytes() for name in names(folder)} \
        if folder.exists() else {}
    args = json.dumps([str(target), seconds, text_chars, FSIZE_LIMIT, overwrite])
    proc = subprocess.run([sys.executable, "-c", _CHILD, args], cwd=REPO, text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    error = json.loads(proc.stdout)
    assert error["error"] == "output_not_saved", error
    assert str(folder / failing) in error["message"], error
    assert "free disk space" in error["solution"].lower(), error
    after = {name: (folder / name).read_bytes() for name in names(folder)}
    assert after == before, "no half, no temporary file, the earlier take untouched"


# --------------------------------------------------------------------------- names

def test_an_explicit_name_that_is_taken_is_refused_with_the_fix(tmp_path):
    path = make_result(seed=1).save(tmp_path / "take.wav")
    assert path == tmp_path / "take.wav"
    assert names(tmp_path) == {"take.wav", "take.wav.json"}
    with pytest.raises(errors.OutputExists) as caught:
        make_result(seed=2).save(tmp_path / "take.wav")
    assert caught.value.code == "output_exists"
    assert errors.exit_status(caught.value) == 28
    assert str(path) in caught.value.message and "overwrite" in caught.value.solution
    assert pair_seed(path) == 1 and names(tmp_path) == {"take.wav", "take.wav.json"}


def test_a_stray_sidecar_alone_also_refuses_the_name(tmp_path):
    (tmp_path / "take.wav.json").write_text("someone's notes")
    with pytest.raises(errors.OutputExists) as caught:
        make_result().save(tmp_path / "take.wav")
    assert str(tmp_path / "take.wav.json") in caught.value.message
    assert names(tmp_path) == {"take.wav.json"}


def test_overwrite_replaces_both_files(tmp_path):
    first = make_result(seed=1).save(tmp_path / "take.flac")
    again = make_result(seed=2).save(tmp_path / "take.flac", overwrite=True)
    assert again == first and pair_seed(again) == 2
    assert names(tmp_path) == {"take.flac", "take.flac.json"}


def test_the_same_name_in_two_formats_keeps_two_sidecars(tmp_path):
    wav = make_result(seed=1).save(tmp_path / "book.wav")
    mp3 = make_result(seed=2).save(tmp_path / "book.mp3")
    assert (wav, mp3) == (tmp_path / "book.wav", tmp_path / "book.mp3")
    assert names(tmp_path) == {"book.wav", "book.wav.json", "book.mp3", "book.mp3.json"}
    assert json.loads((tmp_path / "book.wav.json").read_text())["file"]["format"] == "WAV"
    assert json.loads((tmp_path / "book.mp3.json").read_text())["file"]["format"] == "MP3"
    assert json.loads((tmp_path / "book.mp3.json").read_text())["seed"] == 2


def test_unique_numbers_past_taken_names_and_stray_sidecars(tmp_path):
    (tmp_path / "take-2.wav.json").write_text("a stray sidecar from elsewhere")
    saved = [make_result(seed=s).save(tmp_path / "take.wav", unique=True)
             for s in (1, 2, 3)]
    assert [p.name for p in saved] == ["take.wav", "take-3.wav", "take-4.wav"]
    assert [pair_seed(p) for p in saved] == [1, 2, 3]
    assert (tmp_path / "take-2.wav.json").read_text() == "a stray sidecar from elsewhere"
    assert not (tmp_path / "take-2.wav").exists()


def test_overwrite_and_unique_together_are_refused(tmp_path):
    with pytest.raises(errors.InvalidSetting):
        make_result().save(tmp_path / "x.wav", overwrite=True, unique=True)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- placing

def test_when_the_sidecar_cannot_be_placed_the_audio_is_taken_back(tmp_path, monkeypatch):
    real_link = os.link

    def link(src, dst, **kwargs):
        if str(dst).endswith(".json"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_link(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(Path, "open", _no_reservation(Path.open))
    with pytest.raises(errors.OutputNotSaved) as caught:
        make_result().save(tmp_path / "take.wav")
    assert str(tmp_path / "take.wav.json") in caught.value.message
    assert "disk space" not in caught.value.solution      # not a full disk: not told so
    assert list(tmp_path.iterdir()) == []


def _no_reservation(real_open):
    """Path.open that refuses the no-hard-link fallback's reservation of a sidecar,
    so the failed link above stays a failure."""
    def open_(self, mode="r", *args, **kwargs):
        if mode == "xb" and self.name.endswith(".json") and \
                not self.name.endswith(files.TMP_SUFFIX):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_open(self, mode, *args, **kwargs)
    return open_


def test_a_failed_overwrite_puts_the_old_pair_back(tmp_path, monkeypatch):
    target = make_result(seed=1).save(tmp_path / "take.wav")
    real_replace = os.replace
    refused = []

    def replace(src, dst, **kwargs):
        """Refuse the new sidecar once (its old one is already moved aside)."""
        if str(dst) == str(sidecar_path(target)) and not refused:
            refused.append(src)
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(errors.OutputNotSaved) as caught:
        make_result(seed=2).save(target, overwrite=True)
    assert str(sidecar_path(target)) in caught.value.message and refused
    monkeypatch.undo()
    assert pair_seed(target) == 1
    assert names(tmp_path) == {"take.wav", "take.wav.json"}, "no temporary left"


def test_a_drive_without_hard_links_still_saves_exclusively(tmp_path, monkeypatch):
    def no_links(src, dst, **kwargs):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))   # FAT32 / exFAT

    monkeypatch.setattr(os, "link", no_links)
    path = make_result(seed=1).save(tmp_path / "take.ogg")
    assert pair_seed(path) == 1
    with pytest.raises(errors.OutputExists):
        make_result(seed=2).save(tmp_path / "take.ogg")
    assert make_result(seed=2).save(tmp_path / "take.ogg", unique=True).name == "take-2.ogg"
    assert names(tmp_path) == {"take.ogg", "take.ogg.json", "take-2.ogg", "take-2.ogg.json"}


def test_a_folder_under_a_file_is_output_not_saved(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(errors.OutputNotSaved) as caught:
        make_result().save(blocker / "take.wav")
    assert str(blocker / "take.wav") in caught.value.message
    with pytest.raises(errors.OutputNotSaved) as caught:
        files.check_writable(blocker / "sub")
    assert str(blocker / "sub") in caught.value.message
    assert names(tmp_path) == {"notes.txt"}


def test_check_writable_makes_the_folder_and_leaves_nothing_in_it(tmp_path):
    folder = files.check_writable(tmp_path / "new" / "folder")
    assert folder.is_dir() and list(folder.iterdir()) == []

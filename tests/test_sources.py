"""A project's text sources (issue 20): text files are read through one capped reader
(a FIFO or /dev/zero is refused at once, `cbx speak -f` included), an unclosed Markdown
fence keeps the text after it, a malformed .srt is parsed or refused naming the line
and never speaks a timing, and chunks with nothing to speak are refused by number."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cbx import errors
from cbx.errors import InvalidText
from cbx.longform import sources

REPO = Path(__file__).resolve().parents[1]
DEV_ZERO = Path("/dev/zero")
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
needs_dev_zero = pytest.mark.skipif(not DEV_ZERO.exists(), reason="no /dev/zero here")


def _within(seconds: float, call):
    """What `call()` returns or raises, failing the test if it runs past `seconds` (a
    hang would otherwise hang the suite)."""
    box = {}

    def run():
        try:
            box["value"] = call()
        except BaseException as exc:          # handed back to the test below
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still running after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _refused(call, *words) -> InvalidText:
    with pytest.raises(InvalidText) as caught:
        _within(20, call)
    for word in words:
        assert word in str(caught.value), caught.value
    assert caught.value.solution
    return caught.value


# --------------------------------------------------------------------------- reading

@needs_fifo
def test_a_fifo_named_book_txt_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "book.txt"
    os.mkfifo(fifo)
    _refused(lambda: sources.read_text_file(fifo), str(fifo), "not a regular file")
    _refused(lambda: sources.load(fifo), str(fifo))


@needs_dev_zero
def test_a_symlink_to_dev_zero_is_refused_not_read_to_memory_error(tmp_path):
    link = tmp_path / "book.txt"
    try:
        link.symlink_to(DEV_ZERO)
    except OSError:
        pytest.skip("symbolic links cannot be made here")
    _refused(lambda: sources.read_text_file(link), str(link), "not a regular file")


def test_a_folder_or_a_missing_file_is_invalid_text(tmp_path):
    (tmp_path / "book.txt").mkdir()
    _refused(lambda: sources.read_text_file(tmp_path / "book.txt"), "not a regular file")
    _refused(lambda: sources.read_text_file(tmp_path / "none.md"), "does not exist")


def test_files_are_read_up_to_the_limit_and_not_a_byte_past_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_FILE_BYTES", 64)
    fits, over = tmp_path / "fits.txt", tmp_path / "over.txt"
    fits.write_bytes(b"a" * 63 + b".")
    over.write_bytes(b"a" * 65)
    assert sources.read_text_file(fits) == ("a" * 63 + ".", "plain")
    _refused(lambda: sources.read_text_file(over), str(over), "a text file for cbx is at most")


class _Endless:
    """A binary stream that never ends (standard input fed from /dev/zero)."""

    def __init__(self):
        self.asked = []

    def read(self, size=-1):
        assert size >= 0, "an unbounded read of an endless stream never returns"
        self.asked.append(size)
        return b"a" * size


def test_a_stream_is_capped_like_a_file():
    stream = _Endless()
    _refused(lambda: sources.read_stream(stream), "standard input is over 20 MB")
    assert stream.asked == [sources.MAX_FILE_BYTES + 1]


def _speak(*args: str, stdin=subprocess.DEVNULL, model_dir: Path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "cbx", "speak", *args, "--model-dir",
                           str(model_dir)], cwd=REPO, env=env, stdin=stdin, text=True,
                          capture_output=True, timeout=60)


def _refused_by_cli(proc: subprocess.CompletedProcess, *words: str) -> None:
    # An empty --model-dir: had the model started loading, the error would differ.
    assert proc.returncode == errors.EXIT_STATUS[InvalidText] == 15, proc.stderr
    assert proc.stderr.startswith("error [invalid_text]: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for word in words:
        assert word in proc.stderr, proc.stderr


@needs_fifo
@needs_dev_zero
def test_cbx_speak_f_refuses_a_fifo_and_dev_zero_before_any_model_loads(tmp_path):
    fifo = tmp_path / "book.txt"
    os.mkfifo(fifo)
    link = tmp_path / "zero.txt"
    link.symlink_to(DEV_ZERO)
    models = tmp_path / "models"
    models.mkdir()
    for path in (fifo, link, DEV_ZERO):
        _refused_by_cli(_speak("-f", str(path), model_dir=models), str(path),
                        "not a regular file")
    with DEV_ZERO.open("rb") as zero:
        _refused_by_cli(_speak("-f", "-", stdin=zero, model_dir=models),
                        "standard input is over 20 MB")


def test_cbx_speak_f_reads_any_suffix_and_refuses_binary(tmp_path):
    notes = tmp_path / "notes"
    notes.write_bytes(b"\x00\x01\x02")
    _refused_by_cli(_speak("-f", str(notes), model_dir=tmp_path), "binary")


# --------------------------------------------------------------------------- Markdown

def _texts(text: str, fmt: str) -> list[str]:
    return [piece.text for piece in sources.pieces(text, fmt)]


def test_an_unclosed_code_fence_keeps_the_text_after_it():
    text = "# One\n\nIntro here.\n\n```python\nThe rest of the book.\n\nAnd its end.\n"
    spoken = " ".join(_texts(text, "markdown"))
    assert "The rest of the book." in spoken and "And its end." in spoken
    assert "`" not in spoken and "python" not in spoken


def test_closed_fences_are_dropped_and_close_only_on_their_own_kind():
    text = ("Before.\n```\ncode one\n```\nMiddle.\n~~~~\ncode two\n```\n~~~\nstill code\n"
            "~~~~~\nAfter.\n````\nStray marker, then\n```inline code``` and words.\n")
    spoken = " ".join(_texts(text, "markdown"))
    assert spoken == "Before. Middle. After. Stray marker, then inline code and words."


# --------------------------------------------------------------------------- SubRip

def test_srt_without_blank_lines_speaks_only_the_words():
    text = ("1\n00:00:01,000 --> 00:00:02,000\nHello there.\n"
            "2\n00:00:02,500 --> 00:00:04,000\n<i>Second</i> one,\n42 of them.\n"
            "3\r\n00:00:05,000 --> 00:00:06,000 X1:10 X2:20\r\n42\r\n\r\n"
            "4\n\n00:00:07,000 --> 00:00:08,000\nLast.\n")
    assert _texts(text, "srt") == ["Hello there.", "Second one, 42 of them.", "42", "Last."]


@pytest.mark.parametrize("text, line, words", [
    ("1\n00:00:01,000 --> 00:00:02,000\nHi.\n2\n00:00:03 --> 00:00:04\nThere.\n", 5,
     "not a valid timing line"),
    ("1\n00:00:01,000 - 00:00:02,000\nHi.\n", 2, "not a valid timing line"),
    ("Some words first.\n1\n00:00:01,000 --> 00:00:02,000\nHi.\n", 1,
     "before the first timing line"),
    ("1\n00:00:01,000 --> 00:00:02,000\nHi.\n\n2\nThere.\n", 5, "no timing line after it"),
    ("1\n00:00:01,000 --> 00:00:02,000\nHi.\n\n2\n", 5, "no timing line after it"),
    ("just some words\n", 1, "SubRip"),
])
def test_a_malformed_srt_is_refused_naming_the_line(text, line, words):
    _refused(lambda: sources.pieces(text, "srt"), f"Line {line} ", words)


# --------------------------------------------------------------------------- speakable

def test_chunks_with_nothing_to_speak_are_refused_by_number():
    refused = _refused(lambda: sources.pieces("Hello.\n\n♪ ♪\n\nThen words.\n\n[laugh]\n"),
                       "2 chunk(s)", "chunk 2: '♪ ♪'", "chunk 4: '[laugh]'")
    assert "chunk 1" not in str(refused) and "chunk 3" not in str(refused)
    _refused(lambda: sources.pieces("# 🎉\n\nA party.", "markdown"), "chunk 1: '🎉.'")
    many = "\n\n".join(["Words."] + ["!!!"] * 5)
    _refused(lambda: sources.pieces(many), "chunk 2", "chunk 4", "(and 2 more)")


def test_a_tag_with_words_and_any_script_is_speakable():
    text = "[laugh] That was funny.\n\n你好。\n\nЗдравствуй.\n\n42!"
    assert _texts(text, "plain") == ["[laugh] That was funny.", "你好。", "Здравствуй.",
                                     "42!"]


def test_load_goes_through_the_same_checks(tmp_path):
    path = tmp_path / "subs.srt"
    path.write_text("1\n00:00:01,000 --> 00:00:02,000\n♪\n", encoding="utf-8")
    _refused(lambda: sources.load(path), "chunk 1")

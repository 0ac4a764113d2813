"""The upload button's kernel side against a page that lies (issue 21, item 3): the
limit lives in the kernel, parts count only in order and only up to the declared size,
and the kernel never holds more than the limit.

Messages go through the widget's comm handler (`_handle_msg`) exactly as the kernel gets
them from the websocket: a state update, or a custom message with binary buffers.
tests/test_e2e_upload.py sends the same forgeries from a real page.
"""
from __future__ import annotations

import pytest

pytest.importorskip("anywidget")

from cbx.errors import InvalidText, InvalidVoiceFile  # noqa: E402
from cbx.ui.upload import ClipUpload  # noqa: E402
from tests.support.dashboard import make  # noqa: E402
from tests.support.fake_backend import backend, env  # noqa: E402,F401

LIMIT = 10_000
PART = 4096


class Page:
    """The real widget with recording callbacks, and the most bytes it ever held."""

    def __init__(self, invalid=InvalidVoiceFile):
        self.files: list[tuple[bytes, str]] = []
        self.too_large: list[tuple[str, int]] = []
        self.errors: list = []
        self.widget = ClipUpload(on_file=lambda data, name: self.files.append((data, name)),
                                 on_too_large=lambda name, size: self.too_large.append(
                                     (name, size)),
                                 on_invalid=self.errors.append, invalid=invalid,
                                 max_bytes=LIMIT, part_bytes=PART)
        self.peak = 0

    def update(self, **state) -> None:
        """A state update from the page, as the comm delivers it."""
        self.widget._handle_msg({"content": {"data": {"method": "update", "state": state,
                                                      "buffer_paths": []}},
                                 "buffers": []})

    def send(self, content: dict, *buffers: bytes) -> None:
        """A custom message from the page, as the comm delivers it."""
        self.widget._handle_msg({"content": {"data": {"method": "custom",
                                                      "content": content}},
                                 "buffers": [memoryview(b) for b in buffers]})
        self.peak = max(self.peak, len(self.widget._parts))

    def part(self, data: bytes, offset: int, size: int, upload_id: str = "u1",
             name: str = "clip.wav") -> None:
        self.send({"kind": "part", "id": upload_id, "name": name, "size": size,
                   "offset": offset}, data[offset:offset + PART])

    def upload(self, data: bytes, offsets, size: int | None = None, **kwargs) -> None:
        """Parts of `data` at `offsets` (in that order), declaring `size` (its length)."""
        for offset in offsets:
            self.part(data, offset, len(data) if size is None else size, **kwargs)

    def message(self) -> str:
        [error] = self.errors
        return error.message


def test_the_limit_is_the_kernels_and_a_forged_update_cannot_raise_it():
    """The page sees the limit as `limit_hint`; an update setting it (or `max_bytes`,
    no longer synced) to 1 TiB changes nothing in the kernel, and a declared size over
    the limit is refused at its first part, before a byte is kept."""
    page = Page()
    assert "max_bytes" not in page.widget.keys and page.widget.limit_hint == LIMIT
    page.update(max_bytes=2**40, limit_hint=2**40)
    assert page.widget.max_bytes == LIMIT and page.widget.limit_hint == LIMIT

    data = bytes(3 * PART + 1)                      # 12,289 bytes: over the limit
    page.upload(data, range(0, len(data), PART))
    assert page.too_large == [("clip.wav", len(data))], "refused once, not per part"
    assert page.files == [] and page.errors == []
    assert page.peak == 0 and not page.widget.busy


def test_a_file_at_the_limit_in_parts_arrives_whole():
    page = Page()
    page.update(busy=True)                          # what the page sets while it reads
    data = bytes(range(256)) * 39 + bytes(16)       # exactly LIMIT bytes
    assert len(data) == LIMIT
    page.upload(data, range(0, LIMIT, PART))
    assert page.files == [(data, "clip.wav")] and page.errors == []
    assert page.widget._parts == bytearray() and not page.widget.busy
    page.part(data, 2 * PART, LIMIT)                # a late copy of the last part
    assert len(page.files) == 1 and page.errors == [], "a finished upload takes no more"


def test_an_empty_file_is_one_empty_part():
    page = Page()
    page.part(b"", 0, 0)
    assert page.files == [(b"", "clip.wav")]


@pytest.mark.parametrize("offsets, expected", [
    ((0, 2 * PART, PART), "byte 8,192 came when byte 4,096 was next"),     # reordered
    ((0, PART, PART), "byte 4,096 came when byte 8,192 was next"),         # repeated
    ((0, 0), "byte 0 came when byte 4,096 was next"),                      # repeated
    ((0, 2 * PART), "byte 8,192 came when byte 4,096 was next"),           # one lost
    ((PART, 2 * PART), "part at byte 4,096 came without the parts before it"),
])
def test_parts_out_of_order_repeated_or_lost_are_invalid_voice_file(offsets, expected):
    page = Page()
    data = bytes(LIMIT)
    page.upload(data, offsets)
    assert page.files == []
    assert page.errors[0].code == "invalid_voice_file"
    assert expected in page.message()
    assert "'clip.wav' did not arrive whole" in page.message()
    assert "Upload the file again" in page.errors[0].solution
    assert page.widget._parts == bytearray() and page.peak <= LIMIT
    page.part(data, 2 * PART, LIMIT)                # the rest of it is not reported again
    assert len(page.errors) == 1 and page.files == []


def test_a_missing_last_part_makes_no_file_and_the_next_upload_replaces_it():
    """Without every byte of the declared size nothing reaches the caller; the bytes
    held meanwhile stay within the declared size, and a new upload discards them."""
    page = Page()
    data = bytes(LIMIT)
    page.upload(data, (0, PART))
    assert page.files == [] and page.errors == [] and len(page.widget._parts) == 2 * PART
    page.upload(b"new", (0,), upload_id="u2", name="next.wav")
    assert page.files == [(b"new", "next.wav")] and page.errors == []


def test_more_bytes_than_declared_are_refused_before_they_are_kept():
    page = Page()
    data = bytes(3 * PART)
    page.upload(data, (0, PART), size=5000)         # declares 5,000, sends 8,192
    assert page.files == []
    assert "more than the 5,000 bytes it declared" in page.message()
    assert page.peak == PART and page.widget._parts == bytearray()


def test_a_small_declared_size_cannot_smuggle_a_big_part_past_the_limit():
    """One part of three times the limit declared as 100 bytes: refused unread."""
    page = Page()
    page.send({"kind": "part", "id": "u1", "name": "clip.wav", "size": 100, "offset": 0},
              bytes(3 * LIMIT))
    assert "more than the 100 bytes it declared" in page.message()
    assert page.peak == 0 and page.files == []


def test_a_declared_size_that_changes_mid_upload_is_refused():
    page = Page()
    page.part(bytes(LIMIT), 0, 5000)
    page.part(bytes(LIMIT), PART, LIMIT)
    assert "a part declared 10,000 bytes where the upload declared 5,000" in page.message()
    assert page.files == []


@pytest.mark.parametrize("content, buffers", [
    ({"kind": "part", "name": "clip.wav", "size": 10, "offset": 0}, [bytes(10)]),
    ({"kind": "part", "id": "u1", "name": "clip.wav", "size": "10", "offset": 0},
     [bytes(10)]),
    ({"kind": "part", "id": "u1", "name": "clip.wav", "size": 10, "offset": -1},
     [bytes(10)]),
    ({"kind": "part", "id": "u1", "name": "clip.wav", "size": 10, "offset": 0}, []),
    ({"kind": "part", "id": "u1", "name": "clip.wav", "size": 10, "offset": 0},
     [bytes(5), bytes(5)]),
])
def test_a_malformed_part_is_refused(content, buffers):
    page = Page()
    page.send(content, *buffers)
    assert "came without its upload id, size, offset and one buffer" in page.message()
    assert page.files == [] and page.peak == 0


def test_a_text_upload_gets_invalid_text():
    """The same widget serves the Projects card's text files: its caller's code."""
    page = Page(invalid=InvalidText)
    page.upload(bytes(LIMIT), (0, 2 * PART), name="book.md")
    assert page.errors[0].code == "invalid_text"
    assert "'book.md' did not arrive whole" in page.message()


def test_the_dashboard_shows_a_broken_upload_with_its_code(backend):
    """Through the real page object: the voice card says invalid_voice_file, the
    Projects card invalid_text, and the voice chosen before stays."""
    view = make(backend)
    chosen = view.voice_pick.value
    view.upload.part_bytes = PART
    for offset in (0, 2 * PART):
        view.upload._handle_msg({"content": {"data": {"method": "custom", "content": {
            "kind": "part", "id": "u1", "name": "voice.wav", "size": LIMIT,
            "offset": offset}}}, "buffers": [memoryview(bytes(PART))]})
    assert "invalid_voice_file" in view.error.value and "voice.wav" in view.error.value
    assert "did not arrive whole" in view.error.value
    assert view.voice_pick.value == chosen

    text_upload = view.projects.upload
    assert text_upload.max_bytes > 0 and "max_bytes" not in text_upload.keys
    text_upload._handle_msg({"content": {"data": {"method": "custom", "content": {
        "kind": "part", "id": "t1", "name": "book.md", "size": 10, "offset": 0}}},
        "buffers": [memoryview(bytes(20))]})
    assert "invalid_text" in view.error.value and "book.md" in view.error.value

"""The dashboard's "Upload clip" button: a small anywidget that checks the file's size in
the browser before sending it.

Why not ipywidgets' FileUpload: it sends every file, whatever its size, in one websocket
message. A file over the server's message cap (100 MiB) never arrives: the websocket
drops, reconnects, and the page says nothing. Here the browser compares the file's size
with the limit first, and a file over it sends only its name and size, so the kernel
answers with the caller's error (`invalid_voice_file`, `invalid_text`) naming both.

A file within the limit travels in parts of `part_bytes` (4 MiB), one binary buffer per
message, because the server's cap is not ours to choose: Voila's settings raise it to
100 MiB, but a plain JupyterLab keeps tornado's 10 MiB, where a 12 MB clip sent whole
would drop the kernel's websocket with no word on the page.

The browser's check is a courtesy, not the guard (issue 21): anything in the page can
be changed by whoever runs it, so the limit is a plain attribute of the kernel's object
(`max_bytes`), shown to the page as `limit_hint`, which the kernel pins to its own value.
Each part names its upload (`id`), the upload's declared `size` and its byte `offset`;
the kernel refuses a declared size over the limit before it keeps a byte, keeps parts
only in order, and hands on a file only once the parts add up to exactly the declared
size, so it never holds more than the limit, and a lost, repeated or reordered part is
the caller's error instead of a truncated file.
"""
from __future__ import annotations

from typing import Callable

import anywidget
import traitlets

from ..errors import CbxError

ESM = """
function render({ model, el }) {
  const input = document.createElement("input");
  input.type = "file";
  input.style.display = "none";
  const button = document.createElement("button");
  button.className = "jupyter-button widget-button cbx-upload-button";
  const sync = () => {
    input.accept = model.get("accept");
    button.disabled = model.get("disabled");
    const icon = document.createElement("i");
    icon.className = "fa fa-upload";
    button.replaceChildren(icon, " " + (model.get("busy") ? "Reading clip..." :
                                        model.get("label")));
  };
  button.addEventListener("click", () => input.click());
  input.addEventListener("change", async () => {
    const file = input.files[0];
    input.value = "";                       // the same file can be chosen again
    if (!file) return;
    if (file.size > model.get("limit_hint")) {
      model.send({ kind: "too_large", name: file.name, size: file.size });
      return;
    }
    model.set("busy", true);
    model.save_changes();
    const data = await file.arrayBuffer();
    const id = Date.now().toString(36) + Math.random().toString(36).slice(2);
    const part = model.get("part_bytes");
    let offset = 0;
    do {                                   // an empty file is one empty part
      const end = Math.min(offset + part, data.byteLength);
      model.send({ kind: "part", id, name: file.name, size: data.byteLength, offset },
                 undefined, [data.slice(offset, end)]);
      offset = end;
    } while (offset < data.byteLength);
  });
  ["change:accept", "change:disabled", "change:label", "change:busy"].forEach(
    (name) => model.on(name, sync));
  sync();
  el.classList.add("cbx-upload");
  el.append(button, input);
}
export default { render };
"""

RETRY = "Upload the file again; if it fails again, reload the page."


def _count(value) -> int | None:
    """A size or offset from the page: a non-negative whole number, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


class ClipUpload(anywidget.AnyWidget):
    """A button that opens the file chooser; `on_file(data, name)` gets a file within
    `max_bytes`, `on_too_large(name, size)` the name and size of one over it, and
    `on_invalid(error)` an `invalid` error (the caller's code) for a transfer that did
    not arrive whole and in order."""

    _esm = traitlets.Unicode(ESM).tag(sync=True)
    accept = traitlets.Unicode("").tag(sync=True)
    label = traitlets.Unicode("Upload clip").tag(sync=True)
    limit_hint = traitlets.Int(0).tag(sync=True)    # the page's copy of max_bytes
    disabled = traitlets.Bool(False).tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)     # set by the browser while it reads
    part_bytes = traitlets.Int(4 * 2**20).tag(sync=True)   # well below any server's cap

    def __init__(self, on_file: Callable[[bytes, str], None],
                 on_too_large: Callable[[str, int], None],
                 on_invalid: Callable[[CbxError], None], *,
                 invalid: type[CbxError], max_bytes: int, **kwargs):
        self._max_bytes = max_bytes                 # read by the limit_hint validator
        super().__init__(limit_hint=max_bytes, **kwargs)
        self._on_file = on_file
        self._on_too_large = on_too_large
        self._on_invalid = on_invalid
        self._invalid = invalid
        self._parts = bytearray()                   # the upload under way, so far
        self._current: tuple[str, str, int] | None = None   # its id, name, size
        self._closed_id: str | None = None          # finished or refused: no more parts
        self.on_msg(self._received)

    @property
    def max_bytes(self) -> int:
        """The limit, kept in the kernel: no message from the page can change it."""
        return self._max_bytes

    @traitlets.validate("limit_hint")
    def _kernel_limit(self, _proposal) -> int:
        """A state update from the page cannot move the hint off the kernel's limit."""
        return self._max_bytes

    def _received(self, _widget, content: dict, buffers: list) -> None:
        """Messages arrive in order on one websocket, but whoever runs the page can
        write them: every field is checked here."""
        name = str(content.get("name", ""))
        kind = content.get("kind")
        if kind == "too_large":
            self._drop(None)
            self.busy = False
            self._on_too_large(name, _count(content.get("size")) or 0)
        elif kind == "part":
            self._part(content, name, buffers)

    def _part(self, content: dict, name: str, buffers: list) -> None:
        """Keep one part if it continues the upload under way (or starts one within the
        limit) and the parts stay within the declared size; anything else ends the
        upload with the caller's error before its bytes are kept."""
        upload_id = content.get("id")
        size, offset = _count(content.get("size")), _count(content.get("offset"))
        if not isinstance(upload_id, str) or size is None or offset is None \
                or len(buffers) != 1:
            self._refuse(upload_id, name, "a part came without its upload id, size, "
                                          "offset and one buffer of bytes")
            return
        if upload_id == self._closed_id:
            return                                  # the rest of a refused or done upload
        if self._current is None or self._current[0] != upload_id:
            if offset != 0:
                self._refuse(upload_id, name, f"its part at byte {offset:,} came "
                                              "without the parts before it")
                return
            if size > self.max_bytes:
                self._drop(upload_id)
                self.busy = False
                self._on_too_large(name, size)
                return
            self._parts = bytearray()               # an unfinished upload is abandoned
            self._current = (upload_id, name, size)
        _, name, declared = self._current
        received, part = len(self._parts), memoryview(buffers[0]).cast("B")
        if size != declared:
            self._refuse(upload_id, name, f"a part declared {size:,} bytes where the "
                                          f"upload declared {declared:,}")
        elif offset != received:
            self._refuse(upload_id, name, f"the part at byte {offset:,} came when byte "
                                          f"{received:,} was next: a part was lost, "
                                          "repeated or out of order")
        elif received + len(part) > declared:
            self._refuse(upload_id, name, f"its parts hold more than the {declared:,} "
                                          "bytes it declared")
        else:
            self._parts += part
            if len(self._parts) == declared:
                data = bytes(self._parts)
                self._drop(upload_id)
                try:
                    self._on_file(data, name)
                finally:
                    self.busy = False

    def _drop(self, closed_id: str | None) -> None:
        """Forget the upload under way; later parts of `closed_id` are ignored, so a
        refused upload is reported once."""
        self._parts = bytearray()
        self._current = None
        self._closed_id = closed_id

    def _refuse(self, upload_id, name: str, why: str) -> None:
        """End the upload with the caller's error: a broken transfer is never a file."""
        self._drop(upload_id if isinstance(upload_id, str) else None)
        self.busy = False
        self._on_invalid(self._invalid(f"The upload {name!r} did not arrive whole: {why}.",
                                       RETRY))

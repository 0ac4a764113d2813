"""The dashboard's "Upload clip" button: a small anywidget that checks the file's size in
the browser before sending it.

Why not ipywidgets' FileUpload: it sends every file, whatever its size, in one websocket
message. A file over the server's message cap (100 MiB) never arrives: the websocket
drops, reconnects, and the page says nothing. Here the browser compares the file's size
with the clip limit first, and a file over it sends only its name and size, so the
kernel answers with `invalid_voice_file` naming both.

A file within the limit travels in parts of `part_bytes` (4 MiB), one binary buffer per
message, because the server's cap is not ours to choose: Voila's settings raise it to
100 MiB, but a plain JupyterLab keeps tornado's 10 MiB, where a 12 MB clip sent whole
would drop the kernel's websocket with no word on the page.
"""
from __future__ import annotations

from typing import Callable

import anywidget
import traitlets

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
    if (file.size > model.get("max_bytes")) {
      model.send({ kind: "too_large", name: file.name, size: file.size });
      return;
    }
    model.set("busy", true);
    model.save_changes();
    const data = await file.arrayBuffer();
    const part = model.get("part_bytes");
    let offset = 0;
    do {                                   // an empty file is one empty, last part
      const end = Math.min(offset + part, data.byteLength);
      model.send({ kind: "part", name: file.name, size: file.size, offset,
                   last: end >= data.byteLength }, undefined, [data.slice(offset, end)]);
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


class ClipUpload(anywidget.AnyWidget):
    """A button that opens the file chooser; `on_file(data, name)` gets a file within
    `max_bytes`, `on_too_large(name, size)` the name and size of one over it."""

    _esm = traitlets.Unicode(ESM).tag(sync=True)
    accept = traitlets.Unicode("").tag(sync=True)
    label = traitlets.Unicode("Upload clip").tag(sync=True)
    max_bytes = traitlets.Int(0).tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)     # set by the browser while it reads
    part_bytes = traitlets.Int(4 * 2**20).tag(sync=True)   # well below any server's cap

    def __init__(self, on_file: Callable[[bytes, str], None],
                 on_too_large: Callable[[str, int], None], **kwargs):
        super().__init__(**kwargs)
        self._on_file = on_file
        self._on_too_large = on_too_large
        self._parts = bytearray()
        self.on_msg(self._received)

    def _received(self, _widget, content: dict, buffers: list) -> None:
        """Messages arrive in order on one websocket: parts are appended until the last;
        a part that does not continue the file (a new upload) starts over."""
        name = str(content.get("name", ""))
        kind = content.get("kind")
        if kind == "too_large":
            self._parts = bytearray()
            self.busy = False
            self._on_too_large(name, int(content.get("size", 0)))
            return
        if kind != "part" or not buffers:
            return
        offset = int(content.get("offset", 0))
        if offset == 0 or offset != len(self._parts):
            self._parts = bytearray()
        self._parts += bytes(buffers[0])
        if len(self._parts) > self.max_bytes:          # the browser checked; a client
            size, self._parts = len(self._parts), bytearray()   # that did not is refused
            self.busy = False
            self._on_too_large(name, size)
            return
        if content.get("last"):
            data, self._parts = bytes(self._parts), bytearray()
            try:
                self._on_file(data, name)
            finally:
                self.busy = False

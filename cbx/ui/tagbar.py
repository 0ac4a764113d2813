"""Buttons that insert a paralinguistic tag (`[laugh]`, ...) at the text box's cursor.

Why an anywidget: ipywidgets' Textarea does not expose the cursor to Python, so only
the browser knows where to insert. The button writes the tag into the <textarea>
itself (replacing a selection, with a space either side where a word touches it) and
fires the `input` event the Textarea's view listens to, so the kernel receives the new
text the same way as a keystroke (and can undo nothing behind the user's back).
"""
from __future__ import annotations

import anywidget
import traitlets

ESM = """
export function insertTag(area, tag) {
  const start = area.selectionStart ?? area.value.length;
  const end = area.selectionEnd ?? start;
  const before = area.value.slice(0, start), after = area.value.slice(end);
  const text = (before && !/\\s$/.test(before) ? " " : "") + tag +
               (after && !/^\\s/.test(after) ? " " : "");
  area.focus();
  area.setRangeText(text, start, end, "end");
  area.dispatchEvent(new Event("input", { bubbles: true }));
}

function findArea(el, target) {
  const app = el.closest(".cbx-app") || document;
  return app.querySelector("." + target + " textarea");
}

function tagButton(model, el, tag) {
  const button = document.createElement("button");
  button.className = "jupyter-button widget-button cbx-tag-button";
  button.textContent = tag;
  button.title = "Insert " + tag + " at the cursor";
  button.disabled = model.get("disabled");
  // keep the text box's selection: a mousedown would move focus first
  button.addEventListener("mousedown", (event) => event.preventDefault());
  button.addEventListener("click", () => {
    const area = findArea(el, model.get("target"));
    if (area && !area.disabled) insertTag(area, tag);
  });
  return button;
}

function render({ model, el }) {
  const sync = () => {
    const groups = model.get("groups").map(([label, tags]) => {
      const group = document.createElement("span");
      group.className = "cbx-tag-group";
      const name = document.createElement("span");
      name.className = "cbx-tag-group-label";
      name.textContent = label;
      group.replaceChildren(name, ...tags.map((tag) => tagButton(model, el, tag)));
      return group;
    });
    el.replaceChildren(...groups);
  };
  ["change:groups", "change:disabled", "change:target"].forEach((n) => model.on(n, sync));
  el.classList.add("cbx-tagbar");
  sync();
}
export default { render };
"""


class TagBar(anywidget.AnyWidget):
    """One button per tag, under its group's label (`groups`: [[label, [tag, ...]], ...],
    cbx.tags.tag_groups); a click inserts it into the <textarea> inside the element
    with CSS class `target` (in the same dashboard)."""

    _esm = traitlets.Unicode(ESM).tag(sync=True)
    groups = traitlets.List().tag(sync=True)
    target = traitlets.Unicode("cbx-text").tag(sync=True)
    disabled = traitlets.Bool(False).tag(sync=True)

"""Closing the tab ends its kernel: the piece of the page that lets Voila's own
shutdown request through.

Why: "close or reload the page = the model is gone" rests on Voila shutting the kernel
down when the tab goes away. Voila does try: on `beforeunload` it posts the `_xsrf`
cookie's value to `voila/api/shutdown/<kernel id>` (a beacon). But Voila's page never
sets that cookie (it renders without touching tornado's XSRF token;
voila-dashboards/voila#1458), so the post carries an empty token, the server refuses it
(403), and the old kernel, with the model and its GPU memory, outlives the tab. A
reload then loads a second model beside it.

This widget renders nothing. When the page has no `_xsrf` cookie it sets one: a random
token, which Voila's beacon sends back in its form. That is the double-submit check
tornado makes (cookie and form carry the same token; another site can neither read
nor choose it), so the request passes and the kernel is shut down. Where the server
already set the cookie (JupyterLab), nothing changes; there the tab's kernel belongs to
JupyterLab and is not shut down on close.
"""
from __future__ import annotations

import anywidget

ESM = """
function render({ el }) {
  el.style.display = "none";
  if (!/(^|;\\s*)_xsrf=[^;]+/.test(document.cookie)) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    const token = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    document.cookie = `_xsrf=${token}; path=/; SameSite=Strict`;
  }
}
export default { render };
"""


class ShutdownOnClose(anywidget.AnyWidget):
    """Put it on the page once; see the module's docstring."""

    _esm = ESM


__all__ = ["ShutdownOnClose"]

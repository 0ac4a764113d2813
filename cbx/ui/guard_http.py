"""What `python -m cbx.ui` adds in front of Voila so that other web sites cannot start
or reach dashboard kernels (issue 21), and so that no page can start more of them than
the machine holds.

Why: jupyter_server's Host check stops DNS rebinding, but a cross-site `<iframe>` or
`fetch(..., {mode: "no-cors"})` addresses 127.0.0.1 itself, so its Host passes; each
such `GET /` started a kernel of about 400 MiB that lived until the idle cull. Browsers
mark those requests with `Sec-Fetch-Site` (and an `Origin` or `Referer` that is not the
dashboard's own), which is what `foreign_reason` reads. `ForeignRequests` puts one rule
in front of every route (page, kernel websocket, REST API, files), so no handler runs
for such a request.

`CappedKernelManager` counts kernels where they start, so 20 page loads at once still
start at most CBX_MAX_KERNELS; the page handler turns a refusal into a page that says
how to free one (`StudioPageHandler`).
"""
from __future__ import annotations

import html
from urllib.parse import urlsplit

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import httputil, routing, web
from traitlets import Integer
from voila.tornado.handler import TornadoVoilaHandler

from ..envsettings import DEFAULT_MAX_KERNELS, KERNEL_CULL_MINUTES_ENV, MAX_KERNELS_ENV

# "same-site" is another port or subdomain of this host name: another program
OWN_FETCH_SITES = ("same-origin", "none")
DEFAULT_PORTS = {"http": 80, "https": 443}

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Chatterbox Studio: {title}</title></head>
<body style="font-family: sans-serif; max-width: 42em; margin: 3em auto; line-height: 1.4">
<h1>{title}</h1>
{body}
</body></html>
"""


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL, the port filled in; None when it has none (e.g.
    the `null` origin of a sandboxed frame or a local file)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname or scheme not in DEFAULT_PORTS:
        return None
    return scheme, parts.hostname, port or DEFAULT_PORTS[scheme]


def foreign_reason(request: httputil.HTTPServerRequest) -> str | None:
    """Why `request` comes from another site, or None when it is the dashboard's own (or
    a typed address, a bookmark, a script: nothing says otherwise)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in OWN_FETCH_SITES:
        return f"Sec-Fetch-Site: {site}"
    own = _origin(f"{request.protocol}://{request.host}")
    for header in ("Origin", "Referer"):
        value = request.headers.get(header)
        if value is not None and _origin(value) != own:
            return f"{header}: {value}"
    return None


class ForeignRequests(routing.Matcher):
    """Matches every request that `foreign_reason` refuses."""

    def match(self, request: httputil.HTTPServerRequest) -> dict | None:
        return {} if foreign_reason(request) else None


class ForeignRequestHandler(web.RequestHandler):
    """403 with a page that says what happened and how to open the dashboard."""

    def initialize(self, log) -> None:
        self.log = log

    def prepare(self) -> None:
        reason = foreign_reason(self.request)
        self.log.warning("Refused a request from another site: %s %s (%s)",
                         self.request.method, self.request.path, reason)
        self.set_status(403)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(_PAGE.format(
            title="request from another web site refused",
            body=f"<p>Chatterbox Studio answers only its own pages and addresses typed "
                 f"into the browser. This request came from somewhere else "
                 f"(<code>{html.escape(reason or '')}</code>): a link or frame on "
                 f"another web site, or a program on another port of this machine.</p>"
                 f"<p>To open the dashboard, type its address into the address bar: "
                 f"<code>http://127.0.0.1:8866/</code> unless you chose another port "
                 f"(the one <code>python -m cbx.ui</code> printed).</p>"))


class KernelLimitReached(web.HTTPError):
    """A page load found CBX_MAX_KERNELS kernels alive or starting. An HTTP error, so
    that even a plain Voila page handler answers 503 rather than 500."""

    def __init__(self, running: int, limit: int, cull_seconds: float):
        super().__init__(503, f"{running} dashboard kernels are running, the limit "
                              f"({MAX_KERNELS_ENV}) is {limit}",
                         reason="Too many dashboard tabs")
        self.running, self.limit, self.cull_seconds = running, limit, cull_seconds

    def page(self) -> str:
        if self.cull_seconds > 0:
            cull = (f"wait: a kernel whose tab is closed is stopped after "
                    f"{self.cull_seconds / 60:g} minutes without activity "
                    f"(<code>{KERNEL_CULL_MINUTES_ENV}</code>);")
        else:
            cull = (f"idle kernels are never stopped here "
                    f"(<code>{KERNEL_CULL_MINUTES_ENV}=0</code>), so close a tab or "
                    f"restart;")
        return _PAGE.format(title="too many dashboard tabs", body=(
            f"<p>{self.running} dashboard kernels are already running. Each dashboard "
            f"tab runs its own kernel (several hundred MB, more with a model loaded; "
            f"it may outlive its tab until the idle cull), and this server runs at "
            f"most {self.limit} (<code>{MAX_KERNELS_ENV}</code>).</p>"
            f"<p>To free one:</p><ul>"
            f"<li>close another dashboard tab, then reload this page;</li>"
            f"<li>or {cull}</li>"
            f"<li>or restart the server: Ctrl+C where <code>python -m cbx.ui</code> "
            f"runs, then start it again (that stops every kernel).</li></ul>"
            f"<p>To allow more tabs, start it with <code>{MAX_KERNELS_ENV}</code> set "
            f"higher.</p>"))


class CappedKernelManager(AsyncMappingKernelManager):
    """Voila's kernel manager with a cap. A kernel counts from the moment its start is
    granted (its id is chosen here), so page loads that arrive together cannot all
    pass the check before any of them is registered."""

    max_kernels = Integer(DEFAULT_MAX_KERNELS, min=1, config=True,
                          help="Most kernels alive or starting at once.")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._starting: set[str] = set()

    async def start_kernel(self, **kwargs) -> str:
        live = set(self.list_kernel_ids()) | self._starting
        if len(live) >= self.max_kernels:
            raise KernelLimitReached(len(live), self.max_kernels, self.cull_idle_timeout)
        kernel_id = kwargs.setdefault("kernel_id", self.new_kernel_id())
        self._starting.add(kernel_id)
        try:
            return await super().start_kernel(**kwargs)
        finally:
            self._starting.discard(kernel_id)


class StudioPageHandler(TornadoVoilaHandler):
    """Voila's page, with the "too many dashboard tabs" page in place of its bare 503
    (the kernel starts before the page sends a byte, so the status can still change)."""

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, KernelLimitReached):
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.write(error.page())
            return
        super().write_error(status_code, **kwargs)


def guarded(handlers: list, log) -> list:
    """Voila's `handlers` behind the cross-site rule, its page handler replaced by
    `StudioPageHandler`."""
    swapped = [(rule[0], StudioPageHandler, *rule[2:])
               if isinstance(rule, tuple) and rule[1] is TornadoVoilaHandler else rule
               for rule in handlers]
    return [routing.Rule(ForeignRequests(), ForeignRequestHandler, {"log": log}),
            *swapped]

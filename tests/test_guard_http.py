"""The cross-site guard and the kernel cap of `python -m cbx.ui` (issue 21), without a
server: which requests count as another site's, that page loads arriving together
cannot start more kernels than the cap, and that the launcher opens the page's own
address (Voila's redirect through a local file is marked cross-site by browsers).
The same against the real server: tests/test_server_security.py."""
from __future__ import annotations

import asyncio

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

pytest.importorskip("voila")

from jupyter_server.services.kernels.kernelmanager import (  # noqa: E402
    AsyncMappingKernelManager,
)

from cbx.ui.guard_http import (  # noqa: E402
    CappedKernelManager,
    KernelLimitReached,
    StudioPageHandler,
    foreign_reason,
    guarded,
)

OWN = "127.0.0.1:8866"


def request(host: str = OWN, **headers) -> HTTPServerRequest:
    fields = HTTPHeaders({"Host": host})
    for name, value in headers.items():
        fields[name.replace("_", "-")] = value
    return HTTPServerRequest(start_line=RequestStartLine("GET", "/", "HTTP/1.1"),
                             headers=fields)


@pytest.mark.parametrize("headers", [
    {}, {"Sec_Fetch_Site": "none"}, {"Sec_Fetch_Site": "same-origin"},
    {"Origin": f"http://{OWN}"}, {"Referer": f"http://{OWN}/voila/static/x.js"},
    {"Sec_Fetch_Site": "same-origin", "Origin": f"http://{OWN}",
     "Referer": f"http://{OWN}/"},
])
def test_own_pages_typed_addresses_and_scripts_pass(headers):
    assert foreign_reason(request(**headers)) is None


@pytest.mark.parametrize("headers", [
    {"Sec_Fetch_Site": "cross-site"},
    {"Sec_Fetch_Site": "same-site"},            # another port of localhost: another program
    {"Sec_Fetch_Site": "something-new"},
    {"Origin": "https://attacker.example"},
    {"Origin": "http://127.0.0.1:8888"},
    {"Origin": "https://127.0.0.1:8866"},       # another scheme is another origin
    {"Origin": "null"},                         # a sandboxed frame, a local file
    {"Origin": "http://127.0.0.1:notaport"},
    {"Referer": "https://attacker.example/page"},
    {"Referer": "http://localhost:8866/"},      # the same server under another name
    {"Sec_Fetch_Site": "same-origin", "Referer": "http://127.0.0.1:9999/"},
])
def test_other_sites_requests_are_foreign(headers):
    reason = foreign_reason(request(**headers))
    assert reason and list(headers)[-1].replace("_", "-") in reason    # names the culprit


def test_default_ports_are_the_same_origin():
    assert foreign_reason(request(host="localhost", Origin="http://localhost:80")) is None
    assert foreign_reason(request(host="[::1]:8866", Origin="http://[::1]:8866")) is None


def test_the_guard_comes_first_and_the_page_handler_says_why_at_the_cap():
    from voila.tornado.handler import TornadoVoilaHandler

    rules = guarded([("/api/x", object), ("/(.*)", TornadoVoilaHandler, {"a": 1})], None)
    assert rules[0].target.__name__ == "ForeignRequestHandler"
    assert rules[1] == ("/api/x", object)
    assert rules[2] == ("/(.*)", StudioPageHandler, {"a": 1})


def test_page_loads_together_start_at_most_the_cap(monkeypatch):
    """Kernels are registered only once started, so a check on the registered ones
    alone lets every load of a burst through; the cap counts starts as they begin."""
    async def slow_start(self, **kwargs):
        await asyncio.sleep(0.05)
        self._kernels[kwargs["kernel_id"]] = object()
        return kwargs["kernel_id"]

    monkeypatch.setattr(AsyncMappingKernelManager, "start_kernel", slow_start)
    manager = CappedKernelManager(max_kernels=3, cull_idle_timeout=600)

    async def burst():
        return await asyncio.gather(*(manager.start_kernel(kernel_name="python3")
                                      for _ in range(20)), return_exceptions=True)

    results = asyncio.run(burst())
    started = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, KernelLimitReached)]
    assert len(started) == 3 and len(refused) == 17
    assert sorted(manager.list_kernel_ids()) == sorted(started)
    page = refused[0].page()
    assert refused[0].status_code == 503
    assert "CBX_MAX_KERNELS" in page and "close another dashboard tab" in page
    assert "10 minutes" in page and "python -m cbx.ui" in page

    del manager._kernels[started[0]]              # a tab closed, its kernel stopped
    assert isinstance(asyncio.run(manager.start_kernel(kernel_name="python3")), str)


def test_a_failed_start_gives_its_place_back(monkeypatch):
    async def failing_start(self, **kwargs):
        raise RuntimeError("no kernel today")

    monkeypatch.setattr(AsyncMappingKernelManager, "start_kernel", failing_start)
    manager = CappedKernelManager(max_kernels=1)
    for _ in range(3):
        with pytest.raises(RuntimeError, match="no kernel today"):
            asyncio.run(manager.start_kernel(kernel_name="python3"))


def test_the_launcher_opens_the_page_itself_not_a_redirecting_file(monkeypatch):
    """Voila's own launch opens a local HTML file whose meta refresh Chromium sends as
    `Sec-Fetch-Site: cross-site`; the guard would refuse the user's first page."""
    import threading
    import webbrowser

    from cbx.ui.fileserver import studio_voila

    opened = []
    done = threading.Event()

    class Browser:
        def open(self, url, new=0):
            opened.append(url)
            done.set()

    monkeypatch.setattr(webbrowser, "get", lambda name=None: Browser())
    app = studio_voila()(port=9123)
    app.launch_browser()
    assert done.wait(10)
    assert opened == ["http://localhost:9123/"]

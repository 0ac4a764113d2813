"""The real Voila server, as `python -m cbx.ui` starts it, against requests a hostile web
page can make (issue 15, class 16): a DNS-rebinding page reaches 127.0.0.1 under its
own host name, so every request carries that foreign name in `Host`. The page, the API
and the kernel websocket must refuse it; requests addressed to the machine itself work.

Issue 21: a page on any site can address 127.0.0.1 itself (an `<iframe>`, a no-cors
`fetch`), and each `GET /` started a kernel of ~400 MiB. Such requests carry
`Sec-Fetch-Site: cross-site` (or `same-site` from another port), or an `Origin` or
`Referer` that is not the dashboard's: all get 403 and start nothing. And however fast
the page is loaded, at most CBX_MAX_KERNELS kernels run; the loads past it get a 503
page that says how to free one.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cbx.dev.pageserver import VoilaServer

ATTACKER = "attacker.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("voila_security")
    (work / "models").mkdir()
    server = VoilaServer(work / "models", work, "security",
                         log_dir=Path(__file__).resolve().parent / "artifacts")
    yield server
    server.close()


def status_of(port: int, path: str, host: str, websocket: bool = False,
              method: str = "GET", extra: dict | None = None) -> int:
    """The HTTP status a raw request gets (no client library rewrites Host); `extra`
    adds headers, or drops one given as None (by default Origin is Host's)."""
    fields = {"Host": host, "Origin": f"http://{host}", **(extra or {})}
    headers = [f"{method} {path} HTTP/1.1"]
    if method != "GET":
        headers.append("Content-Length: 0")
    headers += [f"{name}: {value}" for name, value in fields.items() if value is not None]
    if websocket:
        key = base64.b64encode(os.urandom(16)).decode()
        headers += ["Upgrade: websocket", "Connection: Upgrade",
                    f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


@pytest.fixture(scope="module")
def kernel_id(server):
    """A live kernel: the one the page starts for a legitimate visitor."""
    with urllib.request.urlopen(server.url, timeout=180) as response:
        page = response.read().decode("utf-8", "replace")
    match = re.search(r'"kernelId":\s*"([0-9a-f-]{36})"', page)
    assert match, page[:2000]
    return match.group(1)


@pytest.mark.parametrize("host", [ATTACKER, f"{ATTACKER}:{{port}}", "192.168.1.20:{port}"])
def test_foreign_host_gets_403_for_page_api_and_kernel_websocket(server, kernel_id, host):
    host = host.format(port=server.port)
    assert status_of(server.port, "/", host) == 403
    assert status_of(server.port, "/api/kernels", host) == 403
    assert status_of(server.port, f"/api/kernels/{kernel_id}/channels", host,
                     websocket=True) == 403


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}"])
def test_the_machine_itself_still_gets_the_page_and_the_websocket(server, kernel_id, host):
    host = host.format(port=server.port)
    assert status_of(server.port, f"/api/kernels/{kernel_id}/channels", host,
                     websocket=True) == 101


def test_request_states_from_a_local_client_does_not_grow_the_server(server, kernel_id):
    """Issue 15 (17): one ~300-byte `request_states` comm message on the legacy
    websocket made the server grow by ~40 MB/s; it came from a foreign Host, refused
    above now. From a local client, the same message (and a malformed one) must leave
    the server's memory where it was."""
    import json
    import time
    import uuid

    import psutil
    websocket = pytest.importorskip("websocket")

    def message(msg_type, content):
        return json.dumps({"header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type,
                                      "session": "s", "username": "u", "date": "",
                                      "version": "5.3"},
                           "parent_header": {}, "metadata": {}, "content": content,
                           "channel": "shell", "buffers": []})

    proc = psutil.Process(server.proc.pid)
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels"
        f"?session_id={uuid.uuid4().hex}", origin=f"http://127.0.0.1:{server.port}")
    try:
        before = proc.memory_info().rss
        comm = uuid.uuid4().hex
        ws.send(message("comm_open", {"comm_id": comm, "target_name":
                                      "jupyter.widget.control", "data": {}}))
        ws.send(message("comm_msg", {"comm_id": comm, "data": {"method": "request_states"}}))
        ws.send(message("comm_msg", {"comm_id": "no-such-comm",
                                     "data": {"method": "request_states"}}))
        ws.settimeout(0.5)
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                ws.recv()
            except websocket.WebSocketTimeoutException:
                pass
        grown = (proc.memory_info().rss - before) / 2**20
    finally:
        ws.close()
    assert grown < 50, f"the server grew by {grown:.0f} MiB in 8 s"


# what another site's page sends: a frame or no-cors fetch (Sec-Fetch-Site), a page on
# another port of this machine (same-site), and what older browsers send instead
FOREIGN = [{"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
           {"Origin": "https://attacker.example"}, {"Origin": "http://127.0.0.1:{other}"},
           {"Origin": "null"}, {"Origin": None, "Referer": "https://attacker.example/x"}]


def _foreign(extra: dict, port: int) -> dict:
    return {k: v.format(other=port + 1) if v else v for k, v in extra.items()}


@pytest.mark.parametrize("extra", FOREIGN, ids=lambda e: ",".join(map(str, e.values())))
def test_other_sites_get_403_and_start_no_kernel(server, kernel_id, extra):
    """Issue 21 (1): three such `GET /` started three kernels that lived an hour."""
    host, extra = f"127.0.0.1:{server.port}", _foreign(extra, server.port)
    kernels = server.kernel_pids()
    for path in ("/", "/?x=1", "/voila/render/dashboard.ipynb", "/api/kernels",
                 f"/api/kernels/{kernel_id}"):
        assert status_of(server.port, path, host, extra=extra) == 403, path
    assert status_of(server.port, f"/api/kernels/{kernel_id}/channels", host,
                     websocket=True, extra=extra) == 403
    assert server.kernel_pids() == kernels


@pytest.mark.parametrize("method,path", [("POST", "/voila/api/shutdown/{kernel}"),
                                         ("DELETE", "/api/kernels/{kernel}")])
def test_shutdown_from_another_port_with_a_forged_xsrf_cookie_fails(server, kernel_id,
                                                                    method, path):
    """Cookies do not keep to a port, so a page on another localhost port can set
    `_xsrf` and send the same value: the Origin still gives it away (404 from
    jupyter_server before issue 21, 403 from the guard now), and the kernel lives."""
    host = f"127.0.0.1:{server.port}"
    forged = {"Origin": f"http://127.0.0.1:{server.port + 1}", "Cookie": "_xsrf=forged",
              "X-XSRFToken": "forged"}
    assert status_of(server.port, path.format(kernel=kernel_id) + "?_xsrf=forged", host,
                     method=method, extra=forged) == 403
    assert status_of(server.port, f"/api/kernels/{kernel_id}/channels", host,
                     websocket=True) == 101


TINY_NOTEBOOK = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {},
                            "outputs": [], "source": "print('tiny page')"}],
                 "metadata": {"kernelspec": {"name": "python3", "language": "python",
                                             "display_name": "Python 3"}},
                 "nbformat": 4, "nbformat_minor": 5}
CAP = 3


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """`python -m cbx.ui` with CBX_MAX_KERNELS=3 on a one-cell notebook: each load
    starts a real kernel, at a fraction of the dashboard's cost."""
    work = tmp_path_factory.mktemp("voila_cap")
    (work / "models").mkdir()
    notebook = work / "tiny.ipynb"
    notebook.write_text(json.dumps(TINY_NOTEBOOK))
    server = VoilaServer(work / "models", work, "kernel_cap", notebook=notebook,
                         env={"CBX_MAX_KERNELS": str(CAP)},
                         log_dir=Path(__file__).resolve().parent / "artifacts")
    yield server
    server.close()


def load(server, headers: dict, *, answer: dict | None = None) -> tuple[int, str]:
    """GET the page: (status, body); `answer`, when given, gets the response headers."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=180)
    try:
        connection.request("GET", "/", headers=headers)
        response = connection.getresponse()
        if answer is not None:
            answer.update(response.getheaders())
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def test_typed_addresses_and_own_pages_still_load(small_server):
    for headers in ({"Sec-Fetch-Site": "none"},
                    {"Sec-Fetch-Site": "same-origin", "Referer": small_server.url}):
        kernels = len(small_server.kernel_pids())
        answer = {}
        status, page = load(small_server, headers, answer=answer)
        assert status == 200 and "tiny page" in page
        # no other page may frame the dashboard (clickjacking, hidden kernels)
        assert "frame-ancestors 'none'" in answer["Content-Security-Policy"]
        assert len(small_server.kernel_pids()) == kernels + 1


def test_twenty_rapid_loads_start_at_most_the_cap(small_server):
    before = len(small_server.kernel_pids())
    assert before <= CAP
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: load(small_server, {"Sec-Fetch-Site": "none"}),
                                range(20)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * (CAP - before) + [503] * (20 - CAP + before), statuses
    for status, page in results:
        if status == 503:
            assert "too many dashboard tabs" in page and "CBX_MAX_KERNELS" in page
            assert "close another dashboard tab" in page and "python -m cbx.ui" in page
    time.sleep(1)
    assert len(small_server.kernel_pids()) == CAP

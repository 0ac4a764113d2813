"""The real Voila server, as `python -m cbx.ui` starts it, against requests a hostile web
page can make (issue 15, class 16): a DNS-rebinding page reaches 127.0.0.1 under its
own host name, so every request carries that foreign name in `Host`. The page, the API
and the kernel websocket must refuse it; requests addressed to the machine itself work.
"""
from __future__ import annotations

import base64
import os
import re
import socket
import urllib.request
from pathlib import Path

import pytest

from cbx.pageserver import VoilaServer

ATTACKER = "attacker.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("voila_security")
    (work / "models").mkdir()
    server = VoilaServer(work / "models", work, "security",
                         log_dir=Path(__file__).resolve().parent / "artifacts")
    yield server
    server.close()


def status_of(port: int, path: str, host: str, websocket: bool = False) -> int:
    """The HTTP status a raw request gets (no client library rewrites Host)."""
    headers = [f"GET {path} HTTP/1.1", f"Host: {host}", f"Origin: http://{host}"]
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

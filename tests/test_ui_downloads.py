"""Downloads by URL (issue 20): the page links to files of the output folder and the
server (`python -m cbx.ui`) serves them, with the page's own protections: the Host
check, the Referer check, no file outside the folder, no kind of file the page does
not link to."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cbx.dev.pageserver import VoilaServer
from cbx.ui.downloads import href

ATTACKER = "attacker.example"


def test_links_name_files_of_the_output_folder_only(tmp_path, monkeypatch):
    monkeypatch.delenv("VOILA_SERVER_URL", raising=False)
    out = tmp_path / "outputs"
    take = out / "projects" / "my book-1a2b" / "exports" / "my book #1.mp3"
    assert href(take, out) == \
        "/cbx/outputs/projects/my%20book-1a2b/exports/my%20book%20%231.mp3?download=1"
    assert href(out / "take.wav.json", out) == "/cbx/outputs/take.wav.json?download=1"
    assert href(tmp_path / "elsewhere.wav", out) is None
    assert href(out / ".." / "voices" / "a.wav", out) is None
    assert href(out / "projects" / "x" / "project.db", out) is None
    monkeypatch.setenv("VOILA_SERVER_URL", "/studio/")        # Voila's base URL
    assert href(out / "a.wav", out) == "/studio/cbx/outputs/a.wav?download=1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("voila_downloads")
    (work / "models").mkdir()
    outputs = work / "outputs"
    (outputs / "sub dir").mkdir(parents=True)
    (outputs / "sub dir" / "a b.wav").write_bytes(b"RIFF take")
    (outputs / "project.db").write_bytes(b"the store")
    (outputs / ".hidden.wav").write_bytes(b"RIFF hidden")
    (work / "voices").mkdir()
    (work / "voices" / "clip.wav").write_bytes(b"RIFF voice")
    server = VoilaServer(work / "models", work, "downloads",
                         log_dir=Path(__file__).resolve().parent / "artifacts")
    yield server
    server.close()


def get(server, path: str, host: str | None = None, referer: str | None = "page"
        ) -> tuple[int, str, bytes]:
    """(status, headers, body) of a raw GET (no client library rewrites Host)."""
    host = host or f"127.0.0.1:{server.port}"
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    if referer:
        lines.append(f"Referer: http://{host}/" if referer == "page" else f"Referer: {referer}")
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, head.decode("latin-1"), body


def test_the_page_downloads_a_file_as_an_attachment(server):
    status, headers, body = get(server, "/cbx/outputs/sub%20dir/a%20b.wav?download=1")
    assert status == 200 and body == b"RIFF take"
    assert "Content-Disposition: attachment" in headers


@pytest.mark.parametrize("path,host,referer", [
    ("/cbx/outputs/sub%20dir/a%20b.wav", ATTACKER, "page"),           # DNS rebinding
    ("/cbx/outputs/sub%20dir/a%20b.wav", "192.168.1.20:{port}", "page"),
    ("/cbx/outputs/sub%20dir/a%20b.wav", None, "http://evil.example/"),  # another site
    ("/cbx/outputs/sub%20dir/a%20b.wav", None, None),                 # no page at all
    ("/cbx/outputs/../voices/clip.wav", None, "page"),
    ("/cbx/outputs/%2E%2E/voices/clip.wav", None, "page"),
    ("/cbx/outputs/project.db", None, "page"),
    ("/cbx/outputs/.hidden.wav", None, "page"),
])
def test_anything_else_is_refused(server, path, host, referer):
    status, _headers, body = get(server, path, host and host.format(port=server.port),
                                 referer)
    assert status in (403, 404) and b"RIFF" not in body and b"store" not in body

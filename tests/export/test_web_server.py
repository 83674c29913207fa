"""`hone serve-web` against a local attacker: nothing outside the bundle folder (``..``, ``%2e%2e``,
absolute paths, outward symlinks), no directory listings, a bounded number of threads whatever the
clients do, and no raw client text in the log. Requests go over raw sockets so that paths arrive
exactly as written."""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from hone.export import web_server
from hone.export.web_server import ISOLATION_HEADERS, WebServer

SECRET = b"outside-the-bundle-secret"
MODEL = bytes(range(256)) * 8


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "index.html").write_bytes(SECRET)
    folder = tmp_path / "bundle"
    (folder / "sub").mkdir(parents=True)
    (folder / "empty").mkdir()
    (folder / "trap").mkdir()
    (folder / "index.html").write_bytes(b"<p>inside</p>")
    (folder / "model.bin").write_bytes(MODEL)
    (folder / "sub" / "index.html").write_bytes(b"<p>sub</p>")
    (folder / "empty" / "notes.txt").write_bytes(b"notes")
    os.symlink(outside / "secret.txt", folder / "secret.txt")
    os.symlink(outside, folder / "outside")
    os.symlink(outside / "index.html", folder / "trap" / "index.html")
    os.symlink(folder / "index.html", folder / "page.html")  # a symlink that stays inside is fine
    return folder


def address(server: WebServer) -> tuple[str, int]:
    url = urllib.parse.urlsplit(server.url)
    return url.hostname, url.port


def send(server: WebServer, request: bytes, timeout: float = 5) -> tuple[int, bytes, bytes]:
    """The status, head and body of the answer to ``request``, sent as is."""
    with socket.create_connection(address(server), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


def get(server: WebServer, path: str, timeout: float = 5) -> tuple[int, bytes, bytes]:
    return send(server, f"GET {path} HTTP/1.0\r\n\r\n".encode("latin-1"), timeout)


def header(head: bytes, name: str) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def test_the_files_inside_are_served_and_nothing_that_resolves_outside(bundle: Path) -> None:
    outside = str(bundle.parent / "outside" / "secret.txt")
    with WebServer(bundle) as server:
        for path, body in (("/", b"<p>inside</p>"), ("/model.bin", MODEL), ("/page.html", b"<p>inside</p>"),
                           ("/sub/", b"<p>sub</p>"), ("/sub/index.html?x=1", b"<p>sub</p>")):
            status, head, got = get(server, path)
            assert (status, got) == (200, body), path
            assert all(header(head, name) == value for name, value in ISOLATION_HEADERS.items()), path
        assert header(get(server, "/model.bin")[1], "Content-Type") == "application/octet-stream"
        for path in ("/../outside/secret.txt", "/%2e%2e/outside/secret.txt", "/%2E%2E/%2e%2e/outside/secret.txt",
                     "/sub/../../outside/secret.txt", "/..%2foutside%2fsecret.txt", "/secret.txt",
                     "/outside/secret.txt", "/outside/", "/outside", "/outside/index.html", "/trap/",
                     "/trap/index.html", outside, "/" + outside, f"http://{server.url[7:]}{outside[1:]}",
                     "/%00", "/index.html%00.txt", "/index.html/"):
            status, _, got = get(server, path)
            assert status in (403, 404), path
            assert SECRET not in got, path


def test_a_folder_is_its_index_html_or_404_and_never_a_listing(bundle: Path) -> None:
    with WebServer(bundle) as server:
        status, _, body = get(server, "/empty/")
        assert status == 404
        assert b"notes.txt" not in body
        assert get(server, "/empty/?C=M;O=D")[0] == 404
        status, head, _ = get(server, "/sub?x=1")
        assert (status, header(head, "Location")) == (301, "/sub/?x=1")
        assert get(server, "/sub/")[2] == b"<p>sub</p>"


def test_silent_connections_take_no_thread_and_do_not_hold_up_a_request(bundle: Path) -> None:
    with WebServer(bundle) as server:
        before = threading.active_count()
        silent = [socket.create_connection(address(server)) for _ in range(40)]
        try:
            time.sleep(0.3)  # let the server accept them all
            assert threading.active_count() - before <= web_server.WORKERS
            start = time.monotonic()
            assert get(server, "/", timeout=2)[0] == 200
            assert time.monotonic() - start < 2
            assert threading.active_count() - before <= web_server.WORKERS
        finally:
            for sock in silent:
                sock.close()


def test_clients_that_stall_or_trickle_are_cut_off_and_the_pool_stays_bounded(bundle: Path, monkeypatch) -> None:
    monkeypatch.setattr(web_server, "TIMEOUT", 1.0, raising=False)
    with WebServer(bundle) as server:
        before = threading.active_count()
        silent = [socket.create_connection(address(server)) for _ in range(5)]
        trickling = [socket.create_connection(address(server)) for _ in range(30)]
        for sock in trickling:
            sock.sendall(b"GET / HTTP/1.0\r\nX-Slow: ")
        still_open, peak, start = set(silent + trickling), 0, time.monotonic()
        try:
            while still_open and time.monotonic() - start < 6:
                for sock in still_open & set(trickling):
                    try:
                        sock.send(b"x")
                    except OSError:
                        pass
                for sock in select.select(list(still_open), [], [], 0.2)[0]:
                    try:
                        closed = not sock.recv(4096)
                    except OSError:
                        closed = True
                    if closed:
                        still_open.discard(sock)
                peak = max(peak, threading.active_count() - before)
            assert not still_open, f"{len(still_open)} connections still open after {time.monotonic() - start:.1f} s"
            assert peak <= web_server.WORKERS
            assert get(server, "/", timeout=2)[0] == 200
        finally:
            for sock in silent + trickling:
                sock.close()


def test_client_text_reaches_the_log_quoted_and_never_as_raw_escapes(bundle: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=web_server.__name__)
    with WebServer(bundle) as server:
        assert get(server, "/\x1b[31mred")[0] == 404
        assert send(server, b"\x1b[2J\x1b[H / HTTP/1.0\r\n\r\n")[0] == 501  # an unknown method
    assert "\\x1b[31mred" in caplog.text
    assert "\x1b" not in caplog.text

"""``hone serve-web DIR``: a static file server for a web bundle, on 127.0.0.1 by default.

A plain static server is not enough for onnxruntime-web: WASM threads need SharedArrayBuffer,
which a browser offers only to a cross-origin isolated page, so every response carries
``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Embedder-Policy: require-corp``
(and ``Cross-Origin-Resource-Policy: same-origin`` for the page's own files). ``.wasm`` must be
``application/wasm`` for streaming compilation and ``.mjs`` a JavaScript type for module imports;
Python's mimetypes table does not guarantee either. Nothing is cached (``Cache-Control: no-store``)
so a re-exported bundle is what the next load sees.

Other local users can reach the port too, so the server keeps these rules:

* Only files whose real path (every symlink resolved) is inside the real bundle folder are served;
  anything else, whether reached by ``..``, ``%2e%2e``, an absolute path or a symlink that points
  out of the folder, is 404. (The check and the open are two steps: someone who can write inside
  the bundle folder could race them, but that person can change the bundle anyway.)
* A folder is served as its ``index.html`` or is 404; there are no directory listings.
* Threads are bounded: a connection that has sent nothing waits in the accept loop's selector,
  not in a thread, and is closed after ``TIMEOUT`` seconds (and the oldest when more than
  ``MAX_WAITING`` wait). Once it sends, it goes to a pool of ``WORKERS`` threads, with at most
  ``BACKLOG`` more queued (beyond that it is closed); the worker gives it ``TIMEOUT`` seconds to
  finish the request head and ``TIMEOUT`` seconds for each socket read or write.
* Text the client controls (request line, path, headers) is logged with ``%r`` only, so it cannot
  put terminal escapes on the screen; logs go to ``logging`` at debug level, not to stderr.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import selectors
import socket
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path
from typing import BinaryIO, cast

from hone.errors import OptionError

logger = logging.getLogger(__name__)

WORKERS = 16  # threads that answer requests
BACKLOG = 32  # connections with a request queued for a worker before new ones are closed
MAX_WAITING = 256  # connections that have sent nothing yet, held without a thread
TIMEOUT = 10.0  # seconds: to start the request, to finish its head, for each socket read or write

MIME_TYPES = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".onnx": "application/octet-stream",
    ".data": "application/octet-stream",
    ".bin": "application/octet-stream",
}
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class BundleRequestHandler(SimpleHTTPRequestHandler):
    """GET and HEAD of the bundle's files, with the isolation headers and the right MIME types."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(TIMEOUT)  # each socket read and write (read at setup: tests patch it)
        self.rfile.close()
        self.rfile = io.BufferedReader(_ReadUntil(self.connection, time.monotonic() + TIMEOUT))

    def send_head(self) -> BinaryIO | None:
        """Headers for the file the URL names, and the file open; or an error or redirect and None."""
        url = urllib.parse.urlsplit(self.path)
        name = self.translate_path(self.path)  # in the folder, ``..`` dropped, symlinks not yet resolved
        real = self.real_path(name)
        if real is not None and os.path.isdir(real):
            if not url.path.endswith("/"):  # so that the page's relative URLs resolve inside the folder
                self.redirect(url.path + "/" + (f"?{url.query}" if url.query else ""))
                return None
            name = os.path.join(name, "index.html")
            real = self.real_path(name)
        elif url.path.endswith("/"):
            real = None  # a file name with a trailing slash
        if real is None or not os.path.isfile(real):
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        try:
            file = open(real, "rb")  # noqa: SIM115 (the caller copies and closes it)
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        try:
            stat = os.fstat(file.fileno())
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", self.guess_type(name))
            self.send_header("Content-Length", str(stat.st_size))
            self.send_header("Last-Modified", self.date_time_string(stat.st_mtime))
            self.end_headers()
        except BaseException:
            file.close()
            raise
        return file

    def real_path(self, path: str) -> str | None:
        """``path`` with every symlink resolved, or None where that is outside the bundle folder."""
        root = os.path.realpath(self.directory)
        try:
            real = os.path.realpath(path)
            inside = os.path.commonpath([root, real]) == root
        except ValueError:  # a NUL byte in the path, or another drive on Windows
            return None
        return real if inside else None

    def redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.MOVED_PERMANENTLY)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def end_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        logger.debug("%s %r", self.address_string(), format % args)


class _ReadUntil(io.RawIOBase):
    """A socket's bytes until a deadline, so that a client trickling its request cannot keep a worker."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if time.monotonic() > self._deadline:
            raise TimeoutError("the request did not arrive in time")  # the handler logs it and closes
        return self._sock.recv_into(buffer)


class BundleServer(HTTPServer):
    """An HTTPServer answering on a pool of WORKERS threads, which a connection reaches only once it sends.

    ``serve_forever`` runs one selector over the listening socket and the accepted connections that
    have sent nothing yet; ``shutdown`` stops it from another thread and ``server_close`` ends the rest.
    """

    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: object) -> None:
        super().__init__(address, handler)  # type: ignore[arg-type]
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="hone-serve-web")
        self._slots = threading.BoundedSemaphore(WORKERS + BACKLOG)
        self._busy: set[socket.socket] = set()  # connections handed to the pool, running or queued
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()  # as in socketserver: shutdown waits for a serve_forever to end

    def serve_forever(self, poll_interval: float = 0.2) -> None:
        self._stopped.clear()
        waiting: dict[socket.socket, tuple[object, float]] = {}  # address and deadline, oldest first
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                while not self._stop.is_set():
                    for key, _ in selector.select(poll_interval):
                        if key.fileobj is self.socket:
                            self._accept(selector, waiting)
                        else:
                            conn = cast(socket.socket, key.fileobj)  # all but the listener: accepted
                            selector.unregister(conn)
                            self._dispatch(conn, waiting.pop(conn)[0])
                    now = time.monotonic()
                    while waiting and next(iter(waiting.values()))[1] < now:
                        self._drop(selector, waiting, next(iter(waiting)))
                while waiting:
                    self._drop(selector, waiting, next(iter(waiting)))
        finally:
            self._stop.clear()
            self._stopped.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        with self._lock:
            for conn in self._busy:  # wakes workers blocked on a slow client
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._pool.shutdown(wait=True)

    def handle_error(self, request: object, client_address: object) -> None:
        logger.debug("%s: %r", client_address, sys.exception())

    def _accept(self, selector: selectors.BaseSelector, waiting: dict) -> None:
        try:
            conn, address = self.get_request()
        except OSError:
            return
        if len(waiting) >= MAX_WAITING:
            self._drop(selector, waiting, next(iter(waiting)))
        waiting[conn] = (address, time.monotonic() + TIMEOUT)
        selector.register(conn, selectors.EVENT_READ)

    def _drop(self, selector: selectors.BaseSelector, waiting: dict, conn: socket.socket) -> None:
        selector.unregister(conn)
        del waiting[conn]
        self.shutdown_request(conn)

    def _dispatch(self, conn: socket.socket, address: object) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(conn)  # every worker busy and the backlog full
            return
        with self._lock:
            self._busy.add(conn)
        self._pool.submit(self._work, conn, address)

    def _work(self, conn: socket.socket, address: object) -> None:
        try:
            self.finish_request(conn, address)
        except Exception:  # noqa: BLE001 - socketserver's way: handle_error logs it, the server goes on
            self.handle_error(conn, address)
        finally:
            with self._lock:
                self._busy.discard(conn)
            self.shutdown_request(conn)
            self._slots.release()


class WebServer:
    """The bundle served in a background thread; ``url`` is where it listens. Use as a context manager."""

    def __init__(self, folder: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.folder = check_bundle(folder)
        handler = functools.partial(BundleRequestHandler, directory=str(self.folder))
        try:
            self._server = BundleServer((host, port), handler)
        except OSError as exc:
            raise OptionError(
                f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port"
            ) from exc
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.socket.getsockname()[:2]
        return f"http://{host}:{port}/"

    def start(self) -> WebServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="hone-serve-web", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_bundle(folder: str | os.PathLike[str]) -> Path:
    """``folder`` as a Path, or an error if it is not a web bundle (no index.html)."""
    path = Path(folder)
    if not path.is_dir():
        raise OptionError(f"{path} is not a folder; give the folder `hone export --target web -o DIR` wrote")
    if not (path / "index.html").is_file():
        raise OptionError(
            f"{path} has no index.html; give the folder `hone export --target web -o DIR` wrote"
        )
    return path.resolve()

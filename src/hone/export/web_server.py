"""``hone serve-web DIR``: a static file server for a web bundle, on 127.0.0.1 by default.

A plain static server is not enough for onnxruntime-web: WASM threads need SharedArrayBuffer,
which a browser offers only to a cross-origin isolated page, so every response carries
``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Embedder-Policy: require-corp``
(and ``Cross-Origin-Resource-Policy: same-origin`` for the page's own files). ``.wasm`` must be
``application/wasm`` for streaming compilation and ``.mjs`` a JavaScript type for module imports;
Python's mimetypes table does not guarantee either. Nothing is cached (``Cache-Control: no-store``)
so a re-exported bundle is what the next load sees.

The standard library's ``ThreadingHTTPServer`` does the serving; this module only sets the
headers and types, keeps requests inside the folder (``SimpleHTTPRequestHandler`` already refuses
paths that escape it) and logs through ``logging`` instead of stderr.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from hone.errors import OptionError

logger = logging.getLogger(__name__)

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

    def end_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        logger.debug("%s " + format, self.address_string(), *args)


class WebServer:
    """The bundle served in a background thread; ``url`` is where it listens. Use as a context manager."""

    def __init__(self, folder: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.folder = check_bundle(folder)
        handler = functools.partial(BundleRequestHandler, directory=str(self.folder))
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise OptionError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from exc
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "WebServer":
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

    def __enter__(self) -> "WebServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_bundle(folder: str | os.PathLike[str]) -> Path:
    """``folder`` as a Path, or an error if it is not a web bundle (no index.html)."""
    path = Path(folder)
    if not path.is_dir():
        raise OptionError(f"{path} is not a folder; give the folder `hone export --target web -o DIR` wrote")
    if not (path / "index.html").is_file():
        raise OptionError(f"{path} has no index.html; give the folder `hone export --target web -o DIR` wrote")
    return path.resolve()

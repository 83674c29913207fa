"""Limits on what one HTTP connection may send before hone's app sees it: head bytes, URL bytes,
and how long the head may take to arrive.

uvicorn's httptools protocol buffers a request's URL and headers without any bound (a 200 MB
header grew the server by 240 MB and held its loop for seconds) and waits forever for a head that
never ends (slowloris). ``bounded_protocol`` returns a subclass of it that

- feeds the parser the head in slices of ``_SLICE`` bytes and answers **431** once more than
  ``max_header_bytes`` arrived without the head being complete (the URL counts in it);
- answers **414** once the URL passes ``max_url_bytes``;
- closes the connection with **408** when the head is not complete ``header_timeout_s`` after the
  connection opened or the previous request ended (an idle keep-alive connection is closed by
  uvicorn's own ``timeout_keep_alive``).

Written here because uvicorn has no such settings for httptools (h11's ``max_incomplete_event_size``
bounds the head, but h11 costs more CPU per request); the parsing stays uvicorn's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_SLICE = 8192
_REASONS = {408: b"Request Timeout", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 64 * 1024
    max_url_bytes: int = 8 * 1024
    header_timeout_s: float = 10.0


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def bounded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``limits`` (see the module docstring)."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._begin_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._in_head:
                self._feed(data)
                return
            position = 0
            while position < len(data) and self._in_head:
                if self._head_bytes >= limits.max_header_bytes:
                    self._refuse(
                        431, f"request head over {limits.max_header_bytes} bytes; send smaller headers"
                    )
                    return
                piece = data[position : position + _SLICE]
                position += len(piece)
                self._head_bytes += len(piece)
                if not self._feed(piece):
                    return
            if position < len(data):
                self._feed(data[position:])

        def _feed(self, data: bytes) -> bool:
            """uvicorn's data_received, with hone's refusals answered by their own status."""
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
            except httptools.HttpParserError as exc:
                refused = exc.__context__ if isinstance(exc.__context__, _Refused) else None
                if refused is not None:
                    self._refuse(refused.status, str(refused))
                else:
                    self.logger.warning("Invalid HTTP request received.")
                    self.send_400_response("Invalid HTTP request received.")
                return False
            except _Refused as refused:
                self._refuse(refused.status, str(refused))
                return False
            return not self.transport.is_closing()

        def on_url(self, url: bytes) -> None:
            if len(self.url) + len(url) > limits.max_url_bytes:
                raise _Refused(414, f"URL over {limits.max_url_bytes} bytes; send a shorter one")
            super().on_url(url)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._cancel_head_timer()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._begin_head()

        def _begin_head(self) -> None:
            self._in_head = True
            self._head_bytes = 0
            self._cancel_head_timer()
            self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_too_slow)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self._in_head and self._head_bytes and not self.transport.is_closing():
                self._refuse(408, f"request head not complete within {limits.header_timeout_s:g} s")
            elif self._in_head and not self.transport.is_closing() and self.cycle is None:
                self.transport.close()  # a connection that never sent a byte

        def _refuse(self, status: int, message: str) -> None:
            self._cancel_head_timer()
            if self.transport.is_closing():
                return
            body = (message + "\n").encode("ascii", "replace")
            head = (
                f"HTTP/1.1 {status} ".encode() + _REASONS.get(status, b"Refused") + b"\r\n"
                b"content-type: text/plain; charset=utf-8\r\n"
                + f"content-length: {len(body)}\r\n".encode()
                + b"connection: close\r\n\r\n"
            )
            self.transport.write(head + body)
            self.transport.close()

    return BoundedHttpToolsProtocol

"""One request and its answer on a connection of our HTTP/1.1 protocol (runtime/web/protocol.py): the ASGI
`receive` and `send` of one app call. The request's body has fully arrived before the app runs; an answer whose
body comes in one message is written in one `transport.write`, status line, headers and body together.
"""

from __future__ import annotations

import asyncio
import http
import re
from typing import Any, Protocol

HEADER_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
HEADER_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
PHRASES = {status.value: status.phrase.encode() for status in http.HTTPStatus}
STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, PHRASES.get(code, b"")) for code in range(100, 600)}
DISCONNECT = {"type": "http.disconnect"}


class Connection(Protocol):
    """What an exchange uses of its connection (runtime/web/protocol.py's HttpProtocol)."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    server_state: Any
    write_paused: asyncio.Future[None] | None

    def answered(self, exchange: Exchange) -> None: ...


class _Defaults:
    """The server's default headers (date, server) as bytes, rebuilt when uvicorn renews its list (each second)."""

    source: list[tuple[bytes, bytes]] | None = None
    joined = b""

    @classmethod
    def get(cls, headers: list[tuple[bytes, bytes]]) -> bytes:
        if headers is not cls.source:
            cls.joined = b"".join(b"%s: %s\r\n" % pair for pair in headers)
            cls.source = headers
        return cls.joined


class Exchange:
    """One request and its answer: the ASGI `receive` and `send` of one app call."""

    __slots__ = (
        "chunked",
        "chunks",
        "complete",
        "delivered",
        "disconnected",
        "expect_continue",
        "finished",
        "head_sent",
        "headers",
        "keep_alive",
        "protocol",
        "proxied",
        "remaining",
        "scope",
        "size",
        "started",
        "status",
        "waiter",
    )

    def __init__(self, protocol: Connection, scope: dict[str, Any]) -> None:
        self.protocol = protocol
        self.scope = scope
        self.chunks: list[bytes] = []
        self.size = 0
        self.keep_alive = True
        self.expect_continue = False
        self.complete = False  # the whole request has arrived
        self.delivered = False  # the app has received the body
        self.started = False  # the app has sent its response's start
        self.finished = False  # ... and the last of its body
        self.disconnected = False
        self.status = 200
        self.headers: Any = ()
        self.head_sent = False
        self.chunked = False
        self.remaining = -1  # bytes the response still owes its Content-Length; -1: no Content-Length
        self.waiter: asyncio.Future[None] | None = None
        self.proxied = False  # X-Forwarded-* headers from a trusted proxy: uvicorn's ProxyHeadersMiddleware reads them

    async def receive(self) -> dict[str, Any]:
        if not self.delivered:
            self.delivered = True
            body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
            self.chunks = []
            return {"type": "http.request", "body": body, "more_body": False}
        if not (self.disconnected or self.finished):  # the body was read: what comes next is the end
            self.waiter = self.protocol.loop.create_future()
            await self.waiter
        return DISCONNECT

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def send(self, message: dict[str, Any]) -> None:
        protocol = self.protocol
        if protocol.write_paused is not None and not self.disconnected:
            await asyncio.shield(protocol.write_paused)
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{kind}'.")
            self.started = True
            self.status = message["status"]
            self.headers = message.get("headers", ())
            return
        if self.finished:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, after response already completed.")
        if kind != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        head = b""
        if not self.head_sent:
            head = self._head(None if more else len(body))
            self.head_sent = True
        if self.scope["method"] == "HEAD":
            body = b""
        elif self.chunked:
            body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + (b"" if more else b"0\r\n\r\n")
        elif self.remaining >= 0:
            self.remaining -= len(body)
            if self.remaining < 0:
                raise RuntimeError("Response content longer than Content-Length")
            if not more and self.remaining:
                raise RuntimeError("Response content shorter than Content-Length")
        protocol.transport.write(head + body if head else body)
        if not more:
            self.finished = True
            protocol.answered(self)

    def _head(self, length: int | None) -> bytes:
        """The status line and headers; `length` is the whole body's, when it came in one message."""
        status = self.status
        block, self.remaining, framed, self.chunked, close = app_headers(self.headers)
        head = STATUS_LINES[status] + _Defaults.get(self.protocol.server_state.default_headers) + block
        head_request = self.scope["method"] == "HEAD"
        if head_request:
            self.remaining = -1  # a HEAD answer has no body, whatever its Content-Length says
        if close:
            self.keep_alive = False
        elif not self.keep_alive:
            head += b"connection: close\r\n"
        if not framed and not head_request and status not in (204, 304) and status >= 200:
            if length is None:
                self.chunked = True
                head += b"transfer-encoding: chunked\r\n"
            else:
                head += b"content-length: %d\r\n" % length
        return head + b"\r\n"


# An app's headers as bytes, with what they say of the framing: (block, Content-Length or -1, framed (a
# Content-Length or a Transfer-Encoding), chunked, connection: close). Kept by value: most answers repeat them.
HeaderBlock = tuple[bytes, int, bool, bool, bool]
_blocks: dict[tuple[Any, ...], HeaderBlock] = {}
MAX_BLOCKS = 1024


def app_headers(headers: Any) -> HeaderBlock:
    key = tuple(headers)
    try:
        block = _blocks.get(key)
    except TypeError:  # [name, value] lists: built each time
        return _header_block(key)
    if block is None:
        block = _header_block(key)
        if len(_blocks) >= MAX_BLOCKS:
            _blocks.clear()
        _blocks[key] = block
    return block


def _header_block(headers: tuple[Any, ...]) -> HeaderBlock:
    lines, names, values = [], [], []
    length, framed, chunked, close = -1, False, False, False
    for name, value in headers:
        names.append(name)
        values.append(value)
        name = name.lower()
        if name == b"content-length":
            length, framed = int(value), True
        elif name == b"transfer-encoding":
            chunked, framed = value.lower() == b"chunked", True
        elif name == b"connection" and b"close" in [t.strip() for t in value.lower().split(b",")]:
            close = True
        lines.append(b"%s: %s\r\n" % (name, value))
    # one search of all names and one of all values, not two per header
    if HEADER_NAME.search(b"".join(names)):
        raise RuntimeError("Invalid HTTP header name.")
    if HEADER_VALUE.search(b"\t".join(values)):
        raise RuntimeError("Invalid HTTP header value.")
    return b"".join(lines), length, framed, chunked, close

"""The HTTP server of every process that serves an app (`runtime web`, `runtime dashboard`, the emulator):
uvicorn, with a deadline on slow or incomplete requests and a cap on body size, answered in JSON.

uvicorn has no deadline of its own for a request's headers (its keep-alive timer starts only after a
response, and any byte received cancels it), so `TimedHttpProtocol` adds one at the protocol level; the
body's deadline and size cap are an ASGI wrapper, `RequestLimits`, which reads the body before the app runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from runtime.settings import Settings


def server_config(app: ASGIApp, settings: Settings, **options: Any) -> uvicorn.Config:
    """uvicorn's Config for `app` with our limits (MAX_BODY_SIZE, REQUEST_TIMEOUT) and no logging of its own;
    `options` are uvicorn's (host, port, timeout_graceful_shutdown, ...)."""
    return uvicorn.Config(
        RequestLimits(app, max_body_size=settings.max_body_size, timeout=settings.request_timeout),
        http=timed_protocol(settings.request_timeout),
        log_config=None,
        access_log=False,
        lifespan="off",
        **options,
    )


class Server(uvicorn.Server):
    """uvicorn's server, stopping gracefully on SIGTERM or SIGINT (a second SIGINT: at once) and then returning,
    so that the caller's clean-up runs and the process exits 0. uvicorn's own handling raises the signal
    again once it has stopped, which killed the process (status -15) before `runtime.stop()`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)


def json_error(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for the answers given below the ASGI app."""
    body = json.dumps({"error": message}).encode()
    reason = {400: "Bad Request", 408: "Request Timeout"}[status]
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class TimedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a deadline: a connection must deliver a request's headers within
    `request_timeout` seconds of opening, or of its previous response; otherwise it is closed (with a 408 if
    part of a request came). Malformed requests get a JSON 400 instead of uvicorn's plain text.

    One timer per connection, moved lazily: a response only notes when it completed, and the timer, when it
    fires, either closes the connection or sets itself for that time plus the deadline (a timer per
    response cost more than the rest of a small request's handling here)."""

    request_timeout = 30.0
    _deadline: asyncio.TimerHandle | None = None
    _partial = False
    _since = 0.0  # loop time the connection last became idle (opened, or answered a request)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self.loop.time()
        self._deadline = self.loop.call_at(self._since + self.request_timeout, self._expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._waiting():
            self._partial = True
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._partial = False
        self._since = self.loop.time()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the connection is the WebSocket protocol's from here on
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        self._disarm()
        self.transport.write(json_error(400, f"malformed HTTP request: {msg}"))
        self.transport.close()

    def _waiting(self) -> bool:
        """True between requests: no request's headers are complete that has not been answered."""
        return self.cycle is None or self.cycle.response_complete

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        now, due = self.loop.time(), self._since + self.request_timeout
        if not self._waiting():  # a request is being answered: its body has its own deadline, its handler none
            self._deadline = self.loop.call_at(now + self.request_timeout, self._expired)
            return
        if now < due:  # it answered a request since: look again a deadline after that answer
            self._deadline = self.loop.call_at(due, self._expired)
            return
        if self._partial:
            self.transport.write(
                json_error(
                    408, f"the request's headers did not arrive within REQUEST_TIMEOUT ({self.request_timeout:g} s)"
                )
            )
        self.transport.close()


def timed_protocol(request_timeout: float) -> type[TimedHttpProtocol]:
    """`TimedHttpProtocol` with this deadline (uvicorn builds the protocol itself, from a class)."""
    return type("TimedHttpProtocol", (TimedHttpProtocol,), {"request_timeout": request_timeout})


class _TooLarge(Exception):
    pass


class RequestLimits:
    """ASGI wrapper: reads a request's whole body before the app runs, so that a body larger than
    `max_body_size` bytes gets 413 (at once when its Content-Length says so, else as soon as the streamed
    bytes pass it) and one that has not fully arrived `timeout` seconds after its headers gets 408; both
    as JSON, closing the connection, before any handler sees the request."""

    def __init__(self, app: ASGIApp, *, max_body_size: int, timeout: float) -> None:
        self.app = app
        self.max_body_size = max_body_size
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is larger than MAX_BODY_SIZE ({self.max_body_size} bytes)"
        has_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_body_size:
                    await _reject(send, 413, too_large)
                    return
                has_body = value != b"0"
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:  # HTTP/1.1: no Content-Length and no Transfer-Encoding means no body to wait for
            await self.app(scope, receive, send)
            return
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._read(receive)
        except _TooLarge:
            await _reject(send, 413, too_large)
            return
        except TimeoutError:
            await _reject(send, 408, f"the request body did not arrive within REQUEST_TIMEOUT ({self.timeout:g} s)")
            return
        if body is None:
            return  # the client went away
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # what follows the body: a disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_size:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _reject(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

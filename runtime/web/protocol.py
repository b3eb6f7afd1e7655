"""Our HTTP/1.1 protocol (httptools on uvloop), in place of uvicorn's for every app we serve; uvicorn still runs
the process: sockets, signals, graceful shutdown.

It owns the limits of a request: its headers must arrive within REQUEST_TIMEOUT of the connection opening (or of
the previous answer), its body within REQUEST_TIMEOUT of its headers and within MAX_BODY_SIZE bytes, else a JSON
408 or 413 that closes the connection; its request line and headers within MAX_HEAD bytes, else a JSON 431; a
malformed request gets a JSON 400. The app runs once the whole body is in, so it never waits on a slow client.
Pipelined requests are answered in order, one at a time. An answer is written in one `transport.write` (status
line, headers and body) when the app sends its body in one message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections import deque
from typing import Any

import httptools
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from runtime.web.exchange import STATUS_LINES, Exchange

logger = logging.getLogger("uvicorn.error")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
MAX_HEAD = 64 * 1024  # bytes of a request's line and headers (nginx allows 32 KB, Node 16 KB): memory, not a setting


def json_error(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for the answers given below the ASGI app."""
    body = json.dumps({"error": message}).encode()
    return (
        STATUS_LINES[status]
        + b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        + body
    )


class HttpProtocol(asyncio.Protocol):
    """One connection. uvicorn builds it from its class with (config, server_state, app_state);
    `limited_protocol` makes the class with our limits."""

    request_timeout = 30.0
    max_body_size = 10 * 2**20

    def __init__(
        self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        if not config.loaded:
            config.load()
        self.app = self.proxied_app = config.loaded_app
        self.proxies: Any = None
        if isinstance(self.app, ProxyHeadersMiddleware):
            # uvicorn's layer that reads X-Forwarded-* from trusted proxies runs only for requests that have one
            self.proxies = self.app.trusted_hosts
            self.app = self.app.app
        self.root_path: str = config.root_path
        self.raw_root = self.root_path.encode("ascii")
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.app_state = app_state
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # httptools < 0.6.3: no leniencies to set
            # bytes after a request that says `Connection: close` are ignored, not an error that hides its answer
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.exchanges: deque[Exchange] = deque()  # in arrival order; the first is being answered
        self.parsing: Exchange | None = None  # the request whose headers or body are arriving
        self.write_paused: asyncio.Future[None] | None = None
        self.reading_paused = False
        self.refusal = b""  # an error answer to write, and close, once the requests before it are answered
        self.in_headers = False  # part of a request's headers has arrived
        self.head_size = 0  # bytes of the request line and headers parsed, or received while they are unfinished
        self.began = False  # a request began in the data being parsed
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.declared = -1  # the Content-Length of the request being parsed; -1: none
        self.streamed = False  # ... it has a Transfer-Encoding (a body of unknown length)
        self.expect = False  # ... it said `Expect: 100-continue`
        self.forwarded = False  # ... it has X-Forwarded-* headers from a trusted proxy
        self.since = 0.0  # loop time the current deadline started: connection idle, or a body expected
        self.deadline: asyncio.TimerHandle | None = None
        self.served = False  # a request was answered: an idle connection is closed after uvicorn's keep-alive timeout
        self.idle_limit = min(float(config.timeout_keep_alive), self.request_timeout)

    # --- the connection ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.server_state.connections.add(self)
        server = transport.get_extra_info("sockname")
        client = transport.get_extra_info("peername")
        self.server = tuple(server[:2]) if isinstance(server, tuple) else None
        self.client = tuple(client[:2]) if isinstance(client, tuple) else None
        self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": self.root_path,
        }
        self.trusted = self.proxies is not None and self.client is not None and self.client[0] in self.proxies
        self.since = self.loop.time()
        self.deadline = self.loop.call_at(self.since + min(self.request_timeout, self.idle_limit), self.expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        for exchange in self.exchanges:
            exchange.disconnected = True
            exchange.wake()
        self.exchanges.clear()
        if self.write_paused is not None and not self.write_paused.done():
            self.write_paused.set_result(None)
        self.parser = None  # type: ignore[assignment]

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        self.write_paused = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.write_paused is not None:
            if not self.write_paused.done():
                self.write_paused.set_result(None)
            self.write_paused = None

    def shutdown(self) -> None:
        """uvicorn's graceful stop: close now if idle, else after the answer being written."""
        if not self.exchanges:
            self.transport.close()
        else:
            for exchange in self.exchanges:
                exchange.keep_alive = False

    def data_received(self, data: bytes) -> None:
        if self.refusal or self.parser is None:
            return  # the connection will close once the requests before a refused one are answered
        self.began = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrades here: the request is answered as plain HTTP, then the connection closes
        except httptools.HttpParserError:
            self.refuse(json_error(400, "malformed HTTP request: Invalid HTTP request received."))
            return
        # headers still unfinished after this data: the parser holds it until a header is whole (one header may
        # be endless), so count it as it comes; a request that began in it is counted by its callbacks
        if self.in_headers and not self.began and not self.refusal:
            self.head_size += len(data)
            if self.head_size > MAX_HEAD:
                self.refuse(json_error(431, self.head_too_large()))

    def refuse(self, answer: bytes) -> None:
        """Answer `answer` and close, after the requests that came before the one being parsed."""
        if self.parsing is not None:
            self.exchanges.remove(self.parsing)
            self.parsing = None
        self.refusal = answer
        if not self.exchanges:
            self.transport.write(answer)
            self.transport.close()

    # --- the parser's callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_headers = self.began = True
        self.head_size = 0
        self.url = b""
        self.headers = []
        self.declared = -1
        self.streamed = self.expect = self.forwarded = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self.declared = int(value) if value.isdigit() else 0
        elif name == b"transfer-encoding":
            self.declared = max(self.declared, 0)
            self.streamed = True
        elif name == b"expect":
            self.expect = value.lower() == b"100-continue"
        elif name == b"x-forwarded-for" or name == b"x-forwarded-proto":
            self.forwarded = self.trusted
        self.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self.in_headers = False
        if self.refusal:
            return
        if self.head_size > MAX_HEAD:
            self.refuse(json_error(431, self.head_too_large()))
            return
        parser = self.parser
        version = parser.get_http_version()
        url = httptools.parse_url(self.url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope = self.scope.copy()  # what is the same for each request on the connection, then the request's own
        scope["http_version"] = version
        scope["headers"] = self.headers
        scope["state"] = self.app_state.copy()
        scope["method"] = parser.get_method().decode("ascii")
        scope["path"] = self.root_path + path if self.root_path else path
        scope["raw_path"] = self.raw_root + raw_path if self.root_path else raw_path
        scope["query_string"] = url.query or b""
        exchange = Exchange(self, scope)
        exchange.proxied = self.forwarded
        exchange.keep_alive = version != "1.0" and parser.should_keep_alive() and not parser.should_upgrade()
        first = not self.exchanges
        self.exchanges.append(exchange)
        self.parsing = exchange
        if self.declared > self.max_body_size:
            self.refuse(json_error(413, self.too_large()))
            return
        if first:
            self.since = self.loop.time()  # the body's deadline starts with its headers
        if self.expect and (self.declared > 0 or self.streamed):
            if first:
                self.transport.write(CONTINUE)
            else:
                exchange.expect_continue = True

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is None:
            return
        exchange.size += len(body)
        if exchange.size > self.max_body_size:
            self.refuse(json_error(413, self.too_large()))
            return
        exchange.chunks.append(body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is None:
            return
        self.parsing = None
        exchange.complete = True
        if exchange is self.exchanges[0]:
            self.run(exchange)
        elif not self.reading_paused:  # it waits its turn: read no further until it has it
            self.reading_paused = True
            self.transport.pause_reading()

    def head_too_large(self) -> str:
        return f"the request line and headers are larger than {MAX_HEAD} bytes"

    def too_large(self) -> str:
        return f"the request body is larger than MAX_BODY_SIZE ({self.max_body_size} bytes)"

    # --- answering ---------------------------------------------------------------------------------------

    def run(self, exchange: Exchange) -> None:
        task = self.loop.create_task(self.call_app(exchange))
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def call_app(self, exchange: Exchange) -> None:
        try:
            app = self.proxied_app if exchange.proxied else self.app
            result = await app(exchange.scope, exchange.receive, exchange.send)
        except BaseException as exc:
            logger.error("Exception in ASGI application\n", exc_info=exc)
            if not exchange.started:
                await self.send_500(exchange)
            else:
                self.transport.close()
            if not isinstance(exc, Exception):
                raise
        else:
            if result is not None:
                logger.error("ASGI callable should return None, but returned '%s'.", result)
                self.transport.close()
            elif not exchange.started and not exchange.disconnected:
                logger.error("ASGI callable returned without starting response.")
                await self.send_500(exchange)
            elif not exchange.finished and not exchange.disconnected:
                logger.error("ASGI callable returned without completing response.")
                self.transport.close()

    async def send_500(self, exchange: Exchange) -> None:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
        await exchange.send({"type": "http.response.start", "status": 500, "headers": headers})
        await exchange.send({"type": "http.response.body", "body": b"Internal Server Error"})

    def answered(self, exchange: Exchange) -> None:
        """The app has sent its whole answer: the next request's turn, or the close."""
        self.server_state.total_requests += 1
        self.served = True
        exchange.wake()
        transport = self.transport
        if not exchange.keep_alive:
            transport.close()
            return
        if transport.is_closing():
            return
        exchanges = self.exchanges
        exchanges.popleft()
        self.since = self.loop.time()
        if exchanges:
            following = exchanges[0]
            if following.complete:
                self.run(following)
            elif following.expect_continue:
                transport.write(CONTINUE)
        elif self.refusal:
            transport.write(self.refusal)
            transport.close()
            return
        if self.reading_paused and len(exchanges) <= 1:  # none is waiting its turn
            self.reading_paused = False
            transport.resume_reading()

    # --- the deadline --------------------------------------------------------------------------------------

    def expired(self) -> None:
        """One timer per connection, moved lazily: an answer or a request's headers only note when the deadline
        restarts, and the timer, when it fires, closes the connection or sets itself again (a timer per request
        cost more than the rest of a small request's handling). It fires at least every `idle_limit` seconds, so
        that a connection left idle after an answer is closed after uvicorn's keep-alive timeout."""
        self.deadline = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.exchanges and self.exchanges[0].complete:  # being answered: its handler has no deadline
            self.deadline = self.loop.call_at(now + self.idle_limit, self.expired)
            return
        idle = not self.exchanges and not self.in_headers
        due = self.since + (self.idle_limit if idle and self.served else self.request_timeout)
        if now < due:
            self.deadline = self.loop.call_at(min(due, now + self.idle_limit), self.expired)
        elif self.exchanges:
            self.parsing = None
            self.exchanges.clear()
            self.refuse(
                json_error(408, f"the request body did not arrive within REQUEST_TIMEOUT ({self.request_timeout:g} s)")
            )
        elif self.in_headers:
            self.refuse(
                json_error(
                    408, f"the request's headers did not arrive within REQUEST_TIMEOUT ({self.request_timeout:g} s)"
                )
            )
        else:
            self.transport.close()


def limited_protocol(request_timeout: float, max_body_size: int) -> type[HttpProtocol]:
    """`HttpProtocol` with these limits (uvicorn builds the protocol itself, from a class)."""
    attributes = {"request_timeout": request_timeout, "max_body_size": max_body_size}
    return type("HttpProtocol", (HttpProtocol,), attributes)

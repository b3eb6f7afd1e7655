"""Our HTTP/1.1 protocol (runtime/web/protocol.py) on its own: uvicorn serving a small ASGI app with it in this
process, spoken to over raw sockets. What the protocol does itself: pipelined answers in order, Expect:
100-continue, streamed and HEAD answers, a refusal queued behind earlier answers, the client's disconnect
heard by a waiting handler, a slow handler never cut off by REQUEST_TIMEOUT, one write per answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from runtime.settings import Settings
from runtime.web.server import server_config
from tests.conftest import free_port
from tests.runtime.web.test_http_limits import parse

REQUEST_TIMEOUT = 0.5
MAX_BODY_SIZE = 1000
heard: dict[str, asyncio.Event] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/slow answers after 0.2 s, /slower after 2x REQUEST_TIMEOUT, /echo sends the body back, /stream answers in
    three messages, /client answers the scheme and client, /wait waits for the client to go away, /raise raises;
    anything else answers its path."""
    path = scope["path"]
    message = await receive()
    if path == "/slow":
        await asyncio.sleep(0.2)
    elif path == "/slower":
        await asyncio.sleep(REQUEST_TIMEOUT * 2)
    elif path == "/raise":
        raise RuntimeError("a bug")
    elif path == "/wait":
        heard["wait"] = asyncio.Event()
        if (await receive())["type"] == "http.disconnect":
            heard["wait"].set()
        return
    body = message["body"] if path == "/echo" else path.encode()
    if path == "/client":
        body = f"{scope['scheme']} {scope['client'][0]}".encode()
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": part != b"three"})
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def config(request_timeout: float = REQUEST_TIMEOUT, **options: Any) -> uvicorn.Config:
    settings = Settings(request_timeout=request_timeout, max_body_size=MAX_BODY_SIZE)
    return server_config(app, settings, host="127.0.0.1", port=free_port(), **options)


@contextlib.asynccontextmanager
async def serving(request_timeout: float = REQUEST_TIMEOUT, **options: Any) -> AsyncIterator[int]:
    server = uvicorn.Server(config(request_timeout, **options))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield server.config.port
    finally:
        server.should_exit = True
        await task


async def talk(port: int, data: bytes, *, then: bytes = b"", timeout: float = 5) -> bytes:
    """Send `data` (and `then` once something came back), read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    received = b""
    try:
        async with asyncio.timeout(timeout):
            if then:
                received = await reader.read(65536)
                writer.write(then)
            received += await reader.read()
    finally:
        writer.close()
    return received


def answers(raw: bytes) -> list[bytes]:
    """The bodies of the responses in `raw`, in order (each with a Content-Length or chunked)."""
    bodies = []
    while raw:
        reply = parse(raw)
        bodies.append(reply.body)
        rest = raw.partition(b"\r\n\r\n")[2]
        if reply.headers.get("transfer-encoding") == "chunked":
            rest = rest.partition(b"0\r\n\r\n")[2]
        else:
            rest = rest[int(reply.headers.get("content-length", len(rest))) :]
        raw = rest
    return bodies


def get(path: str, *extra: str) -> bytes:
    return "".join([f"GET {path} HTTP/1.1\r\nHost: t\r\n", *(h + "\r\n" for h in extra), "\r\n"]).encode()


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with serving() as port:
        raw = await talk(port, get("/slow") + get("/fast") + get("/slow") + get("/last", "Connection: close"))
    assert answers(raw) == [b"/slow", b"/fast", b"/slow", b"/last"]


async def test_a_request_after_one_that_says_connection_close_is_not_answered() -> None:
    async with serving() as port:
        raw = await talk(port, get("/first", "Connection: close") + get("/second"))
    assert answers(raw) == [b"/first"]


async def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    async with serving() as port:
        raw = await talk(port, head, then=b"hello")
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert parse(raw).body == b"hello"


async def test_a_chunked_request_body_reaches_the_app_whole() -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    async with serving() as port:
        raw = await talk(port, head + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    assert parse(raw).body == b"abcde"


async def test_an_answer_in_several_messages_is_chunked_and_a_head_answer_has_no_body() -> None:
    async with serving() as port:
        streamed = await talk(port, get("/stream", "Connection: close"))
        head = await talk(port, b"HEAD /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert parse(streamed).headers["transfer-encoding"] == "chunked"
    assert parse(streamed).body == b"one two three"
    assert parse(head).headers["content-length"] == "2" and head.endswith(b"\r\n\r\n")


async def test_a_refusal_is_sent_after_the_answers_to_the_requests_before_it() -> None:
    oversized = f"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {MAX_BODY_SIZE + 1}\r\n\r\n".encode()
    async with serving() as port:
        raw = await talk(port, get("/slow") + oversized)
        malformed = await talk(port, get("/slow") + b"NOT HTTP\r\n\r\n")
    bodies = answers(raw)
    assert bodies[0] == b"/slow" and "MAX_BODY_SIZE" in json.loads(bodies[1])["error"], raw
    assert len(bodies) == 2
    bodies = answers(malformed)
    assert bodies[0] == b"/slow" and "malformed" in json.loads(bodies[1])["error"], malformed


async def test_forwarded_headers_from_a_trusted_proxy_set_the_client_and_scheme() -> None:
    """uvicorn's default: the proxy on 127.0.0.1 is trusted (FORWARDED_ALLOW_IPS)."""
    forwarded = ("X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https")
    async with serving() as port:
        raw = await talk(port, get("/client") + get("/client", *forwarded) + get("/client", "Connection: close"))
    assert answers(raw) == [b"http 127.0.0.1", b"https 203.0.113.7", b"http 127.0.0.1"]


async def test_a_handler_waiting_on_the_client_hears_it_go_away() -> None:
    async with serving() as port:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/wait"))
        while "wait" not in heard:
            await asyncio.sleep(0.01)
        writer.close()
        await asyncio.wait_for(heard["wait"].wait(), 5)


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout_once_answered() -> None:
    """uvicorn's timeout_keep_alive (5 s by default) closes a connection left idle after an answer, well before
    REQUEST_TIMEOUT, which still bounds a connection that has sent nothing yet."""
    async with serving(request_timeout=30, timeout_keep_alive=1) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/first"))
        assert parse(await reader.read(65536)).body == b"/first"
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
        assert asyncio.get_running_loop().time() - started < 5
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(2)
        writer.write(get("/late", "Connection: close"))
        assert parse(await asyncio.wait_for(reader.read(), 5)).body == b"/late"
        writer.close()


async def test_a_handler_slower_than_request_timeout_is_not_cut_off() -> None:
    async with serving() as port:
        raw = await talk(port, get("/slower", "Connection: close"))
    assert answers(raw) == [b"/slower"]


async def test_an_app_that_raises_gets_a_500_that_closes_the_connection() -> None:
    async with serving() as port:
        raw = await talk(port, get("/raise") + get("/next"))
    reply = parse(raw)
    assert reply.status == 500 and reply.headers["connection"] == "close"
    assert b"/next" not in raw


class Recorder(asyncio.Transport):
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 80), "peername": ("127.0.0.1", 5000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_an_answer_in_one_message_is_one_write() -> None:
    """The status line, headers and body of an answer go out in one write: one send() for the kernel, which was
    most of a small request's cost with a write for the head and another for the body."""
    cfg = config()
    cfg.load()
    state = ServerState()
    state.default_headers = [(b"server", b"uvicorn")]
    protocol = cfg.http_protocol_class(config=cfg, server_state=state, app_state={})  # type: ignore[call-arg]
    transport = Recorder()
    protocol.connection_made(transport)
    protocol.data_received(get("/one") + get("/two"))
    while len(transport.writes) < 2:
        await asyncio.sleep(0.01)
    assert [parse(w).body for w in transport.writes] == [b"/one", b"/two"]
    assert all(w.startswith(b"HTTP/1.1 200 OK\r\nserver: uvicorn\r\n") for w in transport.writes)
    protocol.connection_lost(None)

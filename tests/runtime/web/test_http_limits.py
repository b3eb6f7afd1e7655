"""The HTTP door's limits, on `runtime web` serving the example app as a real subprocess, spoken to over raw
sockets: out-of-range ids, oversized bodies (declared and chunked), and clients too slow to finish their
headers or their body. REQUEST_TIMEOUT and MAX_BODY_SIZE are set small so each case takes about a second."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Process, RedisServer, command, free_port, wait_for_port

REQUEST_TIMEOUT = 1.0
MAX_BODY_SIZE = 100_000


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool = field(default=True)

    def json(self) -> Any:
        return json.loads(self.body)


def parse(raw: bytes) -> Reply:
    """The first response in `raw` (100 Continue skipped); chunked bodies are decoded."""
    while raw.startswith(b"HTTP/1.1 100"):
        raw = raw.split(b"\r\n\r\n", 1)[1]
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
        return Reply(status, headers, body)
    length = int(headers.get("content-length", len(rest)))
    return Reply(status, headers, rest[:length])


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset after its answer counts as a close)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def read_response(sock: socket.socket) -> Reply:
    """One response with a Content-Length from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    reply = parse(data)
    while len(reply.body) < int(reply.headers["content-length"]):
        data += sock.recv(65536)
        reply = parse(data)
    return reply


def exchange(port: int, request: bytes, timeout: float = 10.0) -> Reply:
    """Send one raw request (which should say `Connection: close`) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before reading everything: its answer may still be there
        return parse(read_all(sock))


def seconds_until_closed(sock: socket.socket, limit: float, trickle: bytes = b"") -> tuple[float, bytes]:
    """Keep `sock` open (sending `trickle` every 0.2 s) until the server closes it; how long that took and
    what it said."""
    started = time.monotonic()
    sock.settimeout(0.2)
    data = b""
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if trickle:
                try:
                    sock.sendall(trickle)
                except (BrokenPipeError, ConnectionResetError):
                    break
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return time.monotonic() - started, data


@dataclass
class Web:
    port: int
    process: Process

    def get(self, path: str) -> Reply:
        return exchange(self.port, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)


def start_web(redis_server: RedisServer, directory: Path, **env: str) -> tuple[Process, int]:
    port = free_port()
    settings = {
        "REDIS_URL": redis_server.url,
        "DATABASE_URL": f"sqlite:///{directory}/runs.db",
        "REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        "MAX_BODY_SIZE": str(MAX_BODY_SIZE),
    } | env
    process = Process([command("runtime"), "web", "--host", "127.0.0.1", "--port", str(port)], ROOT, settings)
    try:
        wait_for_port(port, timeout=30)
    except TimeoutError:
        process.stop()
        raise AssertionError(f"runtime web did not start:\n{process.output}") from None
    return process, port


@pytest.fixture(scope="module")
def web(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """One `runtime web` for the module (the example app on a private Redis and SQLite)."""
    process, port = start_web(redis_server, tmp_path_factory.mktemp("http"))
    yield Web(port, process)
    process.stop()


def assert_json_error(reply: Reply, status: int) -> dict[str, Any]:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body: dict[str, Any] = reply.json()
    assert isinstance(body["error"], str) and body["error"]
    return body


def test_an_id_beyond_64_bits_is_a_json_404(web: Web) -> None:
    assert_json_error(web.get("/briefings/9223372036854775808"), 404)
    assert_json_error(web.get("/briefings/" + "9" * 5000), 404)
    assert_json_error(web.get("/briefings/9223372036854775807"), 404)  # in range, but no such briefing


def test_a_declared_body_over_max_body_size_is_a_json_413_before_it_is_read(web: Web) -> None:
    head = f"POST /briefings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {52 * 2**20}\r\n"
    reply = exchange(web.port, (head + "\r\n").encode() + b'{"topic": "')
    assert "MAX_BODY_SIZE" in assert_json_error(reply, 413)["error"]
    # with Expect: 100-continue the client is told before it sends anything
    reply = exchange(web.port, (head + "Expect: 100-continue\r\n\r\n").encode())
    assert_json_error(reply, 413)


def test_a_chunked_body_over_max_body_size_is_a_json_413_while_it_streams(web: Web) -> None:
    chunk = b"x" * 10_000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY_SIZE // len(chunk) + 2))
    request = b"POST /briefings HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + body  # no last chunk
    assert_json_error(exchange(web.port, request), 413)
    small = b'{"topic": "chunked"}'
    request = b"POST /briefings HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    reply = exchange(web.port, request + b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small))
    assert reply.status == 202 and reply.json()["topic"] == "chunked"


def test_a_connection_that_sends_nothing_is_closed_after_request_timeout(web: Web) -> None:
    with web.connect() as sock:
        elapsed, data = seconds_until_closed(sock, limit=REQUEST_TIMEOUT + 5)
    assert REQUEST_TIMEOUT * 0.8 <= elapsed < REQUEST_TIMEOUT + 2 and data == b""


def test_headers_trickled_byte_by_byte_are_cut_off_after_request_timeout(web: Web) -> None:
    with web.connect() as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n")
        elapsed, data = seconds_until_closed(sock, limit=REQUEST_TIMEOUT + 5, trickle=b"X")
    assert elapsed < REQUEST_TIMEOUT + 2
    assert_json_error(parse(data), 408)


def test_the_next_request_on_a_kept_alive_connection_has_the_same_deadline(web: Web) -> None:
    with web.connect() as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).status == 200
        sock.sendall(b"GET /health/live HTTP/1.1\r\n")
        elapsed, data = seconds_until_closed(sock, limit=REQUEST_TIMEOUT + 5, trickle=b"X")
    assert elapsed < REQUEST_TIMEOUT + 2
    assert_json_error(parse(data), 408)


def test_a_body_that_never_finishes_is_a_json_408_and_the_connection_is_closed(web: Web) -> None:
    with web.connect() as sock:
        sock.sendall(b"POST /briefings HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
        elapsed, data = seconds_until_closed(sock, limit=REQUEST_TIMEOUT + 5, trickle=b" ")
    assert elapsed < REQUEST_TIMEOUT + 2
    assert "REQUEST_TIMEOUT" in assert_json_error(parse(data), 408)["error"]


def test_a_malformed_request_is_a_json_400(web: Web) -> None:
    assert_json_error(exchange(web.port, b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n"), 400)
    assert_json_error(exchange(web.port, b"\x00\xff garbage\r\n\r\n"), 400)


def test_headers_over_64_kb_are_a_json_431_whether_sent_at_once_or_endless(web: Web) -> None:
    big = b"GET /health/live HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 100_000 + b"\r\nConnection: close\r\n\r\n"
    assert "65536 bytes" in assert_json_error(exchange(web.port, big), 431)["error"]
    many = b"".join(b"X-%d: %s\r\n" % (i, b"b" * 1000) for i in range(100))  # 100 headers of 1 KB
    assert_json_error(exchange(web.port, b"GET /health/live HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n"), 431)
    with web.connect() as sock:  # one header that never ends: cut off long before the client stops
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\nX-Endless: ")
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 50 * 2**20:
                sock.sendall(b"c" * 16384)
                sent += 16384
        assert_json_error(parse(read_all(sock)), 431)
    assert sent < 10 * 2**20, sent
    # 40 KB of headers is fine, and the connection carries on
    fine = b"GET /health/live HTTP/1.1\r\nHost: t\r\nX-Fine: " + b"d" * 40_000 + b"\r\nConnection: close\r\n\r\n"
    assert exchange(web.port, fine).json() == {"status": "ok"}


def test_a_fast_client_is_unaffected_by_the_deadlines(web: Web) -> None:
    with web.connect() as sock:
        for _ in range(3):  # one keep-alive connection, each request in time
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock).json() == {"status": "ok"}
            time.sleep(REQUEST_TIMEOUT * 0.6)


def assert_limits(port: int) -> None:
    head = f"POST /anything HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {MAX_BODY_SIZE + 1}\r\n\r\n"
    assert_json_error(exchange(port, head.encode()), 413)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        elapsed, _ = seconds_until_closed(sock, limit=REQUEST_TIMEOUT + 5)
    assert elapsed < REQUEST_TIMEOUT + 2


def test_the_dashboard_has_the_same_limits(redis_server: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "REDIS_URL": redis_server.url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/runs.db",
        "REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        "MAX_BODY_SIZE": str(MAX_BODY_SIZE),
    }
    process = Process([command("runtime"), "dashboard", "--host", "127.0.0.1", "--port", str(port)], ROOT, env)
    try:
        wait_for_port(port, timeout=30)
        assert_limits(port)
    finally:
        process.stop()


def test_the_emulator_has_the_same_limits_on_both_ports(redis_server: RedisServer, tmp_path: Path) -> None:
    shutil.copy(ROOT / "manifest.yaml", tmp_path)
    shutil.copytree(ROOT / "functions", tmp_path / "functions", ignore=shutil.ignore_patterns("__pycache__"))
    port, dashboard_port = free_port(), free_port()
    env = {
        "REDIS_URL": redis_server.url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/runs.db",
        "REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
        "MAX_BODY_SIZE": str(MAX_BODY_SIZE),
    }
    args = ["up", "--no-reload", "--port", str(port), "--dashboard-port", str(dashboard_port)]
    process = Process([command("emulator"), *args], tmp_path, env)
    try:
        process.wait_for("ready", timeout=60)
        assert_limits(port)
        assert_limits(dashboard_port)
    finally:
        process.stop()


def test_clients_that_hang_up_mid_response_leave_no_traceback(web: Web) -> None:
    """Issue 22: a client that disconnects mid-response logs one line at most, never a traceback. 300 clients send
    a request and reset the connection (SO_LINGER 0) before reading the answer; the server answers the next one."""
    import struct

    requests = [
        b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n",  # a large answer
        b"GET /briefings/1 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /briefings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n"
        b'{"topic": "x"}\n',
    ]
    for n in range(300):
        with socket.create_connection(("127.0.0.1", web.port)) as sock:
            sock.sendall(requests[n % 3])
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert web.get("/health/live").status == 200
    output = web.process.output
    for sign in ("Traceback", "unable to perform operation", "ASGI callable returned without completing"):
        assert sign not in output, output[-3000:]

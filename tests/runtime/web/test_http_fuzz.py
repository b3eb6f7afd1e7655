"""Fuzzing the HTTP door: `runtime web` serving the example app (a real subprocess, private Redis and SQLite)
gets a few hundred random requests from a fixed seed, over raw sockets: odd methods, paths with huge,
negative, unicode and percent-encoded ids, query strings, headers, bodies of random bytes, invalid UTF-8,
deep JSON, huge numbers, wrong content types, chunked and mis-framed bodies. None may get a 5xx, every
error must be JSON, and every answer must come within the request deadline."""

from __future__ import annotations

import json
import random
import string
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import Process, RedisServer
from tests.runtime.web.test_http_limits import MAX_BODY_SIZE, REQUEST_TIMEOUT, exchange, start_web

SEED = 20260824
CASES = 600

METHODS = ["GET"] * 6 + ["POST"] * 6 + ["HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND", "get", "FOO"]
IDS = [
    "1",
    "0",
    "00000000000000000000000001",
    str(2**63 - 1),
    str(2**63),
    str(2**64),
    "-1",
    "-" + str(2**63),
    "1e3",
    "0x10",
    "1.5",
    " 1",
    "%31%32",
    "%2D1",
    "\u0661\u0662\u0663",  # Arabic-Indic digits
    "%D9%A1%D9%A2",
    "%ZZ",
    "%00",
    "%ff%fe",
    "..%2F..%2Fetc%2Fpasswd",
    "\U0001f600",
    "%F0%9F%98%80",
    "null",
    "",
]
PATHS = [
    "/briefings",
    "/briefings/",
    "/health",
    "/health/live",
    "/",
    "/metrics",
    "/openapi.json",
    "/docs",
    "//briefings",
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "text/plain",
    "multipart/form-data; boundary=xyz",
    "application/x-www-form-urlencoded",
    "application/xml",
    "garbage/\u00e9",
    "",
]


@dataclass
class Case:
    request: bytes
    what: str
    oversized: bool = False  # declared or sent beyond MAX_BODY_SIZE: the server may close before reading it all


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.printable[:94]) for _ in range(n))


def _id(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.6:
        return rng.choice(IDS)
    if pick < 0.8:
        return str(rng.randint(-(2**70), 2**70))
    return "9" * rng.choice([19, 20, 100, 4300, 4301, 5000, 7000])


def _path(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.3:
        return "/briefings"
    if pick < 0.6:
        return "/briefings/" + _id(rng)
    if pick < 0.8:
        return rng.choice(PATHS)
    if pick < 0.9:
        return "/" + "/".join(_text(rng, rng.randint(0, 12)).replace(" ", "%20") for _ in range(rng.randint(1, 4)))
    return "/briefings/" + "a" * rng.randint(1000, 7000)


def _query(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.5:
        return ""
    if pick < 0.7:
        pairs = [f"{_text(rng, 3)}={_text(rng, 5)}" for _ in range(rng.randint(1, 5))]
        return "?" + "&".join(p.replace(" ", "+").replace("#", "%23") for p in pairs)
    return "?" + rng.choice(
        ["%", "a=%ZZ", "briefing_id=" + "9" * 30, "a=" + "x" * 10_000, "a&a&a=1&=", "\u00e9=\u00e9"]
    )


def _json_body(rng: random.Random) -> bytes:
    pick = rng.randrange(12)
    depth = rng.choice([10, 100, 1000, 10_000, 40_000])
    return [
        json.dumps({"topic": _text(rng, rng.randint(0, 300))}).encode(),
        b'{"topic": "' + bytes(rng.randrange(128, 256) for _ in range(8)) + b'"}',  # invalid UTF-8
        b"[" * depth + b"]" * depth,
        b'{"topic": ' * depth + b'"x"' + b"}" * depth,
        b'{"topic": 1' + b"0" * rng.choice([20, 400, 5000]) + b"}",
        b'{"topic": 1e999}',
        b'{"topic": NaN}',
        b'{"topic": "a", "topic": "b"}',
        rng.choice([b"null", b"true", b"[]", b'"x"', b"1", b"{}"]),
        b'{"topic": "\\ud800"}',  # a lone surrogate
        b'{"topic": "x"',  # cut short
        b'{"topic": "x"} trailing',
    ][pick]


def _body(rng: random.Random) -> bytes | None:
    pick = rng.random()
    if pick < 0.25:
        return None
    if pick < 0.7:
        return _json_body(rng)
    if pick < 0.9:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 5000)))
    if pick < 0.95:
        return b""
    return b'{"topic": "' + b"x" * rng.randint(MAX_BODY_SIZE - 20, 2 * MAX_BODY_SIZE) + b'"}'


def _chunked(rng: random.Random, body: bytes) -> bytes:
    out, i = [], 0
    while i < len(body):
        piece = body[i : i + rng.randint(1, max(1, len(body) // 3))]
        extension = rng.choice([b"", b"", b";name=value"])
        out.append(b"%x%s\r\n%s\r\n" % (len(piece), extension, piece))
        i += len(piece)
    return b"".join(out) + b"0\r\n\r\n"


def random_case(rng: random.Random) -> Case:
    path = _path(rng)
    method = "POST" if path == "/briefings" and rng.random() < 0.7 else rng.choice(METHODS)
    target = path + _query(rng)
    headers = ["Host: fuzz", "Connection: close"]
    if rng.random() < 0.5:
        headers.append(f"Content-Type: {rng.choice(CONTENT_TYPES)}")
    for _ in range(rng.randint(0, 3)):
        name = "X-" + "".join(rng.choice(string.ascii_letters + "-") for _ in range(rng.randint(1, 20)))
        headers.append(f"{name}: {_text(rng, rng.randint(0, 200))}")
    if rng.random() < 0.05:
        headers.append("X-Big: " + "b" * rng.randint(8_000, 60_000))
    if rng.random() < 0.05:
        headers.append(rng.choice(["Accept: */*", "Expect: 100-continue", "Content-Encoding: gzip", "Cookie: a=b"]))
    body = _body(rng)
    framing = rng.random()
    raw_body = b""
    what = f"{method} {target[:80]}"
    if body is not None:
        if framing < 0.6:
            headers.append(f"Content-Length: {len(body)}")
            raw_body = body
        elif framing < 0.9:
            headers.append("Transfer-Encoding: chunked")
            raw_body = _chunked(rng, body)
        elif framing < 0.92:
            headers.append(f"Content-Length: {len(body) + rng.randint(1, 50)}")  # promises more than it sends
            raw_body = body
            what += " (body short of its Content-Length)"
        else:
            raw_body = body  # no framing: the bytes are read as a second request
            what += " (unframed body)"
        what += f" body {body[:40]!r}... ({len(body)} bytes)"
    raw_target = target.encode()
    if rng.random() < 0.05:  # bytes that are not UTF-8, in the target or in a header
        raw_target += bytes(rng.randrange(128, 256) for _ in range(3))
    raw_headers = "".join(h + "\r\n" for h in headers).encode()
    if rng.random() < 0.05:
        raw_headers += b"X-Latin: caf\xe9 \xff\xfe\r\n"
    head = method.encode() + b" " + raw_target + b" HTTP/1.1\r\n" + raw_headers + b"\r\n"
    oversized = body is not None and len(body) > MAX_BODY_SIZE
    return Case(head + raw_body, what, oversized)


@pytest.fixture(scope="module")
def web(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, int]]:
    process, port = start_web(redis_server, tmp_path_factory.mktemp("fuzz"))
    yield process, port
    process.stop()


def test_random_requests_never_get_a_5xx_and_every_error_is_json(web: tuple[Process, int]) -> None:
    process, port = web
    rng = random.Random(SEED)
    statuses: Counter[int] = Counter()
    problems: list[str] = []
    started = time.monotonic()
    for _ in range(CASES):
        case = random_case(rng)
        began = time.monotonic()
        try:
            reply = exchange(port, case.request, timeout=REQUEST_TIMEOUT + 5)
        except (IndexError, ValueError):  # nothing, or not HTTP, came back
            if not case.oversized:
                problems.append(f"no HTTP answer to {case.what}")
            continue
        except TimeoutError:
            problems.append(f"no answer within {REQUEST_TIMEOUT + 5} s to {case.what}")
            continue
        elapsed = time.monotonic() - began
        statuses[reply.status] += 1
        if reply.status >= 500:
            problems.append(f"{reply.status} for {case.what}: {reply.body[:200]!r}")
        elif reply.status >= 400 and not case.what.startswith("HEAD"):
            try:
                assert reply.headers["content-type"].startswith("application/json")
                assert isinstance(reply.json()["error"], str)
            except (AssertionError, KeyError, ValueError, TypeError):
                problems.append(f"non-JSON {reply.status} for {case.what}: {reply.headers} {reply.body[:200]!r}")
        if elapsed > REQUEST_TIMEOUT + 2:
            problems.append(f"{elapsed:.1f} s for {case.what}")
    total = time.monotonic() - started
    print(f"\n{CASES} cases in {total:.1f} s; statuses: {dict(sorted(statuses.items()))}")
    assert not problems, "\n".join(problems)
    assert process.process.poll() is None, process.output
    assert "Traceback" not in process.output and "Exception in ASGI" not in process.output, process.output[-3000:]

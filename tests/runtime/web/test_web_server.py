"""The production HTTP server of `runtime web`, as a real subprocess: which server it is, and its graceful stop.

uvicorn, chosen on measurement (issue 25, bench/server_choice.py): granian served the same app's hello route 1.8x
as fast here, but it answers below the ASGI app, where our limits live, in ways the limit tests reject: a
malformed request gets a 400 with no JSON body, a connection that sends nothing is never closed, and headers cut
off at REQUEST_TIMEOUT get no 408. SIGTERM lets a request in flight finish, then the process exits 0.
"""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

from tests.conftest import ROOT, Process, RedisServer, command, free_port, wait_for_port, write_app
from tests.runtime.web.test_http_limits import Reply, parse, read_all

MANIFEST = """
app: slow-web
functions:
  slow:
    handler: "slow_web:slow"
    http: {path: /slow, methods: [GET]}
"""
SOURCE = """
import asyncio
from runtime import http

@http
async def slow(request):
    print("slow request started", flush=True)
    await asyncio.sleep(1.5)
    return {"slow": "done"}
"""


def start(redis_server: RedisServer, directory: Path) -> tuple[Process, int]:
    manifest = write_app(directory, MANIFEST, {"slow_web.py": SOURCE})
    port = free_port()
    env = {"REDIS_URL": redis_server.url, "DATABASE_URL": f"sqlite:///{directory}/runs.db"}
    args = [command("runtime"), "web", "--manifest", str(manifest), "--host", "127.0.0.1", "--port", str(port)]
    process = Process(args, ROOT, env)
    try:
        wait_for_port(port, timeout=30)
    except TimeoutError:
        process.stop()
        raise AssertionError(f"runtime web did not start:\n{process.output}") from None
    return process, port


def get(port: int, path: str) -> Reply:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return parse(read_all(sock))


def test_runtime_web_serves_on_uvicorn(redis_server: RedisServer, tmp_path: Path) -> None:
    process, port = start(redis_server, tmp_path)
    try:
        reply = get(port, "/health/live")
    finally:
        process.stop()
    assert reply.status == 200
    assert reply.headers.get("server") == "uvicorn", reply.headers


def test_sigterm_lets_a_slow_request_finish_and_the_process_exits_0(redis_server: RedisServer, tmp_path: Path) -> None:
    process, port = start(redis_server, tmp_path)
    replies: list[Reply] = []
    client = threading.Thread(target=lambda: replies.append(get(port, "/slow")))
    try:
        client.start()
        process.wait_for("slow request started", timeout=10)
        process.signal(signal.SIGTERM)
        client.join(10)
        code = process.wait(15)
    finally:
        process.stop()
    assert replies, process.output
    assert replies[0].status == 200 and replies[0].json() == {"slow": "done"}, replies[0]
    assert code == 0, process.output
    assert "Traceback" not in process.output, process.output

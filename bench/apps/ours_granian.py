"""Issue 25's server choice: `runtime web`'s app (the same ASGI app and body limits, the same start-up, the
collector paused as `runtime` pauses it) served by granian's embedded server in one process, for
bench/server_choice.py to compare with `runtime web` (uvicorn running our protocol). Not the production path:
granian answers malformed or slow requests below the app, where our limits cannot (see
tests/runtime/web/test_web_server.py).

python -m bench.apps.ours_granian --manifest M --host H --port P
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

import uvloop
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime import gc_pause


async def serve(args: argparse.Namespace) -> None:
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    from runtime.cli.processes import _runtime
    from runtime.web.app import create_web_app

    asyncio.get_running_loop().call_later(gc_pause.GRACE, gc_pause.resume)
    runtime = _runtime(args)
    await runtime.start()
    settings = runtime.settings
    app = RequestLimits(create_web_app(runtime), max_body_size=settings.max_body_size, timeout=settings.request_timeout)
    quiet = {"_granian": {"level": "ERROR", "handlers": [], "propagate": True}}  # our logging, no start lines
    server = Server(
        app,
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGINL,  # no lifespan: the runtime is started above, as `runtime web` does
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.request_timeout * 1000)),
        log_dictconfig={"version": 1, "disable_existing_loggers": False, "loggers": quiet},
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    try:
        await server.serve()
    finally:
        await runtime.stop()


class _TooLarge(Exception):
    pass


class RequestLimits:
    """ASGI wrapper (`runtime web` has these limits in its protocol, runtime/web/protocol.py): reads a
    request's whole body before the app runs, so that a body larger than `max_body_size` bytes gets 413 (at
    once when its Content-Length says so, else as soon as the streamed bytes pass it) and one that has not
    fully arrived `timeout` seconds after its headers gets 408; both as JSON, closing the connection, before
    any handler sees the request."""

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    args.command = "web"
    uvloop.install()
    gc_pause.pause()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()

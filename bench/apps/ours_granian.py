"""Issue 25's server choice: `runtime web`'s app (the same ASGI app and body limits, the same start-up, the
collector paused as `runtime` pauses it) served by granian's embedded server in one process, for
bench/server_choice.py to compare with `runtime web` on uvicorn. Not the production path: granian answers
malformed or slow requests below the app, where our limits cannot (see tests/runtime/web/test_web_server.py).

python -m bench.apps.ours_granian --manifest M --host H --port P
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop

from runtime import gc_pause


async def serve(args: argparse.Namespace) -> None:
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    from runtime.cli.processes import _runtime
    from runtime.web.app import create_web_app
    from runtime.web.server import RequestLimits

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

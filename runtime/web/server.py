"""The HTTP server of every process that serves an app (`runtime web`, `runtime dashboard`, the emulator):
uvicorn runs the process (sockets, signals, graceful shutdown) and our own HTTP/1.1 protocol
(runtime/web/protocol.py) speaks to the clients, with the limits MAX_BODY_SIZE and REQUEST_TIMEOUT.

The protocol is ours, not uvicorn's, for speed (issue 25: an answer in one write, its fixed headers joined once a
second, no ASGI layer to read the body) and because the limits belong below the app: uvicorn has no deadline for
a request's headers and answers malformed ones in plain text.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from runtime.settings import Settings
from runtime.web.protocol import limited_protocol


def server_config(app: ASGIApp, settings: Settings, **options: Any) -> uvicorn.Config:
    """uvicorn's Config for `app` with our protocol and limits (MAX_BODY_SIZE, REQUEST_TIMEOUT) and no logging of
    its own; `options` are uvicorn's (host, port, timeout_graceful_shutdown, ...)."""
    return uvicorn.Config(
        app,
        http=limited_protocol(settings.request_timeout, settings.max_body_size),
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

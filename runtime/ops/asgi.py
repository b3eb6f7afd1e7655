"""ASGI helpers shared by the middlewares that watch responses (the access log, the HTTP metrics)."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def observed(
    app: ASGIApp, scope: Scope, receive: Receive, send: Send, report: Callable[[int, float], None]
) -> None:
    """Call `app`, then `report(status, seconds)`: the response's status (500 if it raised before one
    was sent) and how long it took, however it ended."""
    started = time.perf_counter()
    status = 500

    async def send_wrapper(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await app(scope, receive, send_wrapper)
    finally:
        report(status, time.perf_counter() - started)

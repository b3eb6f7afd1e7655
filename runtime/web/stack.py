"""The request path of `runtime web`, kept short for speed (issue 25): one ASGI layer of ours that counts and times
every request (the metrics, the access log) around one send wrapper, and calls a function served at an exact path
(`/hello`) itself, with the JSON answers Starlette's layers would give; every other request goes through the
Starlette app (path patterns, 404, 405, /health, /metrics, /openapi.json)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Message, Receive, Scope, Send

from runtime.ops.metrics import metrics, route_template
from runtime.web.errors import failure_response, http_error

access_logger = logging.getLogger("runtime.access")

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Direct:
    """A route the layer calls itself: its handler and what Starlette's router would add to the scope."""

    handler: Handler
    template: str
    scope: dict[str, Any]


def direct_routes(app: Starlette, routes: list[BaseRoute], candidates: list[BaseRoute]) -> dict[str, dict[str, Direct]]:
    """{path: {method: Direct}} for each route of `candidates` (async endpoints that answer their own failures)
    whose path has no parameters, for the methods it is the router's first full match for in `routes` (an earlier
    `/{slug}` may take `/hello`'s GET)."""
    found: dict[str, dict[str, Direct]] = {}
    for index, route in enumerate(routes):
        if not isinstance(route, Route) or route.param_convertors or not route.methods:
            continue
        if not any(route is candidate for candidate in candidates):
            continue
        fixed = {"app": app, "router": app.router, "route": route, "endpoint": route.endpoint}
        for method in route.methods:
            probe = {"type": "http", "path": route.path, "root_path": "", "method": method}
            if any(earlier.matches(probe)[0] is Match.FULL for earlier in routes[:index]):
                continue
            found.setdefault(route.path, {})[method] = Direct(route.endpoint, route.path, fixed)
    return found


class WebStack:
    """runtime web's own layer, outermost but for tracing: each request counted by route template, method and
    status and timed (firstsip_http_*), logged when the access log is on, and a function at an exact path called
    directly (a Request built once, no per-route exception wrappers: its Endpoint answers its own failures)."""

    def __init__(
        self, app: Starlette, routes: list[BaseRoute], direct: dict[str, dict[str, Direct]], debug: bool = False
    ) -> None:
        self.app = app
        self.routes = routes
        self.direct = direct
        self.debug = debug
        self.counts = metrics().http_counts
        self.access_log = access_logger.isEnabledFor(logging.INFO)  # no log call per request when nothing is logged

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = False

        async def sending(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                sent = True
            await send(message)

        methods = self.direct.get(scope["path"]) if not scope.get("root_path") else None
        direct = methods.get(scope["method"]) if methods is not None else None
        try:
            if direct is None:
                await self.app(scope, receive, sending)  # Starlette's layers, our Failures among them
            else:
                scope.update(direct.scope)
                scope["path_params"] = {}
                request = Request(scope, receive, sending)
                try:
                    response = await direct.handler(request)
                    await response(scope, receive, sending)
                except HTTPException as exc:  # what Starlette's exception handler would answer
                    if sent:
                        raise
                    response = await http_error(request, exc)
                    await response(scope, receive, sending)
        except Exception as exc:  # what our Failures would answer
            if direct is None:
                raise
            response = failure_response(exc, f"{scope['method']} {scope['path']} failed", self.debug)
            if not sent:  # else the answer is cut short: the server closes the connection
                await response(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - started
            template = direct.template if direct is not None else route_template(scope, self.routes)
            self.counts.add(template, scope["method"], status, seconds)
            if self.access_log and access_logger.isEnabledFor(logging.INFO):
                self._log(scope, status, seconds)

    @staticmethod
    def _log(scope: Scope, status: int, seconds: float) -> None:
        elapsed = seconds * 1000
        access_logger.info(
            "%s %s %d %.1f ms",
            scope["method"],
            scope["path"],
            status,
            elapsed,
            extra={
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round(elapsed, 2),
            },
        )

"""The web process's error answers, all JSON `{"error": ...}`: 404 and 405 (`http_error`), the 500 or 503 of an
exception that escaped a handler (`failure_response`), and `Failures`, the ASGI layer that turns an exception
escaping a route into that answer."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

import orjson
import redis.exceptions
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.errors import Unavailable
from runtime.redaction import redact

logger = logging.getLogger("runtime.http")


JSON_TYPE = (b"content-type", b"application/json")


class FastJSONResponse(JSONResponse):
    """JSON encoded by orjson. Without headers, a media type or a background task, its two headers are made here,
    as Starlette's general path would make them (content-length, content-type), at a third of the cost."""

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        if headers is not None or media_type is not None or background is not None or status_code in (204, 304):
            super().__init__(content, status_code, headers, media_type, background)
            return
        self.status_code = status_code
        self.background = None
        self.body = body = self.render(content)
        self.raw_headers = [(b"content-length", b"%d" % len(body)), JSON_TYPE] if status_code >= 200 else [JSON_TYPE]

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def error_response(status: int, message: str, **more: Any) -> Response:
    return FastJSONResponse({"error": message, **more}, status_code=status)


# what a handler raises when Redis or the database is down or saturated: 503, not the handler's fault
REDIS_UNAVAILABLE = (
    redis.exceptions.ConnectionError,  # includes MaxConnectionsError (pool exhausted) and BusyLoadingError
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # mid-failover
    redis.exceptions.OutOfMemoryError,
)


def database_unavailable(exc: Exception) -> bool:
    """SQLAlchemy's errors for a database that refuses, dropped or is locked (OperationalError, InterfaceError),
    or whose pool had no connection to give in time (TimeoutError); asyncpg's refusals arrive unwrapped. What
    SQLAlchemy raises can only come once it is imported: a process that has not needed it does not import it
    here."""
    if isinstance(exc, ConnectionError):
        return True
    errors = sys.modules.get("sqlalchemy.exc")
    return errors is not None and isinstance(exc, errors.OperationalError | errors.InterfaceError | errors.TimeoutError)


def failure_response(exc: Exception, where: str, debug: bool = False) -> Response:
    """The answer to an exception that escaped a handler: 503 with Retry-After when Redis or the database
    is unavailable (logged as one line), else 500 (logged with its traceback)."""
    reason = redact(f"{type(exc).__name__}: {exc}".splitlines()[0])[:300]
    dependency = "Redis" if isinstance(exc, REDIS_UNAVAILABLE) else None
    if isinstance(exc, Unavailable):  # e.g. an enqueue that Redis, or it and the database, kept from being sure
        dependency = exc.dependency
    if dependency is None and database_unavailable(exc):
        dependency = "the database"
    if dependency is not None:
        logger.warning("%s: %s is unavailable: %s", where, dependency, reason)
        message = f"{dependency} {'are' if ' and ' in dependency else 'is'} unavailable; retry shortly"
        response = error_response(503, f"{message} ({reason})" if debug else message)
        response.headers["Retry-After"] = "1"
        return response
    logger.error("%s", where, exc_info=exc)
    return error_response(500, reason if debug else "internal error")


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's HTTPException (a path nothing serves, a method a route does not allow, ...) as JSON."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404 and exc.detail == "Not Found":
        return error_response(404, f"no function serves {request.method} {request.url.path}")
    if exc.status_code == 405:
        response = error_response(405, f"{request.method} is not allowed on {request.url.path}")
        response.headers["Allow"] = ", ".join(sorted(allowed_methods(request)))
        return response
    response = error_response(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def allowed_methods(request: Request) -> set[str]:
    """Every method some route serves at this request's path: Starlette's 405 names only the first route's,
    but GET and POST on one path are often two functions."""
    scope = {**request.scope, "method": ""}  # matches no method: each route at this path answers PARTIAL
    allowed: set[str] = set()
    for route in getattr(request.app, "routes", ()):
        match, _ = route.matches(scope)
        if match != Match.NONE:
            allowed |= getattr(route, "methods", None) or set()
    return allowed


class Failures:
    """The last line: an exception that escapes a route (a Response failing as it is sent, a bug of ours)
    becomes the same JSON 500 or 503 a handler's would, logged once, instead of Starlette's plain text."""

    def __init__(self, app: ASGIApp, debug: bool = False) -> None:
        self.app = app
        self.debug = debug

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception as exc:
            response = failure_response(exc, f"{scope['method']} {scope['path']} failed", self.debug)
            if not started:  # else the answer is cut short: uvicorn closes the connection
                await response(scope, receive, send)

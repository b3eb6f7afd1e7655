"""The web app: a Starlette application built from the manifest's `http:` functions.

A handler receives what its parameters ask for: a `Request`, path and query parameters by name
(validated against their type hints), and a pydantic model parsed from the JSON body. It returns a
Response, or a dict, list or pydantic model (sent as JSON), optionally as `(body, status)`.
A body that is not JSON gets 400 and one that fails its model 422, never 500.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError, create_model
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.connections import Runtime
from runtime.decorators import HttpFunction
from runtime.errors import ArgumentsError
from runtime.health import dependencies
from runtime.openapi import openapi_routes

logger = logging.getLogger("runtime.http")
access_logger = logging.getLogger("runtime.access")


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def error_response(status: int, message: str, **more: Any) -> Response:
    return FastJSONResponse({"error": message, **more}, status_code=status)


def to_response(value: Any) -> Response:
    """A handler's return value as a Response."""
    status = 200
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        value, status = value
    if isinstance(value, Response):
        return value
    if value is None:
        return Response(status_code=204 if status == 200 else status)
    if isinstance(value, BaseModel):
        return FastJSONResponse(value.model_dump(mode="json"), status_code=status)
    if isinstance(value, str):
        return PlainTextResponse(value, status_code=status)
    return FastJSONResponse(value, status_code=status)


def _validation_detail(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)
    ]


class Endpoint:
    """Calls one HTTP function with the arguments its signature asks for."""

    def __init__(self, name: str, fn: HttpFunction[..., Any], debug: bool = False) -> None:
        self.name = name
        self.debug = debug
        self.fn = fn
        try:
            hints = inspect.get_annotations(fn.fn, eval_str=True)
        except Exception:
            hints = {}
        self.request_param: str | None = None
        self.body_param: tuple[str, type[BaseModel]] | None = None
        fields: dict[str, Any] = {}
        for pname, param in inspect.signature(fn.fn).parameters.items():
            hint = hints.get(pname)
            if hint is Request or (pname == "request" and hint in (None, Any)):
                self.request_param = pname
            elif inspect.isclass(hint) and issubclass(hint, BaseModel):
                self.body_param = (pname, hint)
            else:
                default = ... if param.default is param.empty else param.default
                fields[pname] = (hint if hint is not None else Any, default)
        self.params_model = create_model(f"{name}_params", **fields) if fields else None

    async def __call__(self, request: Request) -> Response:
        try:
            kwargs = await self._arguments(request)
        except ValidationError as exc:
            if exc.errors()[0]["type"] == "json_invalid":
                return error_response(400, f"request body is not valid JSON: {exc.errors()[0]['msg']}")
            return error_response(422, f"invalid request for '{self.name}'", detail=_validation_detail(exc))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error_response(400, f"request body is not valid JSON: {exc}")
        try:
            if self.fn.is_async:
                value = await self.fn.fn(**kwargs)
            else:
                value = await run_in_threadpool(self.fn.fn, **kwargs)
        except HTTPException:
            raise
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error_response(400, f"request body is not valid JSON: {exc}")
        except ValidationError as exc:
            return error_response(422, f"invalid request for '{self.name}'", detail=_validation_detail(exc))
        except ArgumentsError as exc:
            return error_response(422, str(exc))
        except Exception as exc:
            logger.error("function '%s' failed on %s %s", self.name, request.method, request.url.path, exc_info=exc)
            return error_response(500, f"{type(exc).__name__}: {exc}" if self.debug else "internal error")
        return to_response(value)

    async def _arguments(self, request: Request) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.request_param:
            kwargs[self.request_param] = request
        if self.params_model is not None:
            raw = {**request.query_params, **request.path_params}
            kwargs |= dict(self.params_model.model_validate(raw))
        if self.body_param is not None:
            name, model = self.body_param
            body = await request.body()
            kwargs[name] = model.model_validate_json(body or b"{}")
        return kwargs


class AccessLog:
    """One line per request: method, path, status, milliseconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not access_logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
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


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404 and exc.detail == "Not Found":
        return error_response(404, f"no function serves {request.method} {request.url.path}")
    if exc.status_code == 405:
        return error_response(405, f"{request.method} is not allowed on {request.url.path}")
    return error_response(exc.status_code, str(exc.detail))


def health_routes(runtime: Runtime) -> list[Route]:
    async def health(request: Request) -> Response:
        deps = await dependencies(runtime)
        ok = all(v == "ok" for v in deps.values())
        return FastJSONResponse({"status": "ok" if ok else "unavailable", **deps}, status_code=200 if ok else 503)

    async def live(request: Request) -> Response:
        return FastJSONResponse({"status": "ok"})

    return [Route("/health", health, methods=["GET"]), Route("/health/live", live, methods=["GET"])]


def create_web_app(runtime: Runtime, *, debug: bool = False) -> Starlette:
    """The web process's app: every `http:` function at its route, plus /health, /health/live and (unless
    OPENAPI=false) /openapi.json and /docs."""
    routes = health_routes(runtime)
    if runtime.settings.openapi:  # described from Endpoints built the way the functions' own are
        routes += openapi_routes(runtime.app, {name: Endpoint(name, fn) for name, fn in runtime.app.http.items()})
    for name, fn in runtime.app.http.items():
        spec = runtime.app.manifest.functions[name].http
        assert spec is not None
        # a bound method, so Starlette calls it with a Request (an instance would be a raw ASGI app)
        endpoint = Endpoint(name, fn, debug).__call__
        routes.append(Route(spec.path, endpoint, methods=spec.methods, name=name))
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    if access_logger.isEnabledFor(logging.INFO):  # no extra layer per request when nothing is logged
        app.add_middleware(AccessLog)
    return app

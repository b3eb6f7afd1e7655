"""The web app: a Starlette application built from the manifest's `http:` functions.

A handler receives what its parameters ask for: a `Request`, path and query parameters by name
(validated against their type hints), and a pydantic model parsed from the JSON body. It returns a
Response, or a dict, list or pydantic model (sent as JSON), optionally as `(body, status)`.
A body that is not JSON gets 400 and one that fails its model 422, never 500; an integer parameter must
fit in 64 bits (a path's `{id:int}` beyond that matches nothing: 404). A handler that raises gets a JSON
500, logged once with its traceback, or 503 with Retry-After when what it raised says Redis or the
database is unavailable.
"""

from __future__ import annotations

import inspect
import json
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError, create_model
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.app.connections import Runtime
from runtime.app.decorators import HttpFunction
from runtime.errors import ArgumentsError
from runtime.ops.health import dependencies
from runtime.ops.metrics import metrics_route
from runtime.tracing import instrument_asgi, setup_tracing
from runtime.web.errors import Failures, FastJSONResponse, error_response, failure_response, http_error
from runtime.web.openapi import openapi_routes
from runtime.web.stack import WebStack, direct_routes


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


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]


def _bounded(hint: Any) -> Any:
    """An `int` parameter must fit in 64 bits, as the ids a database holds do (SQLite raises beyond)."""
    return Int64 if hint is int else hint


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
                fields[pname] = (_bounded(hint) if hint is not None else Any, default)
        self.params_model = create_model(f"{name}_params", **fields) if fields else None
        # the common case, a handler that takes only the Request (its parameter's name): no coroutine to gather it
        self.request_only = self.request_param if not fields and self.body_param is None else None

    async def __call__(self, request: Request) -> Response:
        try:
            kwargs = {self.request_only: request} if self.request_only else await self._arguments(request)
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
            where = f"function '{self.name}' failed on {request.method} {request.scope['path']}"
            return failure_response(exc, where, self.debug)
        try:
            return to_response(value)
        except Exception as exc:  # rendering happens here, e.g. a value orjson cannot encode
            return failure_response(
                exc, f"function '{self.name}' returned a value that cannot be sent as JSON", self.debug
            )

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


def _shadows(functions: list[BaseRoute], reserved: list[BaseRoute]) -> bool:
    """Whether any function route matches a path of the reserved routes."""
    paths = [path for route in reserved if isinstance(path := getattr(route, "path", None), str)]
    for route in functions:
        for path in paths:
            for method in ("GET", "POST", "HEAD"):
                scope = {"type": "http", "path": path, "root_path": "", "method": method}
                if route.matches(scope)[0] is not Match.NONE:
                    return True
    return False


class FunctionRoute(Route):
    """A function's route. A `{name:int}` beyond 64 bits matches nothing (404), like `{name:int}` given
    letters, instead of reaching the handler (or Python's 4300-digit limit on int(), in Starlette: a 500)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        try:
            match, child_scope = super().matches(scope)
        except ValueError:  # int() of more digits than Python converts
            return Match.NONE, {}
        if match is not Match.NONE:
            for value in child_scope["path_params"].values():
                if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
                    return Match.NONE, {}
        return match, child_scope


def health_routes(runtime: Runtime) -> list[Route]:
    async def health(request: Request) -> Response:
        deps = await dependencies(runtime)
        ok = all(v == "ok" for v in deps.values())
        return FastJSONResponse({"status": "ok" if ok else "unavailable", **deps}, status_code=200 if ok else 503)

    async def live(request: Request) -> Response:
        return FastJSONResponse({"status": "ok"})

    return [Route("/health", health, methods=["GET"]), Route("/health/live", live, methods=["GET"])]


def create_web_app(runtime: Runtime, *, debug: bool = False) -> ASGIApp:
    """The web process's app: every `http:` function at its route, plus /health, /health/live, /metrics and
    (unless OPENAPI=false) /openapi.json and /docs."""
    reserved: list[BaseRoute] = [*health_routes(runtime), metrics_route(runtime)]
    if runtime.settings.openapi:  # described from Endpoints built the way the functions' own are
        reserved += openapi_routes(runtime.app, {name: Endpoint(name, fn) for name, fn in runtime.app.http.items()})
    functions: list[BaseRoute] = []
    for name, fn in runtime.app.http.items():
        spec = runtime.app.manifest.functions[name].http
        assert spec is not None
        # a bound method, so Starlette calls it with a Request (an instance would be a raw ASGI app)
        endpoint = Endpoint(name, fn, debug).__call__
        functions.append(FunctionRoute(spec.path, endpoint, methods=spec.methods, name=name))
    # the router tries routes in order: the functions (the load) go first, unless one would take a reserved
    # path (a `/{slug}` matches `/health`), which must stay ours
    routes = [*functions, *reserved] if not _shadows(functions, reserved) else [*reserved, *functions]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.add_middleware(Failures, debug=debug)
    stack: ASGIApp = WebStack(app, routes, direct_routes(app, routes, functions), debug)
    # a server span per request, when OTEL_EXPORTER_OTLP_ENDPOINT is set
    if setup_tracing(runtime.app.name, "web", lambda: runtime.store.engine):
        stack = Traced(stack)
    return stack


class Traced:
    """The outermost layer when tracing: each request is a server span (runtime/tracing.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = instrument_asgi(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

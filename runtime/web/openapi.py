"""OpenAPI: `GET /openapi.json` describes the web app's functions from the same signatures that serve them,
and `GET /docs` renders it with a vendored Swagger UI (package data: no CDN, no build step)."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

import orjson
from pydantic import BaseModel, TypeAdapter
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from runtime.app.application import Application
from runtime.app.decorators import HttpFunction

DOCS = Path(__file__).parent / "static" / "docs"
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
REF = "#/components/schemas/{model}"
INT64_MAX = 2**63 - 1
PATH_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?\}")

# what Starlette's convertors let through to a handler: its regex, as a schema (an int is digits only)
CONVERTOR_SCHEMAS: dict[str, dict[str, Any]] = {
    "int": {"type": "integer", "format": "int64", "minimum": 0, "maximum": INT64_MAX},
    "float": {"type": "number", "minimum": 0},
    "uuid": {
        "type": "string",
        "format": "uuid",
        "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    },
    "path": {"type": "string"},
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error the web process answers: a one-line message, and what failed validation.",
    "properties": {
        "error": {"type": "string"},
        "detail": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": "string"}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
                "required": ["loc", "msg", "type"],
            },
        },
    },
    "required": ["error"],
}


class Signature(Protocol):
    """What the document needs of a served function: web.py's `Endpoint`, which reads it from the signature."""

    @property
    def fn(self) -> HttpFunction[..., Any]: ...
    @property
    def body_param(self) -> tuple[str, type[BaseModel]] | None: ...
    @property
    def params_model(self) -> type[BaseModel] | None: ...


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter is absent, never null: drop `null` from its `anyOf`."""
    options = [s for s in schema.get("anyOf", []) if s != {"type": "null"}]
    if not options or len(options) == len(schema.get("anyOf", [])):
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**options[0], **rest} if len(options) == 1 else {**rest, "anyOf": options}


def _return_shape(fn: HttpFunction[..., Any]) -> tuple[str, Any]:
    """The status key and body type a handler's return annotation promises (`Any`: it promises nothing)."""
    try:
        hint: Any = inspect.get_annotations(fn.fn, eval_str=True).get("return", Any)
    except Exception:  # an unresolvable annotation documents nothing rather than failing the web process
        return "2XX", Any
    status = "200"
    if typing.get_origin(hint) is tuple and typing.get_args(hint)[1:] == (int,):  # `(body, status)`
        status, hint = "2XX", typing.get_args(hint)[0]
    if hint is None or hint is type(None):
        return "204", None
    if hint is Any or (inspect.isclass(hint) and issubclass(hint, Response)):
        return "2XX", Any
    return status, hint


class _Document:
    """Builds the document: every schema goes through one pydantic call, so models share one namespace."""

    def __init__(self, app: Application, endpoints: Mapping[str, Signature]) -> None:
        self.app = app
        self.endpoints = endpoints
        self.adapters: list[tuple[tuple[str, str], Any, TypeAdapter[Any]]] = []

    def _schema(self, key: tuple[str, str], mode: str, hint: Any) -> tuple[str, str]:
        self.adapters.append((key, mode, TypeAdapter(hint)))
        return key

    def build(self) -> dict[str, Any]:
        returns: dict[str, tuple[str, Any]] = {}
        for name, endpoint in self.endpoints.items():
            if endpoint.params_model is not None:
                self._schema((name, "params"), "validation", endpoint.params_model)
            if endpoint.body_param is not None:
                self._schema((name, "body"), "validation", endpoint.body_param[1])
            returns[name] = _return_shape(endpoint.fn)
            if returns[name][1] not in (Any, None, str):
                self._schema((name, "return"), "serialization", returns[name][1])
        found, definitions = TypeAdapter.json_schemas(self.adapters, ref_template=REF) if self.adapters else ({}, {})
        schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
        by_key = {key: schema for (key, _mode), schema in found.items()}

        paths: dict[str, dict[str, Any]] = {}
        for name, endpoint in self.endpoints.items():
            spec = self.app.manifest.functions[name].http
            assert spec is not None
            path, parameters = self._parameters(spec.path, by_key.get((name, "params")), schemas)
            operation = self._operation(name, endpoint, parameters, by_key, returns[name])
            for method in spec.methods:
                op = dict(operation)
                if len(spec.methods) > 1:  # operationIds are unique in a document
                    op["operationId"] = f"{name}_{method.lower()}"
                paths.setdefault(path, {})[method.lower()] = op

        schemas["Error"] = ERROR_SCHEMA
        return {
            "openapi": "3.1.0",
            "info": {"title": self.app.name, "version": _version()},
            "paths": paths,
            "components": {"schemas": dict(sorted(schemas.items()))},
        }

    def _parameters(
        self, template: str, params: dict[str, Any] | None, schemas: dict[str, Any]
    ) -> tuple[str, list[dict[str, Any]]]:
        """The OpenAPI path (`{id:int}` → `{id}`) and its path and query parameters."""
        fields: dict[str, Any] = {}
        required: list[str] = []
        if params is not None:  # the params model is inlined: its fields are the parameters
            model = schemas.pop(params["$ref"].rsplit("/", 1)[1]) if "$ref" in params else params
            fields, required = model.get("properties", {}), model.get("required", [])
        parameters: list[dict[str, Any]] = []
        in_path = set()
        for match in PATH_PARAM.finditer(template):
            pname, convertor = match.group(1), match.group(2) or "str"
            in_path.add(pname)
            if convertor in CONVERTOR_SCHEMAS:
                schema = dict(CONVERTOR_SCHEMAS[convertor])
            else:  # `str`: anything but a slash, then validated against the handler's hint
                schema = _clean(fields.get(pname, {"type": "string"}))
                if schema.get("type") == "string" and "pattern" not in schema:
                    schema["pattern"] = "^[^/]+$"
            parameters.append({"name": pname, "in": "path", "required": True, "schema": schema})
        for pname, schema in fields.items():
            if pname not in in_path:
                parameters.append(
                    {
                        "name": pname,
                        "in": "query",
                        "required": pname in required,
                        "schema": _without_null(_clean(schema)),
                    }
                )
        return PATH_PARAM.sub(r"{\1}", template), parameters

    def _operation(
        self,
        name: str,
        endpoint: Signature,
        parameters: list[dict[str, Any]],
        by_key: dict[tuple[str, str], Any],
        shape: tuple[str, Any],
    ) -> dict[str, Any]:
        operation: dict[str, Any] = {"operationId": name, "tags": [endpoint.fn.fn.__module__.rsplit(".", 1)[-1]]}
        doc = inspect.getdoc(endpoint.fn.fn)
        if doc:
            summary, _, description = doc.partition("\n")
            operation["summary"] = summary.strip()
            if description.strip():
                operation["description"] = description.strip()
        if parameters:
            operation["parameters"] = parameters
        responses: dict[str, Any] = {}
        status, body = shape
        if body is None:
            responses[status] = {"description": "No content"}
        elif body is str:
            responses[status] = {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
        elif body is Any:
            responses[status] = {"description": "The function's answer"}
        else:
            responses[status] = _json("OK", by_key[(name, "return")])
        if endpoint.body_param is not None:
            model = endpoint.body_param[1]
            operation["requestBody"] = {
                "required": any(field.is_required() for field in model.model_fields.values()),
                "content": {"application/json": {"schema": by_key[(name, "body")]}},
            }
            responses["400"] = _error("The body is not JSON")
        if endpoint.body_param is not None or endpoint.params_model is not None:
            responses["422"] = _error("The parameters or the body do not match the function's type hints")
        responses["default"] = _error("An error: no such route or method, a failing function, a dependency down")
        operation["responses"] = responses
        return operation


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    """A field's schema as a parameter's: pydantic's generated title says nothing the name doesn't."""
    return {k: v for k, v in schema.items() if k != "title"}


def _version() -> str:
    try:
        return version("first-sip-runtime")
    except PackageNotFoundError:
        return "0.0.0"


def openapi_document(app: Application, endpoints: Mapping[str, Signature]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of an app's HTTP functions, from the endpoints that serve them."""
    return _Document(app, endpoints).build()


def openapi_routes(app: Application, endpoints: Mapping[str, Signature]) -> list[Route]:
    """`GET /openapi.json` (built once) and `GET /docs` with its two vendored assets."""
    document = orjson.dumps(openapi_document(app, endpoints))

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def docs(request: Request) -> Response:
        return FileResponse(DOCS / "index.html", media_type="text/html")

    def asset(name: str, media_type: str) -> Route:
        async def serve(request: Request) -> Response:
            return FileResponse(DOCS / name, media_type=media_type)

        return Route(f"/docs/{name}", serve, methods=["GET"])

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        *(asset(name, media_type) for name, media_type in ASSETS.items()),
    ]

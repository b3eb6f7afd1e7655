"""The dashboard's events API: `POST /api/events` sends one (`{"name": ..., "data": {...}, "id": ...}`), and
`GET /api/events` lists the recent ones with the runs each started and woke."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.app.connections import Runtime
from runtime.app.events import deliver
from runtime.dashboard.responses import RedactedJSONResponse, _error, _limit
from runtime.durable.events import Events
from runtime.errors import ArgumentsError


def event_routes(runtime: Runtime) -> list[Route]:
    async def send(request: Request) -> Response:
        try:
            body: Any = json.loads(await request.body() or b"null")
        except ValueError as exc:
            return _error(400, f"request body is not valid JSON: {exc}")
        if not isinstance(body, dict) or set(body) - {"name", "data", "id"} or "name" not in body:
            return _error(422, 'the body must be {"name": ..., "data": {...}, "id": ...} (data and id optional)')
        try:
            sent = await deliver(runtime, body["name"], body.get("data", {}), body.get("id"))
        except ArgumentsError as exc:
            return _error(422, str(exc))
        return RedactedJSONResponse(sent, status_code=202)

    async def recent(request: Request) -> Response:
        return RedactedJSONResponse(await Events(runtime.broker.redis, runtime.keys).recent(_limit(request, 50)))

    return [Route("/api/events", send, methods=["POST"]), Route("/api/events", recent, methods=["GET"])]

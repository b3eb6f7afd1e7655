"""The read-only dashboard the emulator serves while the user's app fails to load: the runs from the run
store, and the load error for everything else."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from runtime.dashboard.guards import RequestGuard
from runtime.dashboard.page import PAGE, PAGE_HEADERS, asset, favicon
from runtime.dashboard.responses import RedactedJSONResponse, _error, _limit
from runtime.store.runs import RunStore
from runtime.store.values import STATUSES
from runtime.web.errors import http_error


def create_broken_dashboard_app(
    store: RunStore, error: str, *, allowed_hosts: list[str] | None = None, app_name: str = ""
) -> Starlette:
    """The emulator's dashboard while the app's code is broken: the same page, read-only. It shows the
    error on top and the runs from the run store; every other API answers 503 with the error."""

    async def page(request: Request) -> Response:
        return FileResponse(PAGE, headers=PAGE_HEADERS)

    async def broken(request: Request) -> Response:
        return RedactedJSONResponse(
            {"error": "the app failed to load; fix it and save to reload", "detail": error, "app": app_name},
            status_code=503,
        )

    async def list_runs(request: Request) -> Response:
        try:
            offset = max(0, int(request.query_params.get("offset", 0)))
        except ValueError:
            return _error(400, "offset must be a whole number")
        status = request.query_params.get("status") or None
        runs = await store.list(
            function=request.query_params.get("function") or None,
            status=status if status in STATUSES else None,
            limit=_limit(request),
            offset=offset,
        )
        return RedactedJSONResponse([run.public() for run in runs])

    async def get_run(request: Request) -> Response:
        run = await store.get(request.path_params["run_id"])
        if run is None:
            return _error(404, f"no run with id {request.path_params['run_id']!r}")
        return RedactedJSONResponse(run.public())

    async def throughput(request: Request) -> Response:
        return RedactedJSONResponse(await store.throughput(60))

    routes = [
        Route("/", page),
        Route("/assets/{name}", asset),
        Route("/favicon.ico", favicon),
        Route("/api/runs", list_runs),
        Route("/api/runs/{run_id}", get_run, methods=["GET"]),
        Route("/api/throughput", throughput),
        Route("/{path:path}", broken, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.add_middleware(RequestGuard, allowed_hosts=allowed_hosts)
    return app

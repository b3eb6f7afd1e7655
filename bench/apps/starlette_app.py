"""Baseline: the JSON hello handler in a bare Starlette app, served by uvicorn.

uvicorn bench.apps.starlette_app:app --port P --no-access-log
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


app = Starlette(routes=[Route("/hello", hello, methods=["GET"])])

"""The web app's own layer (runtime/web/stack.py): a function at an exact path is called without Starlette's
layers, and answers as it would through them; the access log and the router's order hold on both paths."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.responses import JSONResponse

from runtime import Runtime
from runtime.settings import Settings
from runtime.web.app import create_web_app
from runtime.web.errors import FastJSONResponse
from tests.conftest import write_app

MODULE = f"stack_{uuid.uuid4().hex[:8]}"
SOURCE = """
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse
from runtime import http

@http
async def slug(slug: str):
    return {"slug": slug}

@http
async def fixed(request):
    return {
        "method": request.method,
        "url": str(request.url_for("fixed")),
        "params": request.path_params,
        "route": request.scope["route"].path,
        "app": type(request.app).__name__,
    }

@http
async def conflict(request):
    raise HTTPException(409, "that name is taken")

@http
async def gone(request):
    raise HTTPException(404)

@http
async def locked(request):
    raise HTTPException(401, "sign in first", headers={"WWW-Authenticate": "Bearer"})

@http
async def read_pair(n: int):
    return {"read": n}

@http
async def write_pair(n: int):
    return {"wrote": n}

@http
async def fails_as_sent(request):
    return FileResponse("/no/such/file")  # raises as it is sent, before its first message
"""
MANIFEST = f"""
app: stack-test
functions:
  slug: {{handler: "{MODULE}:slug", http: {{path: "/{{slug}}", methods: [GET]}}}}
  fixed: {{handler: "{MODULE}:fixed", http: {{path: /fixed, methods: [GET, POST]}}}}
  conflict: {{handler: "{MODULE}:conflict", http: {{path: /conflict, methods: [POST]}}}}
  gone: {{handler: "{MODULE}:gone", http: {{path: /gone, methods: [POST]}}}}
  locked: {{handler: "{MODULE}:locked", http: {{path: /locked, methods: [POST]}}}}
  read_pair: {{handler: "{MODULE}:read_pair", http: {{path: "/pairs/{{n:int}}", methods: [GET]}}}}
  write_pair: {{handler: "{MODULE}:write_pair", http: {{path: "/pairs/{{n:int}}", methods: [PUT]}}}}
  fails_as_sent: {{handler: "{MODULE}:fails_as_sent", http: {{path: /fails-as-sent, methods: [POST]}}}}
"""


@pytest.fixture(scope="module")
def app_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("stack"), MANIFEST, {f"{MODULE}.py": SOURCE})


@pytest.fixture
async def runtime(app_path: Path, redis_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    runtime = Runtime.from_manifest(app_path, Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/r.db"))
    await runtime.start()
    yield runtime
    await runtime.stop()


def client(runtime: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_web_app(runtime)), base_url="http://test")


async def test_a_pattern_declared_first_still_takes_an_exact_path_for_its_methods(runtime):
    async with client(runtime) as web:
        assert (await web.get("/fixed")).json() == {"slug": "fixed"}  # the router's first full match
        answer = await web.post("/fixed")
        assert answer.json() == {
            "method": "POST",
            "url": "http://test/fixed",
            "params": {},
            "route": "/fixed",
            "app": "Starlette",
        }


async def test_an_http_exception_raised_by_a_function_is_answered_as_json(runtime):
    async with client(runtime) as web:
        answer = await web.post("/conflict")
        assert (answer.status_code, answer.json()) == (409, {"error": "that name is taken"})
        answer = await web.post("/gone")
        assert (answer.status_code, answer.json()) == (404, {"error": "no function serves POST /gone"})
        answer = await web.get("/conflict/more")
        assert (answer.status_code, answer.json()) == (404, {"error": "no function serves GET /conflict/more"})
        answer = await web.get("/gone")  # the pattern's GET: a slug
        assert answer.json() == {"slug": "gone"}


async def test_a_405_names_every_method_served_at_the_path_and_an_exceptions_headers_are_kept(runtime):
    async with client(runtime) as web:
        assert (await web.put("/pairs/3")).json() == {"wrote": 3}
        answer = await web.delete("/pairs/3")
        assert (answer.status_code, answer.json()) == (405, {"error": "DELETE is not allowed on /pairs/3"})
        assert answer.headers["allow"] == "GET, HEAD, PUT"  # both functions' methods, not only the first's
        answer = await web.delete("/conflict")  # its POST, and the GET of the `/{slug}` pattern before it
        assert (answer.status_code, answer.headers["allow"]) == (405, "GET, HEAD, POST")
        answer = await web.post("/locked")
        assert (answer.status_code, answer.json()) == (401, {"error": "sign in first"})
        assert answer.headers["www-authenticate"] == "Bearer"


async def test_a_response_failing_as_it_is_sent_gets_the_json_500_and_is_logged(runtime, caplog):
    async with client(runtime) as web:
        answer = await web.post("/fails-as-sent")
    assert (answer.status_code, answer.json()) == (500, {"error": "internal error"})
    failures = [r for r in caplog.records if r.name == "runtime.http" and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == ["POST /fails-as-sent failed"]


async def test_the_access_log_has_one_line_per_request_on_either_path(runtime, caplog):
    caplog.set_level(logging.INFO, logger="runtime.access")
    async with client(runtime) as web:  # built while the access log is on
        await web.post("/fixed")
        await web.get("/anything")
        await web.delete("/nowhere/at/all")
    lines = [r for r in caplog.records if r.name == "runtime.access"]
    assert [(r.method, r.path, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("POST", "/fixed", 200),
        ("GET", "/anything", 200),
        ("DELETE", "/nowhere/at/all", 404),
    ]
    assert all(r.getMessage().startswith(f"{r.method} {r.path} {r.status} ") for r in lines)  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [200, 201, 204, 304, 404, 503])
def test_a_json_answer_has_the_headers_starlette_would_give_it(status):
    content = {"hello": "wörld", "n": [1, 2]}
    ours = FastJSONResponse(content, status_code=status)
    theirs = JSONResponse(content, status_code=status)
    assert (ours.status_code, ours.raw_headers, ours.body) == (theirs.status_code, theirs.raw_headers, theirs.body)
    assert ours.body == orjson.dumps(content)
    ours.headers["Retry-After"] = "1"
    assert ours.raw_headers[-1] == (b"retry-after", b"1")
    headed = FastJSONResponse(content, headers={"X-One": "1"})
    assert headed.raw_headers == JSONResponse(content, headers={"X-One": "1"}).raw_headers


def test_a_subclass_rendering_its_own_way_is_still_rendered_its_way():
    from runtime.dashboard.responses import RedactedJSONResponse

    answer = RedactedJSONResponse({"url": "redis://user:hunter2@host:6379/0"})
    assert b"hunter2" not in answer.body and answer.raw_headers[0] == (b"content-length", b"%d" % len(answer.body))

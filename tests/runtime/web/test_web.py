"""The web app's parameter binding and results, in process (Starlette's TestClient, a real Redis)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from runtime import Runtime
from runtime.settings import Settings
from runtime.web.app import create_web_app
from tests.conftest import free_port, write_app

MODULE = f"web_{uuid.uuid4().hex[:8]}"
SOURCE = """
from typing import Any
from pydantic import BaseModel
from starlette.responses import PlainTextResponse
from runtime import http

class Item(BaseModel):
    name: str
    qty: int = 1

@http
async def untyped(request):
    return {"path": request.url.path}

@http
async def any_typed(request: Any):
    return {"method": request.method}

@http
async def typed(item_id: int, verbose: bool = False):
    return {"item_id": item_id, "verbose": verbose}

@http
async def create(item: Item):
    return item, 201

@http
def sync_handler(request):
    return [1, 2, 3]

@http
async def raw(request):
    return PlainTextResponse("plain")

@http
async def empty(request):
    return None

@http
async def broken(request):
    raise RuntimeError("kaboom")

@http
async def reads_json(request):
    return await request.json()

@http
async def unserializable(request):
    return {"when": object()}

@http
def sync_unserializable(request):
    return [object()]

@http
async def by_id(item_id: int):
    return {"item_id": item_id}

@http
async def redis_down(port: int):
    import redis.asyncio
    async with redis.asyncio.Redis(port=port, socket_connect_timeout=1) as client:
        await client.ping()

@http
async def database_down(path: str):
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.connect() as connection:
            await connection.execute(text("select 1"))
    finally:
        await engine.dispose()
"""
MANIFEST = f"""
app: web-test
functions:
  untyped: {{handler: "{MODULE}:untyped", http: {{path: /untyped}}}}
  any_typed: {{handler: "{MODULE}:any_typed", http: {{path: /any}}}}
  typed: {{handler: "{MODULE}:typed", http: {{path: "/items/{{item_id}}"}}}}
  create: {{handler: "{MODULE}:create", http: {{path: /items, methods: [POST]}}}}
  sync_handler: {{handler: "{MODULE}:sync_handler", http: {{path: /sync}}}}
  raw: {{handler: "{MODULE}:raw", http: {{path: /raw}}}}
  empty: {{handler: "{MODULE}:empty", http: {{path: /empty, methods: [DELETE]}}}}
  broken: {{handler: "{MODULE}:broken", http: {{path: /broken}}}}
  reads_json: {{handler: "{MODULE}:reads_json", http: {{path: /json, methods: [POST]}}}}
  unserializable: {{handler: "{MODULE}:unserializable", http: {{path: /unserializable}}}}
  sync_unserializable: {{handler: "{MODULE}:sync_unserializable", http: {{path: /sync-unserializable}}}}
  by_id: {{handler: "{MODULE}:by_id", http: {{path: "/by-id/{{item_id:int}}"}}}}
  redis_down: {{handler: "{MODULE}:redis_down", http: {{path: /redis-down}}}}
  database_down: {{handler: "{MODULE}:database_down", http: {{path: /database-down}}}}
"""


@pytest.fixture(scope="module")
def app_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("web"), MANIFEST, {f"{MODULE}.py": SOURCE})


@pytest.fixture
async def client(app_path: Path, redis_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime.from_manifest(app_path, Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/r.db"))
    await runtime.start()
    transport = httpx.ASGITransport(app=create_web_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
    await runtime.stop()


async def test_request_is_passed_by_name_or_annotation(client):
    assert (await client.get("/untyped")).json() == {"path": "/untyped"}
    assert (await client.get("/any")).json() == {"method": "GET"}


async def test_path_and_query_parameters_are_validated_by_type_hints(client):
    assert (await client.get("/items/7?verbose=true")).json() == {"item_id": 7, "verbose": True}
    response = await client.get("/items/seven")
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["item_id"]


async def test_a_body_model_is_parsed_and_models_are_returned_as_json(client):
    response = await client.post("/items", json={"name": "cup"})
    assert (response.status_code, response.json()) == (201, {"name": "cup", "qty": 1})
    assert (await client.post("/items", content=b"{nope")).status_code == 400
    bad = await client.post("/items", json={"qty": "many"})
    assert bad.status_code == 422 and {tuple(d["loc"]) for d in bad.json()["detail"]} == {("name",), ("qty",)}


async def test_results_become_responses(client):
    assert (await client.get("/sync")).json() == [1, 2, 3]
    assert (await client.get("/raw")).text == "plain"
    assert (await client.delete("/empty")).status_code == 204


async def test_a_handler_that_raises_is_a_json_500_and_bad_json_read_by_the_handler_is_400(client):
    response = await client.get("/broken")
    assert (response.status_code, response.json()) == (500, {"error": "internal error"})
    response = await client.post("/json", content=b"{not json")
    assert response.status_code == 400 and response.json()["error"].startswith("request body is not valid JSON")


@pytest.mark.parametrize("path", ["/unserializable", "/sync-unserializable"])
async def test_a_result_that_cannot_be_sent_is_a_json_500_logged_once_with_its_traceback(client, caplog, path):
    with caplog.at_level(logging.ERROR):
        response = await client.get(path)
    assert (response.status_code, response.json()) == (500, {"error": "internal error"})
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "cannot be sent as JSON" in errors[0].getMessage() and "object" in str(errors[0].exc_info[1])


async def test_a_path_parameter_out_of_the_64_bit_range_is_404_or_422_never_500(client):
    for path in ("/by-id/9223372036854775808", "/by-id/" + "9" * 5000):
        response = await client.get(path)
        assert response.status_code == 404 and "no function serves GET" in response.json()["error"], path
    assert (await client.get("/by-id/9223372036854775807")).json() == {"item_id": 9223372036854775807}
    for value in ("9223372036854775808", "-9223372036854775809", "9" * 5000):
        response = await client.get(f"/items/{value}")
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["item_id"], value
    response = await client.get("/items/1?verbose=true&item_id=99999999999999999999")
    assert response.status_code in (200, 422)


async def test_redis_or_the_database_being_down_is_a_503_with_retry_after(client, tmp_path: Path):
    response = await client.get(f"/redis-down?port={free_port()}")
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["error"].startswith("Redis is unavailable")
    response = await client.get("/database-down", params={"path": str(tmp_path / "no" / "such" / "dir.db")})
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["error"].startswith("the database is unavailable")


@pytest.mark.parametrize("catch_all", [True, False])
async def test_a_catch_all_route_never_takes_the_reserved_paths(
    tmp_path: Path, redis_url: str, catch_all: bool
) -> None:
    """Function routes are tried first (they are the load), except when one would match a reserved path
    (`/{slug}` matches `/health`): then /health, /metrics, /openapi.json and /docs stay ours."""
    module = f"slug_{uuid.uuid4().hex[:8]}"
    path = "/{slug}" if catch_all else "/pages/{slug}"
    source = "from runtime import http\n@http\nasync def page(slug: str):\n    return {'page': slug}\n"
    manifest = f'app: slug-test\nfunctions:\n  page: {{handler: "{module}:page", http: {{path: "{path}"}}}}\n'
    app_path = write_app(tmp_path, manifest, {f"{module}.py": source})
    runtime = Runtime.from_manifest(app_path, Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/r.db"))
    await runtime.start()
    try:
        transport = httpx.ASGITransport(app=create_web_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/health")).json()["status"] == "ok"
            assert (await client.get("/metrics")).text.startswith("#")
            assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.1")
            page = "/about" if catch_all else "/pages/about"
            assert (await client.get(page)).json() == {"page": "about"}
    finally:
        await runtime.stop()

"""DATABASE_URL as the run store reads it without SQLAlchemy (runtime/store/database_url.py) is what SQLAlchemy's
`make_url` and its asyncpg dialect make of it."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from runtime.store import database_url

URLS = [
    "postgresql+asyncpg://postgres@127.0.0.1/runs",
    "postgresql+asyncpg://app:s%40cr%3At@db.example.com:6543/my%20runs",
    "postgresql+asyncpg://app:@db/runs?ssl=require&prepared_statement_cache_size=0",
    "postgresql+asyncpg://app@[::1]:5432/runs",
    "postgresql+asyncpg://app@/runs?server_settings=x",
    "postgresql+asyncpg://localhost",
    "sqlite+aiosqlite:///runs.db",
    "sqlite+aiosqlite:////abs/path/runs.db",
    "sqlite+aiosqlite:///:memory:",
    "sqlite:///file:runs?mode=memory&uri=true",
]


@pytest.mark.parametrize("url", URLS)
def test_a_url_reads_as_sqlalchemy_reads_it(url: str) -> None:
    ours, theirs = database_url.parse(url), make_url(url)
    assert ours is not None
    assert (ours.backend, ours.driver or None) == (
        theirs.get_backend_name(),
        theirs.drivername.partition("+")[2] or None,
    )
    assert (ours.username, ours.password, ours.host, ours.port, ours.database) == (
        theirs.username,
        theirs.password,
        theirs.host,
        theirs.port,
        theirs.database,
    )
    assert ours.query == dict(theirs.query)


@pytest.mark.parametrize("url", [u for u in URLS if "asyncpg" in u])
def test_asyncpg_gets_the_arguments_sqlalchemys_dialect_gives_it(url: str) -> None:
    engine = create_async_engine(url)
    _, theirs = engine.dialect.create_connect_args(engine.url)
    parsed = database_url.parse(url)
    assert parsed is not None
    assert database_url.asyncpg_connect_args(parsed) == theirs


def test_several_hosts_are_left_to_sqlalchemy() -> None:
    parsed = database_url.parse("postgresql+asyncpg://app@/runs?host=a:5432&host=b:5433")
    assert parsed is not None
    assert database_url.asyncpg_connect_args(parsed) is None

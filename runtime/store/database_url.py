"""DATABASE_URL read as SQLAlchemy's `make_url` reads it, without importing SQLAlchemy: a worker opens its drivers
(sqlite3, asyncpg) with what the URL says, and makes the engine only where something needs it.
tests/runtime/store/test_database_url.py checks the two readings agree."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from runtime.errors import ConfigError

# SQLAlchemy's own pattern (sqlalchemy/engine/url.py, _parse_url)
_PATTERN = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)


@dataclass(frozen=True)
class DatabaseUrl:
    backend: str  # "sqlite", "postgresql"
    driver: str  # "aiosqlite", "asyncpg", "" (SQLAlchemy's default for the backend)
    username: str | None
    password: str | None
    host: str | None
    port: int | None
    database: str | None
    query: dict[str, str | list[str]]


def parse(url: str) -> DatabaseUrl | None:
    """The URL's parts, or None where SQLAlchemy's reading is needed (a URL it would refuse)."""
    match = _PATTERN.match(url)
    if match is None:
        return None
    parts = match.groupdict()
    query: dict[str, str | list[str]] = {}
    for key, value in parse_qsl(parts["query"] or ""):
        if key in query:
            earlier = query[key]
            query[key] = [*earlier, value] if isinstance(earlier, list) else [earlier, value]
        else:
            query[key] = value
    backend, _, driver = parts["name"].partition("+")
    try:
        port = int(parts["port"]) if parts["port"] else None
    except ValueError:
        return None
    return DatabaseUrl(
        backend=backend,
        driver=driver,
        username=None if parts["username"] is None else unquote(parts["username"]),
        password=None if parts["password"] is None else unquote(parts["password"]),
        host=parts["ipv4host"] or parts["ipv6host"],
        port=port,
        database=None if parts["database"] is None else unquote(parts["database"]),
        query=query,
    )


def asyncpg_connect_args(url: DatabaseUrl) -> dict[str, Any] | None:
    """asyncpg.connect's arguments for this URL, as SQLAlchemy's asyncpg dialect makes them (create_connect_args);
    None for a URL with several hosts (SQLAlchemy's reading)."""
    if "host" in url.query or any(isinstance(value, list) for value in url.query.values()):
        return None
    args: dict[str, Any] = {}
    for name, value in (
        ("host", url.host),
        ("database", url.database),
        ("user", url.username),
        ("password", url.password),
        ("port", url.port),
    ):
        if value:
            args[name] = value
    args |= url.query
    if "prepared_statement_cache_size" in args:
        args["prepared_statement_cache_size"] = int(args["prepared_statement_cache_size"])
    if "port" in args:
        args["port"] = int(args["port"])
    return args


def sqlite_file(url: DatabaseUrl | None) -> str | None:
    """The file a SQLite URL names, as `sqlite3` itself opens it; None for another database, one in memory, or a
    `file:` URI (left to SQLAlchemy's driver)."""
    if url is None or url.backend != "sqlite" or not url.database:
        return None
    if url.database == ":memory:" or url.database.startswith("file:"):
        return None
    return url.database


def check_sqlite_folder(path: str) -> None:
    """A SQLite file's folder must exist: a typo creates nothing, it is said (ConfigError)."""
    folder = Path(path).absolute().parent
    if not folder.is_dir():
        raise ConfigError(f"DATABASE_URL points into {folder}, which does not exist; create the folder first")

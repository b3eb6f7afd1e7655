"""An empty SQLite run store created at the head revision by `sqlite3` alone, so that `emulator up` answers its first
request without importing SQLAlchemy, SQLModel or Alembic (~0.3 s of its start). The statements are what
`create_at_head` makes through SQLAlchemy (runtime/store/schema.py: the models' `create_all`, the counting triggers,
the stamp): tests/runtime/store/test_sqlite_schema.py checks the two schemas are the same, object by object. An
older schema is left to Alembic (runtime/store/migrations)."""

from __future__ import annotations

import sqlite3

from runtime.store import database_url
from runtime.store.counting import COUNT_TRIGGERS
from runtime.store.revision import FOUND_TABLES, SCHEMA_HEAD, SCHEMA_REVISIONS, VERSIONS, revision_of


def _table(name: str, *lines: str) -> str:
    """CREATE TABLE as SQLAlchemy's create_all words it (sqlite_master keeps the text as written)."""
    return f"CREATE TABLE {name} (\n\t" + ", \n\t".join(lines) + "\n)"


# the `runs`, `run_arguments`, `run_counts` and `steps` tables and their indexes, in create_all's order
TABLES = (
    _table(
        "runs",
        "id VARCHAR(32) NOT NULL",
        "function VARCHAR(200) NOT NULL",
        "arguments JSON NOT NULL",
        "status VARCHAR(16) NOT NULL",
        "attempts INTEGER NOT NULL",
        "max_attempts INTEGER NOT NULL",
        "last_error TEXT",
        "enqueued_at DATETIME NOT NULL",
        "scheduled_for DATETIME",
        "started_at DATETIME",
        "finished_at DATETIME",
        "result JSON",
        "history JSON NOT NULL",
        "replay_of VARCHAR(32)",
        "version BIGINT NOT NULL",
        "queue VARCHAR(64) DEFAULT 'default' NOT NULL",
        "error_type VARCHAR(200)",
        "trace_id VARCHAR(32)",
        "deadline DATETIME",
        "idempotency_key VARCHAR(200)",
        "waiting_for TEXT",
        "parent VARCHAR(32)",
        "PRIMARY KEY (id)",
    ),
    "CREATE INDEX ix_runs_idempotency_key ON runs (idempotency_key)",
    "CREATE INDEX ix_runs_status_enqueued_at_id ON runs (status, enqueued_at, id)",
    "CREATE INDEX ix_runs_enqueued_at ON runs (enqueued_at)",
    "CREATE INDEX ix_runs_finished_at ON runs (finished_at)",
    "CREATE INDEX ix_runs_function_enqueued_at_id ON runs (function, enqueued_at, id)",
    _table("run_arguments", "run_id VARCHAR(32) NOT NULL", "arguments JSON NOT NULL", "PRIMARY KEY (run_id)"),
    _table(
        "run_counts",
        "id INTEGER NOT NULL",
        "function VARCHAR(200) NOT NULL",
        "status VARCHAR(16) NOT NULL",
        "n BIGINT NOT NULL",
        "PRIMARY KEY (id)",
    ),
    _table(
        "steps",
        "run_id VARCHAR(32) NOT NULL",
        "name VARCHAR(220) NOT NULL",
        "status VARCHAR(16) NOT NULL",
        "result TEXT",
        "error_type VARCHAR(200)",
        "error TEXT",
        "attempts INTEGER NOT NULL",
        "started_at DATETIME NOT NULL",
        "finished_at DATETIME NOT NULL",
        "PRIMARY KEY (run_id, name)",
    ),
)
# Alembic's own table (runtime/store/schema.py ALEMBIC_VERSION), made by the stamp after the triggers
ALEMBIC_VERSION = _table(
    "alembic_version", "version_num VARCHAR(32) NOT NULL", "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)"
)
HEAD = (*TABLES, *COUNT_TRIGGERS["sqlite"], ALEMBIC_VERSION)


def prepare_url(url: str) -> tuple[str | None, str] | None:
    """`prepare` for the store at DATABASE_URL `url` when it is a SQLite file; None otherwise, and when Alembic or
    SQLAlchemy must do it."""
    parsed = database_url.parse(url)
    path = database_url.sqlite_file(parsed)
    if path is None or parsed is None or parsed.query:
        return None
    database_url.check_sqlite_folder(path)
    return prepare(path)


def prepare(path: str) -> tuple[str | None, str] | None:
    """The run store at `path`, created at the head revision if the database is empty, in one transaction that holds
    the write lock (concurrent creators take turns, as `create_at_head`'s do): (None, head). A store already at the
    head, or at a revision this code does not know (a newer runtime's), is left as it is: (revision, revision). None
    when Alembic or SQLAlchemy must do it: an older schema, or a database with other tables and no `runs`. Raises
    sqlite3.Error when the database cannot be used."""
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")  # as every connection of the store sets it (runs.py _sqlite_pragmas)
        conn.execute("BEGIN IMMEDIATE")
        tables = {name for (name,) in conn.execute(FOUND_TABLES["sqlite"])}
        versions = [version for (version,) in conn.execute(VERSIONS)] if "alembic_version" in tables else []
        revision = revision_of(tables, versions)
        (objects,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if revision is None and objects == 0:
            for statement in HEAD:
                conn.execute(statement)
            conn.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (SCHEMA_HEAD,))
        conn.execute("COMMIT")
    finally:
        conn.close()  # without COMMIT: rolled back
    if revision is None:
        return (None, SCHEMA_HEAD) if objects == 0 else None
    return None if revision in SCHEMA_REVISIONS[:-1] else (revision, revision)

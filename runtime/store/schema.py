"""The run store's schema revision: read, checked, locked and stamped with plain SQLAlchemy (no Alembic),
and an empty database created at the head revision."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    insert,
    inspect,
    select,
    text,
)

from runtime.errors import ConfigError
from runtime.store.counting import count_runs_from_now_on

# Alembic migrations (runtime/store/migrations/versions/) change the schema; a process only reads the revision
# a database is at, with plain SQLAlchemy, so starting up never imports Alembic.

# oldest first; a test checks them against runtime/store/migrations/versions
SCHEMA_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007")
SCHEMA_HEAD = SCHEMA_REVISIONS[-1]
SCHEMA_BASELINE = SCHEMA_REVISIONS[0]  # what 0.1.0 created, before there was an alembic_version table
_SCHEMA_LOCK = 0x72756E73  # pg_advisory_xact_lock key ("runs"): one process at a time creates or upgrades

# Alembic's own bookkeeping table, as Alembic creates it
ALEMBIC_VERSION = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def stored_revision(conn: Connection) -> str | None:
    """The revision the run store is at: None in an empty database (no `runs` table), the baseline for
    a 0.1.0 database (a `runs` table and no alembic_version), else what alembic_version records."""
    tables = set(inspect(conn).get_table_names())
    if "runs" not in tables:
        return None
    if ALEMBIC_VERSION.name not in tables:
        return SCHEMA_BASELINE
    versions = conn.execute(select(ALEMBIC_VERSION.c.version_num)).scalars().all()
    return versions[0] if len(versions) == 1 else SCHEMA_BASELINE


def check_revision(revision: str) -> None:
    """An older schema is a ConfigError (this code would fail on it); the head, or a revision this code does
    not know (a newer runtime upgraded it; migrations only add), is fine."""
    if revision != SCHEMA_HEAD and revision in SCHEMA_REVISIONS:
        raise ConfigError(
            f"the run store's schema is at {revision}, this runtime needs {SCHEMA_HEAD}: run `runtime db upgrade`"
        )


def lock_schema(conn: Connection) -> None:
    """Hold the schema until this transaction ends, so concurrent creators and upgraders take turns.
    Must come first in the transaction (SQLite's BEGIN IMMEDIATE opens it and takes the write lock)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})


def stamp(conn: Connection, revision: str) -> None:
    """Record the revision the schema is at, as Alembic does."""
    ALEMBIC_VERSION.create(conn, checkfirst=True)
    conn.execute(delete(ALEMBIC_VERSION))
    conn.execute(insert(ALEMBIC_VERSION).values(version_num=revision))


def create_at_head(conn: Connection) -> str | None:
    """In an empty database, create the run store at the head revision (and the app's tables); returns the
    revision found once the lock was held (None: it was empty and is now at the head)."""
    lock_schema(conn)
    revision = stored_revision(conn)  # another process may have created it while this one waited
    if revision is None:
        from sqlmodel import SQLModel

        import runtime.store.models  # noqa: F401  (registers the run store's tables: create_all creates them)

        SQLModel.metadata.create_all(conn)
        count_runs_from_now_on(conn)
        stamp(conn, SCHEMA_HEAD)
    return revision

"""The run store's schema revision: read, locked and stamped with plain SQLAlchemy (no Alembic), and an empty
database created at the head revision."""

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

from runtime.store.counting import count_runs_from_now_on
from runtime.store.revision import SCHEMA_BASELINE, SCHEMA_HEAD, SCHEMA_REVISIONS, check_revision, revision_of

__all__ = ["SCHEMA_BASELINE", "SCHEMA_HEAD", "SCHEMA_REVISIONS", "check_revision", "create_at_head", "stored_revision"]

# Alembic migrations (runtime/store/migrations/versions/) change the schema; a process only reads the revision
# a database is at (runtime/store/revision.py, with the driver; here with SQLAlchemy), so starting up never imports
# Alembic.

_SCHEMA_LOCK = 0x72756E73  # pg_advisory_xact_lock key ("runs"): one process at a time creates or upgrades

# Alembic's own bookkeeping table, as Alembic creates it
ALEMBIC_VERSION = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def stored_revision(conn: Connection) -> str | None:
    """The revision the run store is at (see runtime/store/revision.py's revision_of), read through SQLAlchemy."""
    tables = set(inspect(conn).get_table_names())
    versions: list[str] = []
    if ALEMBIC_VERSION.name in tables:
        versions = list(conn.execute(select(ALEMBIC_VERSION.c.version_num)).scalars())
    return revision_of(tables, versions)


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

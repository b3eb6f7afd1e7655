"""The run store's schema revisions, and the revision a database is at, read with the driver itself (sqlite3 or
asyncpg): a worker checks its database before its first task without importing SQLAlchemy. Creating, locking and
stamping the schema is runtime/store/schema.py's, with SQLAlchemy."""

from __future__ import annotations

from runtime.errors import ConfigError

# oldest first; a test checks them against runtime/store/migrations/versions
SCHEMA_REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008")
SCHEMA_HEAD = SCHEMA_REVISIONS[-1]
SCHEMA_BASELINE = SCHEMA_REVISIONS[0]  # what 0.1.0 created, before there was an alembic_version table

# the tables of `runs` and `alembic_version` that exist, as SQLAlchemy's inspector lists them (the default schema)
FOUND_TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('runs', 'alembic_version')",
    "postgresql": "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'p')"
    " AND pg_catalog.pg_table_is_visible(c.oid) AND c.relname IN ('runs', 'alembic_version')",
}
VERSIONS = "SELECT version_num FROM alembic_version"


def revision_of(tables: set[str], versions: list[str]) -> str | None:
    """The revision the run store is at, from the tables found and alembic_version's rows: None in an empty
    database (no `runs` table), the baseline for a 0.1.0 database (a `runs` table and no alembic_version), else
    what alembic_version records."""
    if "runs" not in tables:
        return None
    if "alembic_version" not in tables:
        return SCHEMA_BASELINE
    return versions[0] if len(versions) == 1 else SCHEMA_BASELINE


def check_revision(revision: str) -> None:
    """An older schema is a ConfigError (this code would fail on it); the head, or a revision this code does
    not know (a newer runtime upgraded it; migrations only add), is fine."""
    if revision != SCHEMA_HEAD and revision in SCHEMA_REVISIONS:
        raise ConfigError(
            f"the run store's schema is at {revision}, this runtime needs {SCHEMA_HEAD}: run `runtime db upgrade`"
        )

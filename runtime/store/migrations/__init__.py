"""The run store's schema migrations (Alembic, configured here in code: no alembic.ini), run by
`runtime db upgrade` and by the emulator before it starts. Processes never import Alembic: they only
compare the database's revision with `runtime.store.schema.SCHEMA_HEAD`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from runtime.store.runs import RunStore
from runtime.store.schema import SCHEMA_BASELINE, SCHEMA_REVISIONS, create_at_head, lock_schema, stamp, stored_revision

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPTS = Path(__file__).resolve().parent


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the run store; with a connection, env.py migrates on it."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    return config


async def upgrade(url: str) -> tuple[str | None, str]:
    """Bring the run store at `url` to the head revision; returns (from, to), from None for an empty
    database (created at the head, as a process would). Alembic is imported only when there is something
    to migrate. Safe to run again, and from several places at once."""
    store = RunStore(url)
    try:
        async with store.engine.connect() as conn:
            before = await conn.run_sync(stored_revision)
        if before is None:
            async with store.engine.begin() as conn:
                before = await conn.run_sync(create_at_head)
        if before in SCHEMA_REVISIONS[:-1]:  # older than the head (a newer, unknown one is left alone)
            async with store.engine.begin() as conn:
                before = await conn.run_sync(_migrate)
        async with store.engine.connect() as conn:
            after = await conn.run_sync(stored_revision)
    finally:
        await store.close()
    assert after is not None
    return before, after


def _migrate(conn: Connection) -> str | None:
    from alembic import command

    lock_schema(conn)
    before = stored_revision(conn)  # again, now that no one else is upgrading
    if before == SCHEMA_BASELINE:
        stamp(conn, SCHEMA_BASELINE)  # a 0.1.0 database: its runs table is the baseline, unrecorded
    command.upgrade(alembic_config(conn), "head")
    return before

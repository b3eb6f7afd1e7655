"""Alembic's entry point for the run store: migrates on the connection `runtime.migrations` hands it."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the run store's migrations with `runtime db upgrade`, not the alembic command")
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()

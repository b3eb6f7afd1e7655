"""Alembic revisions of the run store, oldest first; Alembic loads them by path."""

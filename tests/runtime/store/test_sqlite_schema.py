"""A new SQLite run store made by `sqlite3` alone (runtime/store/sqlite_schema.py) is the schema SQLAlchemy and the
counting triggers make at the head revision, object by object; it leaves a store at the head alone and an older
one to Alembic; and the emulator's supervisor prepares its store without importing SQLAlchemy, SQLModel or Alembic."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.errors import ConfigError
from runtime.store.migrations import upgrade
from runtime.store.revision import SCHEMA_HEAD
from runtime.store.sqlite_schema import prepare, prepare_url
from tests.runtime.store.test_migrations import create_0_1_0


def objects(path: Path) -> tuple[list[tuple[str, str, str, str | None]], list[str], str]:
    """Every schema object (type, name, table, SQL), the recorded revisions, and the journal mode."""
    with sqlite3.connect(path) as conn:
        found = sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
        versions = [version for (version,) in conn.execute("SELECT version_num FROM alembic_version")]
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    conn.close()
    return found, versions, mode


def test_a_new_store_is_the_schema_sqlalchemy_makes_at_the_head(tmp_path: Path) -> None:
    assert asyncio.run(upgrade(f"sqlite+aiosqlite:///{tmp_path / 'by_sqlalchemy.db'}")) == (None, SCHEMA_HEAD)
    assert prepare(str(tmp_path / "by_sqlite3.db")) == (None, SCHEMA_HEAD)
    made, expected = objects(tmp_path / "by_sqlite3.db"), objects(tmp_path / "by_sqlalchemy.db")
    assert made == expected
    assert made[1] == [SCHEMA_HEAD] and made[2] == "wal"


def test_a_store_at_the_head_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    assert prepare(str(path)) == (None, SCHEMA_HEAD)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO run_counts (function, status, n) VALUES ('f', 'queued', 3)")
    conn.close()
    assert prepare(str(path)) == (SCHEMA_HEAD, SCHEMA_HEAD)
    assert prepare_url(f"sqlite+aiosqlite:///{path}") == (SCHEMA_HEAD, SCHEMA_HEAD)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT function, status, n FROM run_counts").fetchall() == [("f", "queued", 3)]
    conn.close()


def test_an_older_store_or_a_database_with_other_tables_is_left_to_alembic(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    create_0_1_0(f"sqlite:///{old}")
    before = objects_without_versions(old)
    assert prepare(str(old)) is None
    assert objects_without_versions(old) == before  # untouched: Alembic upgrades it
    assert asyncio.run(upgrade(f"sqlite+aiosqlite:///{old}")) == ("0001", SCHEMA_HEAD)

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    conn.close()
    assert prepare(str(other)) is None
    with sqlite3.connect(other) as conn:
        assert [name for (name,) in conn.execute("SELECT name FROM sqlite_master")] == ["notes"]
    conn.close()


def objects_without_versions(path: Path) -> list[tuple[str, str, str, str | None]]:
    with sqlite3.connect(path) as conn:
        found = sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
    conn.close()
    return found


def test_only_a_sqlite_file_is_prepared_here(tmp_path: Path) -> None:
    assert prepare_url("postgresql+asyncpg://postgres@127.0.0.1/nowhere") is None
    assert prepare_url("sqlite+aiosqlite:///:memory:") is None
    assert prepare_url(f"sqlite+aiosqlite:///file:{tmp_path}/runs.db?mode=rwc&uri=true") is None
    assert not list(tmp_path.iterdir())


def test_the_emulators_supervisor_prepares_its_store_without_sqlalchemy(tmp_path: Path) -> None:
    """The supervisor (and the first generation, which it forks) get to `ready` with neither SQLAlchemy, SQLModel
    nor Alembic imported: ~0.3 s of `emulator up`."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from emulator.supervisor import Emulator\n"
        "from runtime.settings import Settings\n"
        f"emulator = Emulator(Path({str(tmp_path / 'manifest.yaml')!r}), '127.0.0.1', 0, 0, False, 0.0)\n"
        f"emulator._upgrade_run_store(Settings(database_url={'sqlite:///' + str(tmp_path / 'runs.db')!r}))\n"
        "loaded = sorted({name.split('.')[0] for name in sys.modules} & {'sqlalchemy', 'sqlmodel', 'alembic'})\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, cwd=tmp_path)
    assert objects(tmp_path / "runs.db")[1] == [SCHEMA_HEAD]


def test_a_store_in_a_folder_that_does_not_exist_is_named_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"DATABASE_URL points into .*/missing, which does not exist"):
        prepare_url(f"sqlite+aiosqlite:///{tmp_path}/missing/runs.db")
    assert not list(tmp_path.iterdir())

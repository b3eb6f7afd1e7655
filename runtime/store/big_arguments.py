"""Big arguments: a run's arguments over BIG_ARGUMENTS characters are kept in `run_arguments` (written once), not in
its `runs` row, so the rows the lists and counts read stay small."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from runtime.store.sqlite_insert import SqliteInsert
from runtime.store.values import to_jsonable

if TYPE_CHECKING:
    from runtime.store.postgres_insert import PostgresInsert

BIG_ARGUMENTS = 16_384  # characters: arguments this big are kept in `run_arguments`, not in the run's row


def is_big(arguments: Any) -> bool:
    """Whether a run's arguments are big enough to be kept out of its row."""
    if not arguments:
        return False
    if isinstance(arguments, dict):  # the common case, flat, is decided without encoding
        size = 0
        for value in arguments.values():
            if isinstance(value, str):
                size += len(value)
            elif not isinstance(value, int | float | bool | None):
                break
        else:
            return size > BIG_ARGUMENTS
    return len(json_dumps(arguments)) > BIG_ARGUMENTS


def split_big(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows with big arguments moved out (their `arguments` made `{}`), and the moved arguments as
    `run_arguments` rows."""
    side: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for row in rows:
        if is_big(row.get("arguments")):
            side.append({"run_id": row["id"], "arguments": row["arguments"]})
            row = row | {"arguments": {}}
        out.append(row)
    return out, side


def json_dumps(value: Any) -> str:
    return orjson.dumps(value, default=to_jsonable).decode()


KNOWN = "SELECT run_id FROM run_arguments WHERE run_id IN ({})"
INSERT = "INSERT INTO run_arguments (run_id, arguments) VALUES ({}) ON CONFLICT (run_id) DO NOTHING"


async def write_new(fast: SqliteInsert | PostgresInsert, side: list[dict[str, Any]]) -> None:
    """The `run_arguments` rows of runs whose arguments are not stored yet (the worker recorded them before their
    enqueue did), by the store's driver: a worker writing big arguments needs no SQLAlchemy engine. Each run's are
    written once; the known ones are not sent again (a 1 MB document)."""
    ids = [row["run_id"] for row in side]
    if isinstance(fast, SqliteInsert):
        found = await fast.read(KNOWN.format(",".join("?" * len(ids))), tuple(ids))
        known = {run_id for (run_id,) in found}
        new = [(row["run_id"], json_dumps(row["arguments"])) for row in side if row["run_id"] not in known]
        if new:
            await fast.write(INSERT.format("?, ?"), new)
        return

    async def work(conn: Any) -> None:
        found = await conn.fetch(KNOWN.format("SELECT unnest($1::varchar[])"), ids)
        known = {row[0] for row in found}
        new = [(row["run_id"], json_dumps(row["arguments"])) for row in side if row["run_id"] not in known]
        if new:
            await conn.executemany(INSERT.format("$1, $2::json"), new)

    await fast.transact(work, KNOWN)

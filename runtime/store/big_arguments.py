"""Big arguments: a run's arguments over BIG_ARGUMENTS characters are kept in `run_arguments` (written once), not in
its `runs` row, so the rows the lists and counts read stay small."""

from __future__ import annotations

from typing import Any

import orjson

from runtime.store.values import to_jsonable

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

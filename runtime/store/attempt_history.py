"""A run's attempts (`history`) are appended in the database, one entry per worker update, never carried by the
run's message: a retried or sleeping run's message stays small however often it ran or slept.

An update row's `history` holds the entry its attempt adds (none while it runs, one when it ends or suspends).
The upsert appends it to the stored list; an entry of the same attempt that started at the same time (the one
the worker recorded before it died, or a flush written twice) is replaced, so each attempt is listed once.
Until an attempt ends the run keeps its last error and its first start.
"""

from __future__ import annotations

from typing import Any

# SQLite: JSON is text; json_remove with the path of a same-attempt entry (none: NULL, kept as is), then append
_SQLITE_SAME = (
    "(SELECT '$[' || key || ']' FROM json_each(runs.history)"
    " WHERE json_extract(value, '$.attempt') IS json_extract(excluded.history, '$[0].attempt')"
    " AND json_extract(value, '$.started_at') IS json_extract(excluded.history, '$[0].started_at') LIMIT 1)"
)
_SQLITE_APPEND = (
    "CASE WHEN json_array_length(excluded.history) = 0 THEN runs.history"
    f" ELSE json_insert(COALESCE(json_remove(runs.history, {_SQLITE_SAME}), runs.history),"
    " '$[#]', json(json_extract(excluded.history, '$[0]'))) END"
)
# Postgres: the column is `json`, and `->`, `->>` or a cast to jsonb refuse an entry whose error holds a \u0000, so
# entries are matched on their text, which starts `{"attempt":N,"started_at":T,` as the worker writes them (one
# that does not is kept): the entries but a same-attempt one, in order, then the new one
_POSTGRES_KEY = 'substring({} from \'^\\[?\\{{("attempt":[^,]*,"started_at":[^,]*),\')'
_POSTGRES_APPEND = (
    "CASE WHEN json_array_length(excluded.history) = 0 THEN runs.history"
    " ELSE (SELECT json_agg(e ORDER BY i) FROM (SELECT e, i FROM json_array_elements(runs.history)"
    f" WITH ORDINALITY AS t(e, i) WHERE COALESCE({_POSTGRES_KEY.format('e::text')} <>"
    f" {_POSTGRES_KEY.format('excluded.history::text')}, true)"
    " UNION ALL SELECT n, 9223372036854775807 FROM json_array_elements(excluded.history) AS n) AS kept(e, i)) END"
)


def history_columns(is_sqlite: bool) -> dict[str, str]:
    """The SET clauses (SQL) of the worker's upsert for `history` (appended) and the columns that follow it: the
    last error and its type change only with an attempt's entry; `started_at` stays the first attempt's."""
    ended = "json_array_length(excluded.history) > 0"

    def kept_until_ended(column: str) -> str:
        return f"CASE WHEN {ended} THEN excluded.{column} ELSE runs.{column} END"

    return {
        "history": _SQLITE_APPEND if is_sqlite else _POSTGRES_APPEND,
        "last_error": kept_until_ended("last_error"),
        "error_type": kept_until_ended("error_type"),
        "started_at": "COALESCE(runs.started_at, excluded.started_at)",
    }


def check_entries(rows: list[dict[str, Any]]) -> None:
    """Each update adds at most one attempt's entry (the upsert appends one)."""
    for row in rows:
        if len(row.get("history") or ()) > 1:
            raise ValueError(f"run {row.get('id')}: an update adds one attempt to its history, not several")

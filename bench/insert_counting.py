"""What counting an insert of runs costs Postgres, per way of counting it (migration 0008 chose `function`).

    python -m bench.insert_counting [ROUNDS] [--postgres URL]

In the database itself, so that the client's noise is left out: a plpgsql loop of 20,000 single-row enqueue
upserts (new runs), then of worker upserts that update (no row inserted), timed by the backend's CPU (/proc), the
variants alternated each round on an emptied store at the head. `none` is no insert trigger at all, `row` 0007's
row trigger, `function` 0008's (the row trigger, its function testing runs.counted), `when` the same test in the
trigger's WHEN, `statement` a statement trigger over the insert's new table. Postgres must run on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics

import asyncpg

from bench.store import async_url
from bench.systems import BENCH_POSTGRES
from runtime.store.counting import POSTGRES_INSERT_BY_ROW, POSTGRES_INSERT_UNLESS_COUNTED
from runtime.store.runs import RunStore

_ROW = POSTGRES_INSERT_BY_ROW[1]
VARIANTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "row": POSTGRES_INSERT_BY_ROW,
    "function": POSTGRES_INSERT_UNLESS_COUNTED,
    "when": (
        POSTGRES_INSERT_BY_ROW[0],
        _ROW.replace(" EXECUTE", " WHEN (current_setting('runs.counted', true) IS DISTINCT FROM 'on') EXECUTE"),
    ),
    "statement": (
        """CREATE OR REPLACE FUNCTION runs_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO run_counts (function, status, n) SELECT function, status, COUNT(*) FROM new_runs
    GROUP BY function, status;
    RETURN NULL;
END $$""",
        "CREATE TRIGGER runs_count AFTER INSERT ON runs REFERENCING NEW TABLE AS new_runs"
        " FOR EACH STATEMENT EXECUTE FUNCTION runs_count()",
    ),
}
_COLUMNS = "(id, function, arguments, status, attempts, max_attempts, enqueued_at, history, version, queue)"
LOOPS = {
    "insert": f"""DO $$ DECLARE i int; BEGIN FOR i IN 1..%d LOOP
INSERT INTO runs {_COLUMNS} VALUES (md5(random()::text || i), 'f' || (i %% 3), '{{}}', 'queued', 0, 3, now(), '[]', 0,
'default') ON CONFLICT (id) DO UPDATE SET queue = excluded.queue;
END LOOP; END $$""",
    "update": f"""DO $$ DECLARE i int; BEGIN FOR i IN 1..%d LOOP
INSERT INTO runs {_COLUMNS} VALUES ('r' || (i %% 1000), 'f', '{{}}', 'running', 1, 3, now(), '[]', i, 'default')
ON CONFLICT (id) DO UPDATE SET version = excluded.version WHERE runs.version < excluded.version;
END LOOP; END $$""",
}
STATEMENTS = 20_000


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(url: str, rounds: int) -> None:
    store = RunStore(async_url(url))
    await store.init()  # the head's tables
    await store.close()
    conn = await asyncpg.connect(url)
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    found: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for name, trigger in VARIANTS.items():
            for loop, sql in LOOPS.items():
                await conn.execute("TRUNCATE runs, run_counts")
                await conn.execute("DROP TRIGGER IF EXISTS runs_count ON runs")
                for statement in trigger:
                    await conn.execute(statement)
                if loop == "update":  # the runs the worker's upserts find
                    await conn.execute(
                        f"INSERT INTO runs {_COLUMNS} SELECT 'r' || i, 'f', '{{}}', 'running', 1, 3, now(), '[]', 0,"
                        " 'default' FROM generate_series(0, 999) AS i"
                    )
                started = _cpu_seconds(pid)
                await conn.execute(sql % STATEMENTS)
                found.setdefault((name, loop), []).append((_cpu_seconds(pid) - started) / STATEMENTS * 1e6)
    await conn.execute("DROP TRIGGER IF EXISTS runs_count ON runs")  # the head's trigger back
    for statement in POSTGRES_INSERT_UNLESS_COUNTED:
        await conn.execute(statement)
    await conn.close()
    for (name, loop), values in found.items():
        each = ", ".join(f"{value:.2f}" for value in values)
        print(f"{name:10s} {loop:7s} server CPU µs a statement: median {statistics.median(values):6.2f} ({each})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("rounds", nargs="?", type=int, default=6)
    parser.add_argument("--postgres", default=BENCH_POSTGRES)
    args = parser.parse_args()
    asyncio.run(main(args.postgres, args.rounds))

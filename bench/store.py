"""The dashboard's `GET /api/stats` against a big run store (10M runs), on SQLite and on Postgres.

`fill` creates the schema as the product does (`RunStore.init()`) and inserts synthetic runs with one
set-based INSERT ... SELECT (a recursive CTE on SQLite, generate_series on Postgres); the run store's
triggers count them into `run_counts`, which a fold then sums, as a writer does every few seconds; then
ANALYZE. `stats_run` starts `runtime dashboard` as a real server process on that store and times the first
/api/stats, then an open tab polling it every 50 ms, and one `RunStore.counts()` in-process.

    python -m bench --only store --store-rows 10000000
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench import procs
from bench.stats import percentile
from bench.systems import BENCH_POSTGRES, OURS_DIR, OURS_MANIFEST, VENV_BIN, ensure_database
from bench.web import get, wait_http_ok

FUNCTIONS = 10
SPAN_S = 30 * 24 * 3600  # enqueued_at spread over the last 30 days
POLL_S = 0.05  # the steady-state requests: one every 50 ms, as an open tab polling
# the store's database on the bench's Postgres server: its own, so a concurrent `python -m bench` run on
# BENCH_POSTGRES_URL's database is not emptied under it
STORE_DB_SUFFIX = "_store"

# status from r = (n / FUNCTIONS * 37) % 100, uniform over 0..99: 85% succeeded, 7% failed, 3% queued, 2% running,
# 1% retrying, 2% cancelled
_STATUS_CASE = """CASE WHEN r < 85 THEN 'succeeded' WHEN r < 92 THEN 'failed' WHEN r < 95 THEN 'queued'
    WHEN r < 97 THEN 'running' WHEN r < 98 THEN 'retrying' ELSE 'cancelled' END"""
_COLUMNS = """id, function, arguments, status, attempts, max_attempts, last_error, enqueued_at, scheduled_for,
    started_at, finished_at, result, history, replay_of, version, queue, error_type, trace_id, deadline,
    idempotency_key"""

SQLITE_FILL = f"""
INSERT INTO runs ({_COLUMNS})
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :rows),
g AS (SELECT n, (n / {FUNCTIONS} * 37) % 100 AS r, :start + n * :span / :rows AS t FROM seq)
SELECT
    printf('%032x', n),
    printf('task_%02d', n % {FUNCTIONS}),
    '{{"i": ' || n || '}}',
    {_STATUS_CASE},
    1, 4,
    CASE WHEN r BETWEEN 85 AND 91 THEN 'ValueError: boom' END,
    strftime('%Y-%m-%d %H:%M:%S', t, 'unixepoch') || '.000000',
    NULL,
    CASE WHEN r < 92 OR r >= 95 THEN strftime('%Y-%m-%d %H:%M:%S', t + 1, 'unixepoch') || '.000000' END,
    CASE WHEN r < 92 OR r >= 98 THEN strftime('%Y-%m-%d %H:%M:%S', t + 2, 'unixepoch') || '.000000' END,
    CASE WHEN r < 85 THEN '{{"ok": true}}' END,
    '[]', NULL, 0, 'default',
    CASE WHEN r BETWEEN 85 AND 91 THEN 'ValueError' END,
    NULL, NULL, NULL
FROM g
"""

POSTGRES_FILL = f"""
INSERT INTO runs ({_COLUMNS})
SELECT
    lpad(to_hex(n), 32, '0'),
    'task_' || lpad((n %% {FUNCTIONS})::text, 2, '0'),
    ('{{"i": ' || n || '}}')::json,
    {_STATUS_CASE},
    1, 4,
    CASE WHEN r BETWEEN 85 AND 91 THEN 'ValueError: boom' END,
    t,
    NULL,
    CASE WHEN r < 92 OR r >= 95 THEN t + interval '1 second' END,
    CASE WHEN r < 92 OR r >= 98 THEN t + interval '2 seconds' END,
    CASE WHEN r < 85 THEN '{{"ok": true}}'::json END,
    '[]'::json, NULL, 0, 'default',
    CASE WHEN r BETWEEN 85 AND 91 THEN 'ValueError' END,
    NULL, NULL, NULL
FROM (
    SELECT n, (n / {FUNCTIONS} * 37) %% 100 AS r,
        %(start)s::timestamp + (n::float8 * %(span)s / %(rows)s) * interval '1 second' AS t
    FROM generate_series(1, %(rows)s) AS n
) AS g
"""


def async_url(url: str) -> str:
    """The URL as RunStore wants it (the async driver), like runtime/settings.py makes DATABASE_URL."""
    scheme, _, rest = url.partition("://")
    if scheme.startswith("sqlite"):
        return "sqlite+aiosqlite://" + rest
    return "postgresql+asyncpg://" + rest


def _libpq_url(url: str) -> str:
    return "postgresql://" + url.partition("://")[2]


async def _init(url: str) -> None:
    from runtime.store.runs import RunStore

    store = RunStore(async_url(url))
    try:
        await store.init()
    finally:
        await store.close()


async def _fold(url: str) -> None:
    """Sum the count changes the fill's inserts made (the run store's triggers append one per run) into a
    row per function and status, as a writer of the product does every few seconds."""
    from runtime.store.runs import RunStore

    store = RunStore(async_url(url))
    try:
        await store.fold_counts()
    finally:
        await store.close()


def fill(database_url: str, rows: int) -> float:
    """Create the run store's schema and insert `rows` synthetic runs into it; seconds taken (with ANALYZE)."""
    started = time.perf_counter()
    asyncio.run(_init(database_url))
    start_epoch = int(time.time()) - SPAN_S
    start = datetime.fromtimestamp(start_epoch, UTC).replace(tzinfo=None)  # naive UTC, as the product stores
    if make_url(async_url(database_url)).get_backend_name() == "sqlite":
        path = make_url(async_url(database_url)).database
        assert path, database_url
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("PRAGMA cache_size=-262144")  # 256 MiB: the indexes' pages stay in memory
            conn.execute("BEGIN")
            if rows > 0:
                conn.execute(SQLITE_FILL, {"rows": rows, "start": start_epoch, "span": SPAN_S})
            conn.execute("COMMIT")
            asyncio.run(_fold(database_url))
            conn.execute("ANALYZE")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
        # on disk before anything is timed: no writeback of the fill's dirty pages during the counts
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        import psycopg2  # type: ignore[import-untyped, unused-ignore]

        pg = psycopg2.connect(_libpq_url(database_url))
        try:
            with pg, pg.cursor() as cur:
                cur.execute("SET LOCAL synchronous_commit = off")
                if rows > 0:
                    cur.execute(POSTGRES_FILL, {"rows": rows, "start": start, "span": SPAN_S})
            asyncio.run(_fold(database_url))
            pg.autocommit = True
            with pg.cursor() as cur:
                # VACUUM as well: the table as autovacuum leaves it (hint bits set, visibility map), not a
                # first scan that rewrites every page, nor autovacuum starting in the middle of the timing
                cur.execute("VACUUM (ANALYZE) runs")
                # the fill appended a count row per run in one statement, and the fold left them all dead
                # with its sums at the end of the table, which VACUUM cannot shorten. The product's writers
                # fold every 5 s, so its table never holds more than 5 s of writes: compact it to that
                cur.execute("VACUUM (FULL, ANALYZE) run_counts")
                try:  # on disk before anything is timed (needs a superuser or pg_checkpoint; else skipped)
                    cur.execute("CHECKPOINT")
                except psycopg2.Error:
                    pass
        finally:
            pg.close()
    return time.perf_counter() - started


async def _count_ms(url: str) -> tuple[float, int]:
    """One in-process `RunStore.counts()` (the connection opened first): ms and the runs it counted."""
    from runtime.store.runs import RunStore

    store = RunStore(async_url(url))
    try:
        await store.ping()
        started = time.perf_counter()
        counts = await store.counts()
        took = (time.perf_counter() - started) * 1000
    finally:
        await store.close()
    return took, sum(n for by_status in counts.values() for n in by_status.values())


def _fresh_postgres() -> str:
    """An empty database of the store benchmark's own on the bench's Postgres server (created if missing)."""
    import psycopg2  # type: ignore[import-untyped, unused-ignore]

    url = BENCH_POSTGRES + STORE_DB_SUFFIX
    why = ensure_database(url)
    if why:
        raise RuntimeError(why)
    with psycopg2.connect(url) as pg, pg.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS runs, run_arguments, run_counts, alembic_version CASCADE")
        cur.execute("DROP FUNCTION IF EXISTS runs_count()")
    pg.close()
    return url


def database_for(backend: str, tmpdir: Path) -> str:
    if backend == "sqlite":
        path = tmpdir / "runs.db"
        for leftover in (path, path.with_name("runs.db-wal"), path.with_name("runs.db-shm")):
            leftover.unlink(missing_ok=True)
        return f"sqlite:///{path.absolute()}"
    if backend == "postgres":
        return _fresh_postgres()
    raise ValueError(f"backend is sqlite or postgres, not {backend!r}")


def _timed_get(url: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    status, body = get(url, timeout=120)
    took = (time.perf_counter() - started) * 1000
    if status != 200:
        raise RuntimeError(f"GET {url} answered {status}: {body[:300]!r}")
    return took, json.loads(body)


def stats_run(backend: str, rows: int, redis_url: str, tmpdir: Path, requests: int = 50) -> dict[str, Any]:
    """Fill a store, serve it with `runtime dashboard`, time GET /api/stats: once cold, then polled
    (and GET /api/throughput, the page's other poll of the store)."""
    database_url = database_for(backend, tmpdir)
    fill_s = fill(database_url, rows)
    count_ms, counted = asyncio.run(_count_ms(database_url))
    port = procs.free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmpdir / f"dashboard-{backend}.log"
    env = procs.child_env({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "LOG_LEVEL": "warning"})
    cmd = [str(VENV_BIN / "runtime"), "dashboard", "--manifest", str(OURS_MANIFEST), "--port", str(port)]
    proc = procs.spawn(cmd, env=env, cwd=OURS_DIR, log=log)
    with procs.running(proc):
        wait_http_ok(f"{base}/health/live", proc, timeout=60, log=log)  # not /api/stats: that would count
        first_ms, first = _timed_get(f"{base}/api/stats")
        times: list[float] = []
        ages: list[float] = []
        t0 = time.perf_counter()
        for i in range(requests):
            time.sleep(max(0.0, t0 + (i + 1) * POLL_S - time.perf_counter()))
            took, answer = _timed_get(f"{base}/api/stats")
            times.append(took)
            ages.append(float(answer.get("runs_age_seconds", 0.0)))
        # the page's other poll that reads the run store: runs finished per minute in the last hour
        chart = [_timed_get(f"{base}/api/throughput")[0] for _ in range(20)]
    served = sum(n for by_status in first.get("runs", {}).values() for n in by_status.values())
    return {
        "backend": backend,
        "rows": rows,
        "fill_s": fill_s,
        "count_ms": count_ms,
        "counted": counted,
        "first_ms": first_ms,
        "first_runs": served,
        "requests": requests,
        "p50_ms": percentile(times, 50) if times else None,
        "p99_ms": percentile(times, 99) if times else None,
        "max_ms": max(times) if times else None,
        "max_age_s": max([float(first.get("runs_age_seconds", 0.0)), *ages]),
        "stale_answers": sum(1 for a in ages if a > 0),
        "throughput_p50_ms": percentile(chart, 50),
    }


def check() -> str | None:
    """Why stats_run cannot run here, or None."""
    if not (VENV_BIN / "runtime").exists():
        return f"no `runtime` command in {VENV_BIN} (pip install -e . first)"
    if not OURS_MANIFEST.exists():
        return f"no {OURS_MANIFEST}"
    return None


def postgres_check() -> str | None:
    """Why the Postgres run cannot run here (no server at BENCH_POSTGRES_URL, ...), or None."""
    from bench.systems import _check_postgres

    return check() or _check_postgres()

"""The enqueue endpoint: an HTTP POST that queues one task and answers 202 with its id, under `wrk -t1 -c64`.

ours: `runtime web --manifest bench/apps/enqueue_ours/manifest.yaml` (cwd: that folder), run records on
SQLite (or Postgres), LOG_LEVEL=warning. Baseline: bare Starlette on uvicorn + taskiq `kiq()` on
`RedisStreamBroker` (bench/apps/starlette_kiq_app.py). No worker runs: every task stays in its stream.

After each timed run the entries added to the Redis stream(s) are counted and checked against the 2xx
responses wrk reports. wrk stops at its deadline with requests still in flight (sent, not answered): those
may have been enqueued, so the count must lie in [2xx, 2xx + unanswered]; `lost` is how far outside it is
(negative: enqueues lost; positive: phantom enqueues). The wrk script counts the requests it sends.

python -m bench --only enqueue
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import procs, systems, web
from bench.redis_server import RedisServer
from bench.systems import VENV_BIN, unavailable, uvicorn_argv

CONNECTIONS = 64
THREADS = 1
APP_DIR = procs.REPO / "bench" / "apps" / "enqueue_ours"
MANIFEST = APP_DIR / "manifest.yaml"
PATH = "/enqueue"
READY = "/health/live"
BODY = '{"topic":"x"}'
BASELINE = "starlette-kiq"
ENQUEUE_SYSTEMS: list[tuple[str, str]] = [
    ("ours", "ours (runtime web, run records on SQLite)"),
    ("ours-postgres", "ours (runtime web, run records on Postgres)"),
    (BASELINE, "bare Starlette on uvicorn + taskiq kiq() (RedisStreamBroker)"),
]
LABELS = dict(ENQUEUE_SYSTEMS)

# POST with a JSON body; `request()` counts what each thread sends, `done()` prints the total
WRK_SCRIPT = f"""\
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
sent = 0
function request() sent = sent + 1; return wrk.format() end
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + t:get("sent") end
  io.write(string.format("sent: %d\\n", total))
end
"""


def _check_ours() -> str | None:
    return unavailable(systems._check_ours) or systems.check_manifest(MANIFEST)


def _check_ours_postgres() -> str | None:
    return unavailable(systems._check_postgres) or _check_ours()


def _check_wrk() -> str | None:
    return None if Path(web.WRK).exists() else f"no wrk at {web.WRK} (apt-get install -y wrk)"


CHECKS: dict[str, Callable[[], str | None]] = {
    "ours": _check_ours,
    "ours-postgres": _check_ours_postgres,
    BASELINE: lambda: None,
}


def check(system: str) -> str | None:
    """Why `system` can't run here, or None."""
    return unavailable(_check_wrk) or unavailable(CHECKS[system])


def _server(system: str, port: int, redis_url: str, tmpdir: Path, tag: str) -> tuple[list[str], dict[str, str], Path]:
    """argv, env and cwd of the system's server."""
    if system == BASELINE:
        return (
            uvicorn_argv("bench.apps.starlette_kiq_app:app", port),
            procs.child_env({"REDIS_URL": redis_url}),
            procs.REPO,
        )
    if system == "ours-postgres":
        database = systems._fresh_postgres(tmpdir / f"enqueue-{system}-{tag}")  # emptied for this run
    elif system == "ours":
        db = tmpdir / f"enqueue-{system}-{tag}.db"
        for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            stale.unlink(missing_ok=True)
        database = f"sqlite:///{db}"
    else:
        raise ValueError(f"unknown system {system!r}; choose from {list(LABELS)}")
    argv = [
        str(VENV_BIN / "runtime"),
        "web",
        "--manifest",
        str(MANIFEST),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = procs.child_env({"REDIS_URL": redis_url, "DATABASE_URL": database, "LOG_LEVEL": "warning"})
    return argv, env, APP_DIR


def stream_entries(redis: RedisServer) -> dict[str, int]:
    """XLEN of every stream key in Redis."""
    with redis.client() as c:
        return {key.decode(errors="replace"): int(c.xlen(key)) for key in c.scan_iter(_type="STREAM", count=1000)}


def _settled(redis: RedisServer, quiet: float = 0.5, timeout: float = 15.0) -> int:
    """The total of stream entries once it has not changed for `quiet` seconds (in-flight enqueues landed)."""
    deadline = time.monotonic() + timeout
    last, since = sum(stream_entries(redis).values()), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = sum(stream_entries(redis).values())
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


def _wrk(url: str, script: Path, seconds: float) -> str:
    cmd = [
        web.WRK,
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout


def parse_counts(out: str) -> dict[str, int]:
    """wrk's completed requests, its non-2xx/3xx count, and the requests the script sent."""
    total = re.search(r"^\s*(\d+) requests in ", out, re.M)
    sent = re.search(r"^sent: (\d+)\s*$", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if not total or not sent:
        raise RuntimeError(f"could not read wrk's request counts: {out[-800:]}")
    return {
        "requests": int(total.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "sent": int(sent.group(1)),
    }


def lost_enqueues(entries: int, ok: int, unanswered: int) -> int:
    """How far the stream's new entries are outside [2xx, 2xx + unanswered]: < 0 lost, > 0 phantom, else 0."""
    if entries < ok:
        return entries - ok
    if entries > ok + unanswered:
        return entries - ok - unanswered
    return 0


def _post(url: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=BODY.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(resp.status), bytes(resp.read())


def _count_records(database: str) -> int | None:
    """Rows in our run store (after the server stopped), or None when it can't be read."""
    try:
        if database.startswith("sqlite:///"):
            with sqlite3.connect(database.removeprefix("sqlite:///")) as conn:
                return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
        import psycopg2  # type: ignore[import-untyped]

        with psycopg2.connect(database) as pg, pg.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs")
            row = cur.fetchone()
        pg.close()
        return int(row[0]) if row else None
    except Exception:
        return None


def enqueue_run(system: str, redis: RedisServer, seconds: float, tmpdir: Path, tag: str) -> dict[str, Any]:
    """Flush Redis, start the server, one POST (checks 202 + run id), a 1 s wrk warm-up, then one timed run.

    Returns parse_wrk's rps/p50_ms/p99_ms/errors, wrk's `requests` (completed), `ok_2xx`, `sent`,
    `unanswered` (sent, not answered when wrk stopped), `stream_entries` (added during the timed run),
    `lost` (see the module's doc), `stream_ok`, `peak_rss_mb`, `body`; for ours also `records` vs
    `stream_total` (every run since the flush has a record)."""
    if system not in LABELS:
        raise ValueError(f"unknown system {system!r}; choose from {list(LABELS)}")
    redis.flush()
    port = procs.free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmpdir / f"enqueue-{system}-{tag}.log"
    script = tmpdir / "enqueue-post.lua"
    script.write_text(WRK_SCRIPT)
    argv, env, cwd = _server(system, port, redis.url, tmpdir, tag)
    proc = procs.spawn(argv, env=env, cwd=cwd, log=log)
    with procs.running(proc, sig=signal.SIGINT), procs.PeakRss(proc.pid) as rss:
        web.wait_http_ok(base + READY, proc, timeout=30, log=log)
        status, body = _post(base + PATH)
        if status != 202 or "run_id" not in json.loads(body):
            raise RuntimeError(f"POST {PATH} answered {status} {body[:200]!r}, not 202 with a run id")
        _wrk(base + PATH, script, 1)
        before = _settled(redis)
        out = _wrk(base + PATH, script, seconds)
        after = _settled(redis)
        result = web.parse_wrk(out)
        counts = parse_counts(out)
        result["peak_rss_mb"] = rss.peak / 2**20
    ok = counts["requests"] - counts["non_2xx"]
    unanswered = max(0, counts["sent"] - counts["requests"])
    entries = after - before
    result |= {
        "requests": counts["requests"],
        "ok_2xx": ok,
        "sent": counts["sent"],
        "unanswered": unanswered,
        "stream_entries": entries,
        "stream_minus_2xx": entries - ok,
        "lost": lost_enqueues(entries, ok, unanswered),
        "streams": sorted(stream_entries(redis)),
        "body": body.decode(errors="replace"),
    }
    result["stream_ok"] = result["lost"] == 0
    if system != BASELINE:
        records = _count_records(env["DATABASE_URL"])
        result["records"] = records
        result["stream_total"] = after
        result["records_ok"] = records == after
    return result

"""CPU per single enqueue, ours (SQLite and Postgres records) against taskiq's `kiq()`, alternated.

    python -m bench.enqueue_cpu [N] [ROUNDS] [--postgres URL] [--only ours-sqlite,ours-postgres,taskiq]

Each system's producer (bench/apps/*_app.py `fill N`) runs in its own process against one fresh Redis
(flushed before each run), a fresh SQLite file or an emptied Postgres database; the rounds alternate
the systems, and each prints the producer's process CPU per call. A quick check of one change, not the
benchmark (bench/tasks.py measures the same figure as `enqueue_cpu_us`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from bench import procs
from bench.redis_server import redis_server
from bench.systems import BENCH_POSTGRES, OURS_DIR

SYSTEMS = {
    "ours-sqlite": ("bench.apps.ours_app", OURS_DIR),
    "ours-postgres": ("bench.apps.ours_app", OURS_DIR),
    "taskiq": ("bench.apps.taskiq_app", procs.REPO),
}


def _database(key: str, tmpdir: Path, postgres: str) -> dict[str, str]:
    if key == "ours-sqlite":
        return {"DATABASE_URL": f"sqlite:///{Path(tempfile.mkdtemp(dir=tmpdir)) / 'runs.db'}", "LOG_LEVEL": "warning"}
    if key == "ours-postgres":
        import psycopg2

        with psycopg2.connect(postgres) as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS runs, run_arguments, run_counts, alembic_version CASCADE")
        conn.close()
        return {"DATABASE_URL": postgres, "LOG_LEVEL": "warning"}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=5000)
    parser.add_argument("rounds", type=int, nargs="?", default=3)
    parser.add_argument("--postgres", default=BENCH_POSTGRES, help="emptied before each run")
    parser.add_argument("--only", default=",".join(SYSTEMS))
    args = parser.parse_args()
    keys = args.only.split(",")
    found: dict[str, list[float]] = {key: [] for key in keys}
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis:
        for round_ in range(args.rounds):
            for key in keys:
                module, cwd = SYSTEMS[key]
                redis.flush()
                env = procs.child_env({"REDIS_URL": redis.url, **_database(key, Path(tmp), args.postgres)})
                out = procs.run([sys.executable, "-m", module, "fill", str(args.n)], env=env, cwd=cwd, timeout=300)
                result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
                found[key].append(result["cpu_us_per_call"])
                print(f"round {round_ + 1} {key:14} {result['cpu_us_per_call']:7.1f} µs CPU/call", flush=True)
    for key, values in found.items():
        print(f"{key:14} median {statistics.median(values):7.1f} µs  ({', '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    main()

"""Issue 25's worker spawn -> first task, A/B in the same rounds: bare taskiq, `runtime worker` on SQLite and on
Postgres (BENCH_POSTGRES_URL), alternating, each with one task queued before it starts. Wall time as bench/tasks.py's
worker_startup measures it, and the worker's CPU time (user + sys, the process killed as soon as its first task is
done, so no shutdown is counted; taskiq's forked child is not, so its CPU is a floor).

python -m bench.spawn_ab [--rounds 16] [--before DIR]

--before DIR adds `runtime worker` run from another version's runtime package, on both stores:
`mkdir DIR && git archive COMMIT runtime | tar -x -C DIR` (as in bench/server_choice.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import procs
from bench.apps import probe
from bench.redis_server import RedisServer, redis_server
from bench.systems import OURS, OURS_MANIFEST, OURS_POSTGRES, TASK_SYSTEMS, TaskSystem
from bench.tasks import _producer, _run_dir, _wait_done

TASKIQ = next(s for s in TASK_SYSTEMS if s.key == "taskiq")


def before(system: TaskSystem, path: Path) -> TaskSystem:
    """`system`'s worker with the runtime package found in `path` first on its sys.path."""
    code = f"import sys; sys.path.insert(0, {str(path.resolve())!r}); from runtime.cli import main; main()"
    return dataclasses.replace(
        system,
        key=f"{system.key}-before",
        worker=lambda mode: [sys.executable, "-c", code, "worker", "--manifest", str(OURS_MANIFEST)],
    )


def startup(system: TaskSystem, redis: RedisServer, tmpdir: Path, tag: str) -> tuple[float, float]:
    """Spawn -> first pre-queued task done, in seconds of wall time and of the worker's CPU."""
    redis.flush()
    tmpdir = _run_dir(tmpdir, "startup", system)
    _producer(system, "fill", 1, redis, tmpdir)
    log = tmpdir / f"worker-{tag}.log"
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = time.time()
    proc = procs.spawn(system.worker("startup"), env=system.env(redis.url, tmpdir), cwd=system.cwd, log=log)
    try:
        _wait_done(redis, proc, 1, timeout=60, log=log)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    with redis.client() as c:
        first = float(c.get(probe.FIRST))  # type: ignore[arg-type]
    return first - spawned, (now.ru_utime - used.ru_utime) + (now.ru_stime - used.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--before", type=Path, help="a directory holding another version's runtime package")
    args = parser.parse_args()
    systems = [TASKIQ, OURS, OURS_POSTGRES]
    if args.before is not None:
        systems += [before(OURS, args.before), before(OURS_POSTGRES, args.before)]
    figures: dict[str, list[tuple[float, float]]] = {s.key: [] for s in systems}
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis:
        for n in range(args.rounds):
            for system in systems if n % 2 == 0 else systems[::-1]:
                figures[system.key].append(startup(system, redis, Path(tmp), f"{system.key}-{n}"))
            print(f"round {n + 1}: " + ", ".join(f"{k} {v[-1][0]:.3f} s" for k, v in figures.items()), flush=True)
    wall = {key: statistics.median(w for w, _ in values) for key, values in figures.items()}
    for key, values in figures.items():
        cpu, ratio = statistics.median(c for _, c in values), wall[key] / wall[TASKIQ.key]
        print(f"median {key}: {wall[key]:.3f} s to the first task ({ratio:.2f}x taskiq's), {cpu:.3f} s CPU")


if __name__ == "__main__":
    main()

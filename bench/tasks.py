"""Task benchmarks: throughput on a pre-filled queue, idle-queue latency, bulk enqueue, worker start-up.

Done and timing, the same for every system: each no-op task runs `probe.record_done` (one Lua call:
INCR a counter, stamp the first and latest completion with the worker's `time.time()`). The harness
pre-fills N tasks with the system's own client (one enqueue call each, timed: enqueue/s), then spawns
the worker and polls the counter until it reaches N. Throughput = (N - 1) / (last stamp - first
stamp): from the worker's first task done to its last, so process start-up is excluded (it is
measured on its own, and spawn -> last is recorded too).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import procs
from bench.apps import probe
from bench.redis_server import RedisServer
from bench.stats import percentile
from bench.systems import TaskSystem


def _producer(
    system: TaskSystem, mode: str, n: int, redis: RedisServer, tmpdir: Path, size: int | None = None
) -> dict[str, Any]:
    timeout = 60 + n / 100 + n * (size or 0) / 20e6
    argv = system.producer(mode, n, size)
    out = procs.run(argv, env=system.env(redis.url, tmpdir), cwd=system.cwd, timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"producer printed no result: {out[-1000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result:
        raise RuntimeError(f"producer {mode}: {result['error']}")
    return result


def _run_dir(tmpdir: Path, kind: str, system: TaskSystem) -> Path:
    """A fresh directory per run: its logs and, for ours, a fresh run-record database."""
    return Path(tempfile.mkdtemp(prefix=f"{kind}-{system.key}-", dir=tmpdir))


def _tail(log: Path, n: int = 1500) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


class NotDone(RuntimeError):
    """Fewer tasks done than awaited within the time given."""


def _wait_done(redis: RedisServer, proc: Any, n: int, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    with redis.client() as c:
        while time.monotonic() < deadline:
            done = int(c.get(probe.DONE) or 0)
            if done >= n:
                return
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited {proc.returncode} after {done}/{n} tasks: {_tail(log)}")
            time.sleep(0.02)
        done = int(c.get(probe.DONE) or 0)
    raise NotDone(f"only {done}/{n} tasks done after {timeout:.0f}s: {_tail(log)}")


def _redis_cpu(redis: RedisServer) -> float:
    with redis.client() as c:
        info = c.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _drain(
    system: TaskSystem,
    argv: list[str],
    redis: RedisServer,
    n: int,
    tmpdir: Path,
    tag: str,
    then: Callable[[dict[str, Any]], None] = lambda result: None,
) -> dict[str, Any]:
    """Spawn the worker on a pre-filled queue and wait until n tasks are done: tasks/s from the
    tasks' own stamps, Redis CPU per task (spawn -> done), peak RSS; `then` runs with the worker still up."""
    result: dict[str, Any] = {}
    log = tmpdir / f"worker-{tag}.log"
    env = system.env(redis.url, tmpdir)
    cpu = _redis_cpu(redis)
    spawned = time.time()
    proc = procs.spawn(argv, env=env, cwd=system.cwd, log=log)
    with procs.running(proc), procs.PeakRss(proc.pid) as rss:
        _wait_done(redis, proc, n, timeout=60 + n / 50, log=log)
        result["redis_cpu_us_per_task"] = (_redis_cpu(redis) - cpu) / n * 1e6
        with redis.client() as c:
            first, last = float(c.get(probe.FIRST)), float(c.get(probe.LAST))  # type: ignore[arg-type]
        result["tasks_per_s"] = (n - 1) / (last - first) if n > 1 and last > first else None
        result["spawn_to_first_s"] = first - spawned
        result["spawn_to_last_s"] = last - spawned
        then(result)
        rss.peak = max(rss.peak, rss.sample())
        result["peak_rss_mb"] = rss.peak / 2**20
    return result


def throughput_and_latency(
    system: TaskSystem, redis: RedisServer, n: int, latency_samples: int, tmpdir: Path, tag: str
) -> dict[str, Any]:
    """One repetition for one system: fill, start the worker, drain, then latency on the idle queue."""
    redis.flush()
    tmpdir = _run_dir(tmpdir, "tasks", system)
    fill = _producer(system, "fill", n, redis, tmpdir)

    def latency(result: dict[str, Any]) -> None:
        if not latency_samples:
            return
        _producer(system, "latency", latency_samples, redis, tmpdir)
        with redis.client() as c:
            samples = [float(x) * 1000 for x in c.lrange(probe.LATENCY, 0, -1)]
        result["latency_p50_ms"] = percentile(samples, 50)
        result["latency_p99_ms"] = percentile(samples, 99)
        result["latency_n"] = len(samples)

    result = _drain(system, system.worker("throughput"), redis, n, tmpdir, tag, then=latency)
    return {"enqueue_per_s": fill["per_s"], "enqueue_cpu_us": fill.get("cpu_us_per_call"), **result}


def payload_run(system: TaskSystem, redis: RedisServer, size: int, n: int, tmpdir: Path, tag: str) -> dict[str, Any]:
    """Throughput of n tasks whose one argument is a `size`-byte string (the queue pre-filled)."""
    redis.flush()
    tmpdir = _run_dir(tmpdir, f"payload{size}", system)
    fill = _producer(system, "fill", n, redis, tmpdir, size=size)
    result = _drain(system, system.worker("throughput"), redis, n, tmpdir, f"{size}-{tag}")
    return {"size": size, "n": n, "enqueue_per_s": fill["per_s"], **result}


def scale_run(system: TaskSystem, redis: RedisServer, processes: int, n: int, tmpdir: Path, tag: str) -> dict[str, Any]:
    """Throughput of `processes` worker processes sharing one Redis (and one run store), and Redis's
    CPU per task."""
    assert system.scaled is not None
    redis.flush()
    tmpdir = _run_dir(tmpdir, f"scale{processes}", system)
    _producer(system, "bulk" if system.bulk else "fill", n, redis, tmpdir)
    result = _drain(system, system.scaled(processes), redis, n, tmpdir, f"p{processes}-{tag}")
    return {"processes": processes, "n": n, **result}


def bulk_enqueue(system: TaskSystem, redis: RedisServer, n: int, tmpdir: Path) -> dict[str, Any]:
    """Bulk enqueue of n tasks with no worker running, timed by the producer (single enqueue is
    measured by the throughput run's pre-fill)."""
    redis.flush()
    tmpdir = _run_dir(tmpdir, "bulk", system)
    bulk = _producer(system, "bulk", n, redis, tmpdir)
    redis.flush()
    return {"bulk_per_s": bulk["per_s"]}


def worker_startup(system: TaskSystem, redis: RedisServer, tmpdir: Path, tag: str) -> dict[str, Any]:
    """Spawn -> first pre-queued task done (the task's own completion stamp)."""
    redis.flush()
    tmpdir = _run_dir(tmpdir, "startup", system)
    _producer(system, "fill", 1, redis, tmpdir)
    log = tmpdir / f"worker-{tag}.log"
    spawned = time.time()
    proc = procs.spawn(system.worker("startup"), env=system.env(redis.url, tmpdir), cwd=system.cwd, log=log)
    with procs.running(proc):
        _wait_done(redis, proc, 1, timeout=60, log=log)
        with redis.client() as c:
            first = float(c.get(probe.FIRST))  # type: ignore[arg-type]
    return {"spawn_to_first_task_s": first - spawned}

"""Where our time goes: py-spy samples of our processes during the benchmark's own workloads.

Each profile samples one process of ours (py-spy, 250 Hz, every thread, idle ones too, native frames)
while it does one job the goals measure: drain no-op tasks (run records on SQLite, then Postgres), drain
1 MB payloads, pre-fill with single enqueues, serve the hello route under wrk, start a worker, start the
emulator. `fold` sorts the samples into idle and busy and shares the busy ones out by area (a system
call, a GIL wait, the collector, imports, or the package of the innermost Python frame), by function,
and by the innermost frame of ours, so a goal that is not met comes with what limits it.

Native frames are sampled only once a process has started: py-spy re-reads the symbols of every shared
library a process loads, so native sampling from spawn slowed imports about 35x (a 1 s import took 35 s,
and the start-up profile timed out). The start-up profiles (a worker, the emulator) sample Python frames
only, which is where imports show, and leave idle samples out by py-spy's own test (without native
frames `fold` cannot tell a wait from work); the enqueue profile attaches after the first enqueue.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import procs, web
from bench.redis_server import RedisServer
from bench.systems import TaskSystem, WebSystem
from bench.tasks import NotDone, _producer, _run_dir, _tail, _wait_done

RATE = 250
WINDOW = 10.0  # seconds sampled at most per profile: py-spy's pauses can slow a process many times over
PYTHON_FRAME = re.compile(r"\((?:[^()]*\.py|<[^>]*>):\d+\)$")
TOP = 8

# innermost frame's file -> area; first match wins
AREAS = [
    ("sqlalchemy/", "run store: SQLAlchemy"),
    ("sqlmodel/", "run store: SQLAlchemy"),
    ("sqlite3/", "run store: sqlite3"),
    ("psycopg", "run store: Postgres driver"),
    ("asyncpg", "run store: Postgres driver"),
    ("redis/", "redis-py"),
    ("taskiq_redis/", "taskiq"),
    ("taskiq/", "taskiq"),
    ("aiosqlite/", "run store: sqlite3"),
    ("runtime/", "ours (runtime/)"),
    ("bench/", "the probe task (the same in every system)"),
    ("bench_functions", "the probe task (the same in every system)"),
    ("prometheus_client/", "metrics (prometheus_client)"),
    ("emulator/", "ours (emulator/)"),
    ("starlette/", "Starlette"),
    ("uvicorn/", "uvicorn"),
    ("h11/", "uvicorn"),
    ("httptools", "uvicorn"),
    ("pydantic", "pydantic"),
    ("json/", "json"),
    ("asyncio/runners.py", "event loop in C (uvloop: polling, socket I/O)"),
    ("asyncio/", "asyncio event loop"),
    ("uvloop", "asyncio event loop"),
    ("selectors", "asyncio event loop"),
    ("importlib", "imports (module loading and top-level code)"),
    ("<frozen", "imports (module loading and top-level code)"),
    ("logging/", "logging"),
    ("threading", "threads"),
    ("concurrent/", "threads"),
]


def available() -> str | None:
    """Why profiles can't be taken here, or None (py-spy missing, or no ptrace rights over our children)."""
    pyspy = _pyspy()
    if not pyspy:
        return "py-spy not installed (pip install -e '.[bench]')"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        probe = subprocess.run([pyspy, "dump", "--pid", str(child.pid)], capture_output=True, text=True, timeout=30)
    finally:
        child.kill()
        child.wait()
    if probe.returncode != 0:
        return f"py-spy cannot attach here: {(probe.stderr or probe.stdout).strip()[:300]}"
    return None


def _pyspy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


IDLE = "idle (waiting for work)"
SYSCALLS = {
    "write": "socket I/O (kernel)",
    "writev": "socket I/O (kernel)",
    "sendto": "socket I/O (kernel)",
    "sendmsg": "socket I/O (kernel)",
    "read": "socket I/O (kernel)",
    "recvfrom": "socket I/O (kernel)",
    "getpid": "getpid() in asyncio's get_running_loop",
}
# native code (below the innermost Python frame) -> area: SQLite's own work, its file writes and syncs included,
# is the run store's, not the Python function that called it
NATIVE_AREAS = [("libsqlite3", "run store: sqlite3"), ("pysqlite", "run store: sqlite3"), ("hiredis", "redis-py")]
SLEEPS = ("epoll_pwait", "epoll_wait", "select", "poll", "clock_nanosleep", "nanosleep")
WAITS = ("PyThread_acquire_lock_timed", "lock_PyThread_acquire_lock", "_queue_SimpleQueue_get_impl")


def _area(frame: str) -> str:
    for needle, area in AREAS:
        if needle in frame:
            return area
    return "other"


def _python(frame: str) -> bool:
    """A Python frame ('f (pkg/mod.py:12)', 'f (<string>:3)'), not a native one ('f (core.c:464)')."""
    return PYTHON_FRAME.search(frame) is not None


def _classify(frames: list[str]) -> str:
    """The area one sample's time belongs to, from its stack (innermost frame last)."""
    leaf = frames[-1].split(" (", 1)[0]
    near = " ".join(frames[-4:])
    if leaf in SLEEPS or any(w in near for w in WAITS):
        return IDLE
    if "take_gil" in near:
        return "waiting for the GIL"
    if leaf in SYSCALLS and "libc" in frames[-1]:
        return SYSCALLS[leaf]
    innermost = next((i for i in range(len(frames) - 1, -1, -1) if _python(frames[i])), None)  # a Python frame
    below = frames if innermost is None else frames[innermost + 1 :]  # native code the innermost one called
    for needle, area in NATIVE_AREAS:
        if any(needle in frame for frame in below):
            return area
    if "gc_collect" in near:
        return "garbage collector"
    if any("_find_and_load" in f for f in frames):
        return "imports (module loading and top-level code)"
    if "uv_run" in near or "uv__" in near:
        return "asyncio event loop"
    if innermost is not None:
        return _area(frames[innermost])
    return "other (native code, no Python frame)"


def _function(frame: str) -> str:
    """'name (path/to/site-packages/pkg/mod.py:12)' -> 'name (pkg/mod.py)'."""
    name, _, where = frame.rpartition(" (")
    parts = Path(where.rstrip(")").rsplit(":", 1)[0]).parts
    return f"{name} ({'/'.join(parts[-2:])})"


def fold(raw: Path, *, idle: bool = True) -> dict[str, Any]:
    """Fold py-spy's raw output ('[process …;]thread (tid)[: name];frame;…;leaf count' per line, native
    frames included) into: how busy each process's main thread (its lowest thread id: the event loop's)
    is, and where all threads' busy time goes. Without idle samples (`idle=False`) the first is unknown."""
    samples: list[tuple[str, int, list[str], int]] = []  # process, thread id, frames, count
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        process, tid = "", -1
        while frames and frames[0].startswith(("process ", "thread ")):
            head = frames.pop(0)
            if head.startswith("process "):
                process = head.split(":", 1)[0]
            else:
                tid = int(head[len("thread (") :].split(")", 1)[0], 0)
        if frames:
            samples.append((process, tid, frames, int(count)))
    main_tids: dict[str, int] = {}  # process -> its lowest thread id
    for process, tid, _, _ in samples:
        main_tids[process] = min(tid, main_tids.get(process, tid))

    areas: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    main_total = main_busy = busy = 0
    for process, tid, frames, n in samples:
        area = _classify(frames)
        main = main_tids[process] == tid
        main_total += n if main else 0
        if area == IDLE:
            continue
        busy += n
        main_busy += n if main else 0
        areas[area] += n
        python = [f for f in frames if _python(f)]
        functions[_function(python[-1]) if python else area] += n
        own = [f for f in frames if ("runtime/" in f or "emulator/" in f) and not f.startswith("main (")]
        ours[_function(own[-1]) if own else "(no frame of ours below the entry point)"] += n
    if not busy:
        raise RuntimeError(f"py-spy wrote no busy samples to {raw}")

    def shares(counter: Counter[str], k: int) -> list[list[Any]]:
        return [[name, n / busy] for name, n in counter.most_common(k)]

    return {
        "samples": busy,
        "main_busy": main_busy / main_total if main_total and idle else None,
        "areas": shares(areas, 12),
        "functions": shares(functions, TOP),
        "ours": shares(ours, TOP),
    }


def _record(out: Path, *, native: bool = True) -> list[str]:
    """py-spy record, raw output, every thread: with native frames and idle samples (sorted out by `fold`),
    or neither (py-spy drops idle samples itself; see the module's note)."""
    return [
        _pyspy() or "py-spy",
        "record",
        "--rate",
        str(RATE),
        *(["--native", "--idle"] if native else []),
        "--threads",
        "--format",
        "raw",
        "-o",
        str(out),
    ]


class Sampler:
    """py-spy attached to a running process until stop()."""

    def __init__(self, pid: int, out: Path, *, subprocesses: bool = False) -> None:
        cmd = [*_record(out), "--pid", str(pid)] + (["--subprocesses"] if subprocesses else [])
        self.out = out
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        time.sleep(0.3)  # attached

    def stop(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError("py-spy did not stop within 30 s") from None
        if not self.out.exists():
            raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')[-600:]}")
        return fold(self.out)


def drain(system: TaskSystem, redis: RedisServer, n: int, tmpdir: Path, size: int | None = None) -> dict[str, Any]:
    """A pre-filled queue of n tasks drained by our worker, sampled from its first task done to its last, or
    for WINDOW seconds."""
    redis.flush()
    tmpdir = _run_dir(tmpdir, "profile", system)
    _producer(system, "fill", n, redis, tmpdir, size=size)
    log = tmpdir / "worker.log"
    proc = procs.spawn(system.worker("throughput"), env=system.env(redis.url, tmpdir), cwd=system.cwd, log=log)
    with procs.running(proc):
        _wait_done(redis, proc, 1, timeout=60, log=log)  # started: the profile is of the steady state
        sampler = Sampler(proc.pid, tmpdir / "drain.raw")
        try:
            try:
                _wait_done(redis, proc, n, timeout=WINDOW, log=log)
            except NotDone:
                pass  # a window of the steady state is what the profile is for
        finally:
            result = sampler.stop()
    return result


def enqueue(system: TaskSystem, redis: RedisServer, n: int, tmpdir: Path) -> dict[str, Any]:
    """The producer's pre-fill (n single `await fn.enqueue()` calls), sampled from its first enqueue to its
    exit (its imports and start are the start-up profiles' business)."""
    redis.flush()
    tmpdir = _run_dir(tmpdir, "profile-enqueue", system)
    log = tmpdir / "producer.log"
    proc = procs.spawn(system.producer("fill", n), env=system.env(redis.url, tmpdir), cwd=system.cwd, log=log)
    with procs.running(proc):
        _wait_queued(redis, proc, timeout=60, log=log)
        sampler = Sampler(proc.pid, tmpdir / "enqueue.raw")
        try:
            code = proc.wait(timeout=WINDOW)
        except subprocess.TimeoutExpired:
            code = 0  # still enqueuing: a window of it is what the profile is for
        finally:
            result = sampler.stop()
    if code != 0:
        raise RuntimeError(f"producer exited {code}: {_tail(log)}")
    return result


def _wait_queued(redis: RedisServer, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    """Until some stream holds an entry: the producer has started and enqueued."""
    deadline = time.monotonic() + timeout
    with redis.client() as c:
        while time.monotonic() < deadline:
            if any(c.xlen(key) for key in c.scan_iter(_type="STREAM", count=1000)):
                return
            if proc.poll() is not None:
                raise RuntimeError(f"producer exited {proc.returncode} before enqueuing: {_tail(log)}")
            time.sleep(0.005)
    raise RuntimeError(f"producer enqueued nothing within {timeout:.0f}s: {_tail(log)}")


def startup(system: TaskSystem, redis: RedisServer, tmpdir: Path) -> dict[str, Any]:
    """A worker spawned under py-spy with one task queued, sampled until that task is done."""
    redis.flush()
    tmpdir = _run_dir(tmpdir, "profile-startup", system)
    _producer(system, "fill", 1, redis, tmpdir)
    out, log = tmpdir / "startup.raw", tmpdir / "worker.log"
    argv = [*_record(out, native=False), "--", *system.worker("startup")]
    proc = procs.spawn(argv, env=system.env(redis.url, tmpdir), log=log)
    with procs.running(proc, sig=signal.SIGINT):
        _wait_done(redis, proc, 1, timeout=60, log=log)
        proc.send_signal(signal.SIGINT)  # py-spy writes its file and stops its child
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    return fold(out, idle=False)


def emulator_up(tmpdir: Path) -> dict[str, Any]:
    """`emulator up` (its forked child included) under py-spy, from spawn to serving, plus 1 s."""
    from bench.startup import emulator_startup

    out = tmpdir / "emulator.raw"
    emulator_startup(tmpdir, "profile", wrap=(*_record(out, native=False), "--subprocesses", "--"))
    deadline = time.monotonic() + 30
    while not out.exists() and time.monotonic() < deadline:  # py-spy writes once the emulator is gone
        time.sleep(0.1)
    return fold(out, idle=False)


def http(system: WebSystem, redis: RedisServer, seconds: float, tmpdir: Path) -> dict[str, Any]:
    """Our web process under wrk -c50 for `seconds`, sampled throughout."""
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}/hello"
    log = tmpdir / "profile-web.log"
    proc = procs.spawn(system.argv(port), env=system.env(redis.url, tmpdir), cwd=system.cwd, log=log)
    with procs.running(proc, sig=signal.SIGINT):
        web.wait_http_ok(url, proc, timeout=30, log=log)
        web.wrk(url, 1)
        sampler = Sampler(proc.pid, tmpdir / "web.raw", subprocesses=True)
        try:
            web.wrk(url, seconds)
        finally:
            result = sampler.stop()
    return result

"""The chaos harness: a throwaway app whose tasks log their own side effects, a fleet of real `runtime
worker` processes with a killer, a Redis that can be killed, paused and restarted from its AOF, a TCP
proxy that takes the database away, and the ledger that compares what ran with what was recorded.

Executions are counted from the tasks' own side-effect log, never from our run records: each task
appends `token holder pid start|end time` (one `write` per line, O_APPEND) where `token` is the unique
`n` it was enqueued with (mapped to its run id through the enqueue's return value) and `holder` is the
worker process that ran it (the worker itself for async tasks, the parent of a sync task's child).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from tests.conftest import Process, command, stop_all, write_app

FULL = os.environ.get("CHAOS_FULL") == "1"
LEASE = 2.0  # LEASE_SECONDS for every worker: a dead worker's tasks come back within seconds
HEALTHY = ("quick", "long", "sync_long", "stall")
SUMMARIES: list[str] = []  # one line per scenario, printed at the end of the session (conftest)

MODULE = f"chaos_tasks_{uuid.uuid4().hex[:8]}"

SOURCE = """
import asyncio, os, random, signal, time
from runtime import task

def mark(n, phase, holder=None):
    pid = os.getpid()
    line = f"{n} {holder or pid} {pid} {phase} {time.time():.6f}\\n".encode()
    fd = os.open(os.environ["CHAOS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write per line: lines from many processes never interleave
    finally:
        os.close(fd)

@task
async def quick(n: int, pause: float = 0.2) -> int:
    mark(n, "start")
    await asyncio.sleep(random.uniform(0, pause))
    mark(n, "end")
    return n

@task
async def long(n: int, seconds: float) -> int:
    mark(n, "start")
    await asyncio.sleep(seconds)
    mark(n, "end")
    return n

@task
async def poison(n: int) -> None:
    mark(n, "start")
    os.kill(os.getpid(), signal.SIGKILL)

@task
def sync_long(n: int, seconds: float) -> int:
    mark(n, "start", holder=os.getppid())
    time.sleep(seconds)
    mark(n, "end", holder=os.getppid())
    return n

@task
async def stall(n: int, seconds: float) -> int:
    mark(n, "start")
    time.sleep(seconds)  # blocks the worker's event loop on purpose
    mark(n, "end")
    return n

@task
async def cron_job() -> None:
    mark(0, "cron")
"""

MANIFEST = f"""
app: chaos
defaults: {{retries: 3, timeout: 5m, concurrency: 10}}
functions:
  quick: {{handler: "{MODULE}:quick", task: {{}}}}
  long: {{handler: "{MODULE}:long", task: {{}}}}
  poison: {{handler: "{MODULE}:poison", task: {{retries: 2}}}}
  sync_long: {{handler: "{MODULE}:sync_long", task: {{timeout: 5m}}}}
  stall: {{handler: "{MODULE}:stall", task: {{}}}}
  cron_job: {{handler: "{MODULE}:cron_job", task: {{schedule: "* * * * *"}}}}
"""

POISON_DELIVERIES = 3  # poison's retries (2) + 1


def write_chaos_app(directory: Path) -> Path:
    return write_app(directory, MANIFEST, {f"{MODULE}.py": SOURCE})


# --- the side-effect log -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    token: int
    holder: int
    pid: int
    phase: str
    t: float


class SideEffects:
    """The tasks' own log, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.starts: dict[int, list[Mark]] = defaultdict(list)
        self.ends: dict[int, list[Mark]] = defaultdict(list)
        self.crons: list[Mark] = []

    def read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            token, holder, pid, phase, t = line.split()
            mark = Mark(int(token), int(holder), int(pid), phase, float(t))
            {"start": self.starts, "end": self.ends}.get(phase, {}).setdefault(mark.token, []).append(mark)
            if phase == "cron":
                self.crons.append(mark)


# --- processes ---------------------------------------------------------------------------------------


def worker_env(redis_url: str, database_url: str, log: Path, **more: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "CHAOS_LOG": str(log),
        "LEASE_SECONDS": str(LEASE),
        "WORKER_HEALTH_PORT": "0",
        "LOG_LEVEL": "warning",
        "SHUTDOWN_TIMEOUT": "5",
    } | more


class Fleet:
    """N `runtime worker` processes; kills are recorded per pid so a re-run can be told from a double run."""

    def __init__(self, manifest: Path, env: dict[str, str], kind: str = "worker") -> None:
        self.manifest = manifest
        self.env = env
        self.kind = kind
        self.live: list[Process] = []
        self.everyone: list[Process] = []
        self.deaths: dict[int, float] = {}  # pid -> when it was killed (or found dead)
        self.kills = 0
        self.lock = threading.Lock()

    def start(self, count: int = 1) -> list[Process]:
        started = []
        for _ in range(count):
            process = Process(
                [command("runtime"), self.kind, "--manifest", str(self.manifest)], self.manifest.parent, self.env
            )
            with self.lock:
                self.live.append(process)
                self.everyone.append(process)
            started.append(process)
        return started

    def pid(self, process: Process) -> int:
        return process.process.pid

    def kill(self, process: Process) -> None:
        """SIGKILL the worker process itself (not its children) and start a replacement."""
        with self.lock:
            if process not in self.live:
                return
            self.live.remove(process)
        self.deaths[self.pid(process)] = time.time()
        process.signal(signal.SIGKILL)
        process.process.wait()
        self.kills += 1

    def kill_random(self, restart: bool = True) -> None:
        with self.lock:
            victims = [p for p in self.live if p.process.poll() is None]
        if victims:
            self.kill(random.choice(victims))
            if restart:
                self.start()

    def replace_dead(self) -> int:
        """Restart workers that died by themselves (a poison task); returns how many."""
        dead = []
        with self.lock:
            for process in list(self.live):
                if process.process.poll() is not None:
                    self.live.remove(process)
                    dead.append(process)
        for process in dead:
            self.deaths.setdefault(self.pid(process), time.time())
            self.start()
        return len(dead)

    def alive_at(self, pid: int, t: float) -> bool:
        death = self.deaths.get(pid)
        return death is None or death > t

    def output(self) -> str:
        return "\n".join(f"--- {' '.join(p.args[1:2])} {p.process.pid}\n{p.output[-3000:]}" for p in self.everyone)

    def stop(self) -> None:
        stop_all(self.everyone)
        for process in self.everyone:  # a killed worker's sync children share its process group
            try:
                os.killpg(process.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


class Killer:
    """SIGKILLs a random worker every `interval` seconds (and restarts it), in a thread."""

    def __init__(self, fleet: Fleet, interval: tuple[float, float]) -> None:
        self.fleet = fleet
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.wait(random.uniform(*self.interval)):
            self.fleet.kill_random()

    def __enter__(self) -> Killer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


def process_gone(pid: int) -> bool:
    """True when the pid no longer runs (gone, or a zombie waiting for a reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


# --- Redis that dies and comes back ------------------------------------------------------------------


def sigkill_redis(server: Any) -> None:
    """SIGKILL an EmbeddedRedis: no AOF rewrite, no final fsync."""
    assert server.process is not None
    server.process.kill()
    server.process.wait()


# --- a database that goes away -----------------------------------------------------------------------


class TcpProxy:
    """A loopback TCP proxy; `down()` drops every connection and refuses new ones until `up()`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = int(self.listener.getsockname()[1])
        self.available = threading.Event()
        self.available.set()
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.available.is_set():
                client.close()  # the database is "down": the connection is cut at once
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets |= {client, server}
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with self.lock:
                self.sockets.discard(sock)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def down(self) -> None:
        self.available.clear()
        with self.lock:
            sockets = list(self.sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def up(self) -> None:
        self.available.set()

    def close(self) -> None:
        self.closed = True
        self.down()
        self.listener.close()

    def url(self, database_url: str) -> str:
        parsed = urlparse(database_url)
        credentials = parsed.netloc.rsplit("@", 1)[0] + "@" if "@" in parsed.netloc else ""
        return urlunparse(parsed._replace(netloc=f"{credentials}127.0.0.1:{self.port}"))


def postgres_address(database_url: str) -> tuple[str, int]:
    parsed = urlparse(database_url)
    return parsed.hostname or "127.0.0.1", parsed.port or 5432


# --- run records, read directly ----------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    id: str
    function: str
    token: int | None
    status: str
    attempts: int
    last_error: str | None


def read_records(database_url: str) -> dict[str, Record]:
    """Every run record, straight from the table (SQLite file or Postgres)."""
    query = "SELECT id, function, arguments, status, attempts, last_error FROM runs"
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        if not Path(path).exists():
            return {}
        with sqlite3.connect(path, timeout=30) as conn:
            try:
                rows = conn.execute(query).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return {}
                raise
    else:
        import psycopg2
        import psycopg2.errors

        with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
            try:
                cur.execute(query)
            except psycopg2.errors.UndefinedTable:
                return {}
            rows = cur.fetchall()
    out = {}
    for run_id, function, arguments, status, attempts, last_error in rows:
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
        out[run_id] = Record(run_id, function, (args or {}).get("n"), status, attempts, last_error)
    return out


# --- the ledger: what was asked, what ran, what was recorded -----------------------------------------


@dataclass
class Ledger:
    """Tokens handed to enqueue: those whose call returned (with their run ids) and those whose call raised."""

    next_token: int = 1
    runs: dict[int, str] = field(default_factory=dict)  # token -> run id (the call returned)
    function: dict[int, str] = field(default_factory=dict)
    raised: set[int] = field(default_factory=set)  # the enqueue call raised: Redis may or may not have it
    errors: list[str] = field(default_factory=list)

    def tokens(self, count: int) -> list[int]:
        start = self.next_token
        self.next_token += count
        return list(range(start, start + count))

    async def enqueue(self, runtime: Any, function: str, kwargs: Iterable[dict[str, Any]]) -> None:
        batch = list(kwargs)
        tokens = self.tokens(len(batch))
        arguments = [{"n": token, **extra} for token, extra in zip(tokens, batch, strict=True)]
        for token in tokens:
            self.function[token] = function
        try:
            ids = await runtime.app.tasks[function].enqueue_many(arguments)
        except Exception as exc:
            self.raised.update(tokens)
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        self.runs.update(zip(tokens, ids, strict=True))

    def healthy(self) -> dict[int, str]:
        return {t: r for t, r in self.runs.items() if self.function[t] in HEALTHY}


@dataclass
class Outcome:
    scenario: str
    tasks: int
    faults: str
    lost: list[int]
    disagree: Counter[str]
    disagree_examples: list[str]
    double: list[str]
    drain: float | None
    extra: str = ""

    @property
    def ok(self) -> bool:
        return not self.lost and not self.disagree and not self.double and self.drain is not None

    def line(self) -> str:
        drain = f"{self.drain:.1f}s" if self.drain is not None else "never (timed out)"
        detail = ", ".join(f"{k}={v}" for k, v in sorted(self.disagree.items()))
        return (
            f"chaos {self.scenario}: tasks={self.tasks} {self.faults} lost={len(self.lost)} "
            f"disagree={sum(self.disagree.values())}{f' ({detail})' if detail else ''} "
            f"double_runs={len(self.double)} drain={drain}{f' {self.extra}' if self.extra else ''}"
        )

    def explain(self) -> str:
        parts = [self.line()]
        if self.lost:
            parts.append(f"lost tokens (first 10): {self.lost[:10]}")
        if self.disagree_examples:
            parts.append("disagreeing records (first 10): " + "; ".join(self.disagree_examples[:10]))
        if self.double:
            parts.append("double runs (first 10): " + "; ".join(self.double[:10]))
        return "\n".join(parts)


def judge(
    scenario: str,
    ledger: Ledger,
    effects: SideEffects,
    records: dict[str, Record],
    fleet: Fleet,
    drain: float | None,
    faults: str,
    extra: str = "",
    fenced: Iterable[str] = HEALTHY,
) -> Outcome:
    """Lost runs, records that disagree with what ran, and double runs of healthy tasks while their holder lived."""
    effects.read()
    healthy = ledger.healthy()
    lost = sorted(t for t in healthy if not effects.ends.get(t))
    disagree: Counter[str] = Counter()
    examples = []
    by_id = {r.id: r for r in records.values()}
    for token, run_id in ledger.runs.items():
        if run_id not in by_id:
            disagree["missing"] += 1
            examples.append(f"{run_id} (token {token}) has no record")
    for record in records.values():
        if record.token is None and record.function == "cron_job":
            continue  # fired by a scheduler the scenario runs, not one of the ledger's runs
        expected = "failed" if record.function == "poison" else "succeeded"
        if record.status != expected:
            disagree[record.status] += 1
            ran = "ran to its end" if record.token is not None and effects.ends.get(record.token) else "never ended"
            examples.append(
                f"{record.id} {record.function} token {record.token}: {record.status} "
                f"(attempts {record.attempts}, {ran}, error {record.last_error!r})"
            )
        elif expected == "succeeded" and not effects.ends.get(record.token or -1):
            disagree["succeeded_never_ended"] += 1
            examples.append(f"{record.id} {record.function} token {record.token}: succeeded but never ended")
    double = []
    for token, starts in effects.starts.items():
        if ledger.function.get(token) not in set(fenced):
            continue
        ordered = sorted(starts, key=lambda m: m.t)
        for i, later in enumerate(ordered[1:], 1):
            holders = [m for m in ordered[:i] if fleet.alive_at(m.holder, later.t)]
            if holders:
                first = holders[0]
                double.append(
                    f"{ledger.function[token]} token {token}: started by {first.holder} at {first.t:.2f} and again "
                    f"by {later.holder} at {later.t:.2f} while {first.holder} lived"
                )
    outcome = Outcome(
        scenario, len(ledger.runs) + len(ledger.raised), faults, lost, disagree, examples, double, drain, extra
    )
    SUMMARIES.append(outcome.line())
    print(outcome.line())
    return outcome


async def wait_drained(
    ledger: Ledger,
    effects: SideEffects,
    database_url: str,
    timeout: float,
    also: Callable[[dict[str, Record]], bool] = lambda records: True,
    fleet: Fleet | None = None,
) -> tuple[float | None, dict[str, Record]]:
    """Seconds until every healthy run ended and every record is final (None if not within `timeout`)."""
    started = time.monotonic()
    records: dict[str, Record] = {}
    while True:
        if fleet is not None:
            fleet.replace_dead()
        effects.read()
        ended = all(effects.ends.get(t) for t in ledger.healthy())
        if ended:
            records = await asyncio.to_thread(read_records, database_url)
            final = all(r.status in ("succeeded", "failed") for r in records.values())
            if final and len(records) >= len(ledger.runs) and also(records):
                return time.monotonic() - started, records
        if time.monotonic() - started > timeout:
            return None, await asyncio.to_thread(read_records, database_url)
        await asyncio.sleep(0.5)


def client(manifest: Path, redis_url: str, database_url: str) -> Any:
    """The test's own Runtime (enqueues through the Python API, as a user's script would)."""
    from runtime import Runtime
    from runtime.settings import Settings

    return Runtime.from_manifest(
        manifest, Settings(redis_url=redis_url, database_url=database_url, lease_seconds=LEASE)
    )


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"set-up: {what} did not happen within {timeout} s")
        await asyncio.sleep(0.1)

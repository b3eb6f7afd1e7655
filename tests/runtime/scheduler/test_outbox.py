"""The outbox: an enqueue Redis could not take (it was down: nothing was sent) returns its id, its saved
record waits as unsent, and the scheduler's leader queues it once Redis answers. Redis here is killed
with SIGKILL and restarted from its AOF on the same port, with a real scheduler and worker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import redis

from emulator.embedded_redis import EmbeddedRedis
from runtime.errors import EnqueueUncertain
from runtime.queue.stream_sends import NotSent
from runtime.scheduler.outbox import Outbox
from runtime.store.outbox import UNSENT
from tests.conftest import write_app
from tests.runtime.workers import MARK, marked_lines, start_worker, started_runtime, wait_until, worker_env

MODULE = f"outbox_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
from runtime import task

@task
async def effect(n: int) -> int:
    mark(fn="effect", n=n)
    return n
"""
)

MANIFEST = f"""
app: outbox-test
defaults: {{retries: 3, timeout: 1m, concurrency: 16}}
functions:
  effect: {{handler: "{MODULE}:effect", task: {{}}}}
"""


@pytest.fixture
def own_redis(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A Redis of this test's own, with its AOF on: it is killed and restarted."""
    server = EmbeddedRedis(tmp_path / "redis", persistent=True)
    server.start()
    yield server
    server.stop()


def sigkill(server: EmbeddedRedis) -> None:
    assert server.process is not None
    server.process.kill()
    server.process.wait()


async def test_5000_runs_accepted_while_redis_is_down_are_queued_within_10_s_of_its_return(
    tmp_path: Path, own_redis: EmbeddedRedis, spawn: Any, database_url: str
) -> None:
    app = write_app(tmp_path / "app", MANIFEST, {f"{MODULE}.py": SOURCE})
    env = worker_env(own_redis.url, tmp_path, DATABASE_URL=database_url)
    scheduler = spawn(["runtime", "scheduler", "--manifest", str(app)], app.parent, env)
    scheduler.wait_for("holds the lock")
    stream = "{outbox-test:default}:tasks"
    async with started_runtime(app, env) as rt:
        sigkill(own_redis)
        await asyncio.sleep(0.2)  # the client's pooled connections see the server gone
        began = time.monotonic()
        ids = await rt.enqueue(rt.app.tasks["effect"], [{"n": n} for n in range(5000)])
        accepted = time.monotonic() - began
        assert len(set(ids)) == 5000  # accepted: on the old code, EnqueueUncertain ("Connection refused")
        saved = await rt.store.get_many(ids)  # unsent (or claimed by the scheduler's try, and put back)
        assert len(saved) == 5000 and {run.status for run in saved.values()} == {"queued"}
        own_redis.start(port=own_redis.port)
        back = time.monotonic()
        client = redis.Redis.from_url(own_redis.url)
        await wait_until(lambda: client.xlen(stream) >= 5000, 10, "5,000 outbox runs in the stream")
        delivered = time.monotonic() - back
        await asyncio.sleep(1.5)  # a second pass of the outbox sends nothing again
        assert client.xlen(stream) == 5000
        sent = {entry[1][b"data"] for entry in client.xrange(stream)}
        assert sum(run_id.encode() in data for data in sent for run_id in ids[:50]) == 50
        print(f"5000 enqueues accepted in {accepted:.2f} s with Redis down; in the stream {delivered:.2f} s after")


async def test_every_accepted_enqueue_runs_exactly_once_across_a_redis_sigkill(
    tmp_path: Path, own_redis: EmbeddedRedis, spawn: Any
) -> None:
    """Four loops enqueue one run at a time; Redis is SIGKILLed and restarted 5 s later. Every enqueue that
    returned an id runs exactly once (counted from the task's own side effects); none runs twice; and
    enqueues made while Redis was down returned their ids before it came back."""
    app = write_app(tmp_path / "app", MANIFEST, {f"{MODULE}.py": SOURCE})
    env = worker_env(own_redis.url, tmp_path, RECONCILE_SECONDS="1")
    scheduler = spawn(["runtime", "scheduler", "--manifest", str(app)], app.parent, env)
    scheduler.wait_for("holds the lock")
    start_worker(spawn, app, env)
    accepted: dict[int, str] = {}
    uncertain: list[int] = []
    during_outage: list[int] = []
    down = asyncio.Event()
    numbers = iter(range(1_000_000))
    stop_at = time.monotonic() + 9.0
    async with started_runtime(app, env) as rt:
        fn = rt.app.tasks["effect"]

        async def loop() -> None:
            while time.monotonic() < stop_at:
                n = next(numbers)
                outage = down.is_set()
                try:
                    [run_id] = await rt.enqueue(fn, [{"n": n}])
                except EnqueueUncertain:
                    uncertain.append(n)
                    continue
                accepted[n] = run_id
                if outage and down.is_set():  # returned while Redis was still down
                    during_outage.append(n)
                await asyncio.sleep(0.01)

        async def kill_and_restart() -> None:
            await asyncio.sleep(2.0)
            sigkill(own_redis)
            down.set()
            await asyncio.sleep(5.0)
            down.clear()
            own_redis.start(port=own_redis.port)

        await asyncio.gather(*(loop() for _ in range(4)), kill_and_restart())
        log = Path(env["TEST_LOG"])

        def all_ran() -> bool:
            return set(accepted) <= {line["n"] for line in marked_lines(log, "effect")}

        await wait_until(all_ran, 40, f"the {len(accepted)} accepted runs to run")
        await asyncio.sleep(2.0)  # time for a duplicate to show
    runs = Counter(line["n"] for line in marked_lines(log, "effect"))
    twice = {n: count for n, count in runs.items() if count > 1}
    assert not twice, f"ran more than once: {twice}"
    assert set(runs) - set(accepted) <= set(uncertain)  # nothing that was not enqueued ran
    assert len(during_outage) >= 4, f"only {len(during_outage)} enqueues returned while Redis was down"
    print(
        f"accepted={len(accepted)} during_outage={len(during_outage)} uncertain={len(uncertain)} "
        f"uncertain_that_ran={len(set(uncertain) & set(runs))}"
    )


async def test_a_delayed_run_keeps_its_due_time_and_a_page_redis_refuses_goes_back(tmp_path: Path) -> None:
    """In process: a delayed enqueue made while Redis is down waits unsent; a send while Redis is still
    down puts the page back; once Redis answers it lands in the delayed set at its own due time."""
    server = EmbeddedRedis(tmp_path / "redis", persistent=True)
    server.start()
    app = write_app(tmp_path / "app", MANIFEST, {f"{MODULE}.py": SOURCE})
    try:
        async with started_runtime(app, worker_env(server.url, tmp_path)) as rt:
            sigkill(server)
            await asyncio.sleep(0.1)
            [later] = await rt.enqueue(rt.app.tasks["effect"], [{"n": 1}], delay=600)
            [now] = await rt.enqueue(rt.app.tasks["effect"], [{"n": 2}])
            outbox = Outbox(rt)
            with pytest.raises(NotSent):
                await outbox.send()
            runs = await rt.store.get_many([later, now])
            assert {run.version for run in runs.values()} == {UNSENT}  # put back: nothing was sent
            server.start(port=server.port)
            assert await outbox.send() == 2
            assert await outbox.send() == 0  # sent once
            client = redis.Redis.from_url(server.url)
            [(member, score)] = client.zrange("{outbox-test:default}:delayed", 0, -1, withscores=True)
            scheduled_for = runs[later].scheduled_for
            assert later.encode() in member and scheduled_for is not None
            assert abs(score - scheduled_for.replace(tzinfo=UTC).timestamp()) < 0.01
            [(_, fields)] = client.xrange("{outbox-test:default}:tasks")
            assert now.encode() in fields[b"data"]
            assert {run.status for run in (await rt.store.get_many([later, now])).values()} == {"scheduled", "queued"}
    finally:
        server.stop()

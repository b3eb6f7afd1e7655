"""Events on real workers: `task: {on: [...]}` starts one run per event (an id seen in 24 h starts none; data
that do not fit make a failed run that says why); `ctx.wait_for_event` holds no worker, ends with the matching
event's data or None at its timeout, and never misses an event sent while the run was on its way to waiting
or while no worker was up. Counted from the tasks' side-effect log."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.exceptions import ResponseError

from runtime import ArgumentsError, Runtime
from runtime.app.events import deliver
from runtime.dashboard.app import create_dashboard_app
from runtime.durable.events import Events, Wait
from runtime.errors import EnqueueFailed
from tests.conftest import command, write_app
from tests.runtime.workers import MARK, events, start_worker, started_runtime, wait_until

MODULE = f"events_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
import asyncio
from runtime import Context, task

@task
async def on_created(briefing_id: int) -> int:
    mark(fn="on_created", briefing_id=briefing_id)
    return briefing_id

@task
async def on_filed(briefing_id: int) -> int:
    mark(fn="on_filed", briefing_id=briefing_id)
    return briefing_id

@task
async def audit(briefing_id: int) -> int:
    mark(fn="audit", briefing_id=briefing_id)
    return briefing_id

@task
async def approve(ctx: Context, briefing_id: int, timeout: float = 20, pause: float = 0) -> object:
    mark(fn="approve", phase="start")
    await ctx.step.run("pause", asyncio.sleep, pause)
    data = await ctx.wait_for_event("approval", event="briefing.approved", match="briefing_id", timeout=timeout)
    mark(fn="approve", phase="end", data=data)
    return data if data is not None else "expired"
"""
)

MANIFEST = f"""
app: events-test
queues: {{default: 1, audit: 1}}
functions:
  on_created: {{handler: "{MODULE}:on_created", task: {{on: [briefing.created]}}}}
  on_filed: {{handler: "{MODULE}:on_filed", task: {{on: [briefing.filed]}}}}
  audit: {{handler: "{MODULE}:audit", task: {{on: [briefing.filed], queue: audit}}}}
  approve: {{handler: "{MODULE}:approve", task: {{}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("events"), MANIFEST, {f"{MODULE}.py": SOURCE})


async def until_status(rt: Runtime, run_id: str, status: str, timeout: float = 20) -> None:
    async def check() -> bool:
        run = await rt.store.get(run_id)
        return run is not None and run.status == status

    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never became {status}: {await rt.store.get(run_id)}")


async def test_an_event_starts_one_run_per_listener_once_per_id(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    sent = await deliver(rt, "briefing.created", {"briefing_id": 3}, "created-3")
    assert sent["duplicate"] is False and len(sent["started"]) == 1 and sent["woke"] == []
    run = await rt.wait(sent["started"][0], timeout=20)
    assert (run.function, run.status, run.result) == ("on_created", "succeeded", 3)
    again = await deliver(rt, "briefing.created", {"briefing_id": 3}, "created-3")
    assert again["duplicate"] is True and again["started"] == []
    misfit = await deliver(rt, "briefing.created", {"briefing": "three"}, None)
    failed = await rt.store.get(misfit["started"][0])
    assert failed is not None and (failed.status, failed.error_type) == ("failed", "ArgumentsError")
    assert "briefing_id: Field required" in (failed.last_error or "")
    await asyncio.sleep(0.5)
    assert [e["briefing_id"] for e in events(env, "on_created")] == [3]
    listed = await Events(rt.broker.redis, rt.keys).recent()
    assert [e["name"] for e in listed] == ["briefing.created", "briefing.created"]


async def test_a_wait_ends_with_the_matching_event_and_holds_no_worker(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    run_id = await rt.app.tasks["approve"].enqueue(briefing_id=7)
    await until_status(rt, run_id, "waiting")
    run = await rt.store.get(run_id)
    assert run is not None and run.waiting_for == "event 'briefing.approved' with briefing_id=7"
    other = await deliver(rt, "briefing.approved", {"briefing_id": 8, "by": "eve"}, None)
    assert other["woke"] == []
    sent = await deliver(rt, "briefing.approved", {"briefing_id": 7, "by": "ann"}, None)
    assert sent["woke"] == [run_id]
    done = await rt.wait(run_id, timeout=10)
    assert (done.status, done.result, done.attempts) == ("succeeded", {"briefing_id": 7, "by": "ann"}, 1)
    assert [e["phase"] for e in events(env, "approve")] == ["start", "start", "end"]


async def test_a_woken_run_starts_again_at_once_not_at_the_next_pass_over_delayed_runs(
    spawn: Any, app: Path, env, rt
) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    ids = [await rt.app.tasks["approve"].enqueue(briefing_id=100 + n) for n in range(5)]
    for run_id in ids:
        await until_status(rt, run_id, "waiting")
    await asyncio.sleep(0.5)  # every suspend is acked: each message waits in the delayed set
    lateness = []
    for n, run_id in enumerate(ids):
        sent = time.time()
        await deliver(rt, "briefing.approved", {"briefing_id": 100 + n}, None)
        await rt.wait(run_id, timeout=10)
        [resumed] = [e for e in events(env, "approve") if e["phase"] == "end" and e["data"]["briefing_id"] == 100 + n]
        lateness.append(resumed["t"] - sent)
    assert max(lateness) < 0.1, lateness  # it was moved to the stream by the next pass (up to 0.25 s later)


async def test_a_wait_times_out_with_none(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks["approve"].enqueue(briefing_id=1, timeout=1.5), timeout=20)
    assert (run.status, run.result) == ("succeeded", "expired")


async def test_an_event_sent_between_a_waits_start_and_its_registration_is_not_missed(rt: Runtime) -> None:
    # a run saves when its wait began, then its worker registers it: an event sent in between is in the log,
    # and the registration finds it in the same script instead of registering
    bus = Events(rt.broker.redis, rt.keys)
    began = int(time.time() * 1000)
    wait = Wait("briefing.approved", "r1/approval", began, "briefing_id", 5)
    sent = await deliver(rt, "briefing.approved", {"briefing_id": 5}, None)
    assert sent["woke"] == []  # nothing was registered yet
    waiter = {"field": "briefing_id", "value": 5, "queue": "default", "run_id": "r1", "message": "{}"}
    assert await bus.register(wait, waiter) == {"briefing_id": 5}
    assert await bus.got(wait) == {"briefing_id": 5}  # handed over: the run that resumes for it gets it
    # a wait that began after that event does not take it: it registers, and the next event ends it
    later = Wait("briefing.approved", "r2/approval", int(time.time() * 1000) + 1, "briefing_id", 5)
    await asyncio.sleep(0.01)
    assert await bus.register(later, waiter | {"run_id": "r2"}) is None
    assert (await deliver(rt, "briefing.approved", {"briefing_id": 5}, None))["woke"] == ["r2"]
    assert await bus.got(later) == {"briefing_id": 5}
    # a wait whose time is up takes an event that came in time, else unregisters and gets None
    assert await bus.expire(Wait("briefing.approved", "r3/approval", began, "briefing_id", 5)) == {"briefing_id": 5}
    none = Wait("briefing.approved", "r4/approval", began, "briefing_id", 6)
    assert await bus.register(none, waiter | {"run_id": "r4"}) is None
    assert await bus.expire(none) is None
    assert (await deliver(rt, "briefing.approved", {"briefing_id": 6}, None))["woke"] == []


async def test_an_event_sent_while_no_worker_runs_wakes_the_run_when_one_starts(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    worker = start_worker(spawn, app, env)
    run_id = await rt.app.tasks["approve"].enqueue(briefing_id=9)
    await until_status(rt, run_id, "waiting")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert (await deliver(rt, "briefing.approved", {"briefing_id": 9}, None))["woke"] == [run_id]
    await asyncio.sleep(1)
    assert (await rt.store.get(run_id)).status == "waiting"  # type: ignore[union-attr]
    start_worker(spawn, app, env)
    done = await rt.wait(run_id, timeout=20)
    assert (done.status, done.result) == ("succeeded", {"briefing_id": 9})


async def test_a_wait_redis_refused_to_register_is_registered_once_redis_is_back(
    spawn: Any, app: Path, env, rt
) -> None:  # type: ignore[no-untyped-def]
    # Redis refuses writes (as a primary that lost its replicas does: NOREPLICAS) while the run goes to wait:
    # its look for the event (a read) answers, its registration (a write) fails. Once Redis takes writes again,
    # an event sent then ends the wait at once, not at its timeout
    worker = start_worker(spawn, app, env)
    redis = rt.broker.redis
    run_id = await rt.app.tasks["approve"].enqueue(briefing_id=11, timeout=60, pause=1.5)
    await wait_until(lambda: bool(events(env, "approve")), 20, "the run to start")
    await redis.config_set("min-replicas-to-write", 1)
    try:
        worker.wait_for("cannot register its wait")
    finally:
        await redis.config_set("min-replicas-to-write", 0)
    await asyncio.sleep(1)
    await deliver(rt, "briefing.approved", {"briefing_id": 11, "by": "ann"}, None)
    done = await rt.wait(run_id, timeout=15)
    assert (done.status, done.result, done.attempts) == ("succeeded", {"briefing_id": 11, "by": "ann"}, 1)


async def test_an_event_redis_refused_half_way_is_sent_again_and_queues_each_run_once(
    spawn: Any, app: Path, env, rt
) -> None:  # type: ignore[no-untyped-def]
    # Redis takes the event's id and its first run, then refuses the second run's message (by ACL, the audit
    # queue's keys are denied): the send fails; the same id sent again starts the missing run, not the first
    # one again; once it went through, the id is a duplicate
    redis, tag = rt.broker.redis, rt.app.name
    allowed = [f"~{{{tag}:events}}*", f"~{{{tag}:default}}*"]
    await redis.execute_command("ACL", "SETUSER", "default", "resetkeys", *allowed)
    try:
        with pytest.raises(EnqueueFailed):
            await deliver(rt, "briefing.filed", {"briefing_id": 21}, "filed-21")
    finally:
        await redis.execute_command("ACL", "SETUSER", "default", "resetkeys", "~*")
    start_worker(spawn, app, env)
    sent = await deliver(rt, "briefing.filed", {"briefing_id": 21}, "filed-21")
    assert sent["duplicate"] is False and len(sent["started"]) == 2
    for run_id in sent["started"]:
        assert (await rt.wait(run_id, timeout=20)).status == "succeeded"
    assert (await deliver(rt, "briefing.filed", {"briefing_id": 21}, "filed-21"))["duplicate"] is True
    await asyncio.sleep(0.5)
    assert sorted((e["fn"], e["briefing_id"]) for e in events(env)) == [("audit", 21), ("on_filed", 21)]


async def test_a_wait_an_event_claimed_but_redis_refused_to_wake_is_woken_when_the_event_is_sent_again(
    spawn: Any, app: Path, env, rt
) -> None:  # type: ignore[no-untyped-def]
    # the send claims the wait (the events' keys), then Redis refuses to move the run's message (by ACL, the
    # queue's keys are denied): the same id sent again wakes the run at once, not at its wait's end
    start_worker(spawn, app, env)
    run_id = await rt.app.tasks["approve"].enqueue(briefing_id=41, timeout=60)
    await until_status(rt, run_id, "waiting")
    await asyncio.sleep(0.5)  # its suspend is acked: its message waits in the delayed set
    redis = rt.broker.redis
    await redis.execute_command("ACL", "SETUSER", "default", "resetkeys", f"~{{{rt.app.name}:events}}*")
    try:
        with pytest.raises(ResponseError):
            await deliver(rt, "briefing.approved", {"briefing_id": 41}, "approved-41")
    finally:
        await redis.execute_command("ACL", "SETUSER", "default", "resetkeys", "~*")
    again = await deliver(rt, "briefing.approved", {"briefing_id": 41}, "approved-41")
    assert (again["duplicate"], again["woke"]) == (False, [run_id])
    done = await rt.wait(run_id, timeout=10)
    assert (done.status, done.result) == ("succeeded", {"briefing_id": 41})
    assert (await deliver(rt, "briefing.approved", {"briefing_id": 41}, "approved-41"))["duplicate"] is True


async def test_an_id_sent_again_after_its_window_is_a_new_event_with_new_runs(spawn: Any, app: Path, env) -> None:  # type: ignore[no-untyped-def]
    async with started_runtime(app, env, event_dedupe_seconds=0.5) as rt:
        start_worker(spawn, app, env)
        first = await deliver(rt, "briefing.created", {"briefing_id": 31}, "created-31")
        old = await rt.wait(first["started"][0], timeout=20)
        assert (await deliver(rt, "briefing.created", {"briefing_id": 31}, "created-31"))["duplicate"] is True
        await asyncio.sleep(0.6)  # EVENT_DEDUPE_SECONDS later
        second = await deliver(rt, "briefing.created", {"briefing_id": 31}, "created-31")
        assert second["duplicate"] is False and len(second["started"]) == 1 and second["started"] != first["started"]
        new = await rt.wait(second["started"][0], timeout=20)
        assert (new.status, new.result) == ("succeeded", 31)
        assert (await rt.store.get(old.id)).model_dump() == old.model_dump()  # type: ignore[union-attr]
        assert [e["briefing_id"] for e in events(env, "on_created")] == [31, 31]


@pytest.mark.parametrize(
    ("name", "data", "event_id", "message"),
    [
        ("bad name", {}, None, "event name 'bad name' is not a dotted name"),
        ("a..b", {}, None, "event name 'a..b' is not a dotted name"),
        ("ok.name", [1], None, "event ok.name: data must be a JSON object, not list"),
        ("ok.name", {"x": {1, 2}}, None, "event ok.name: data cannot be sent as JSON"),
        ("ok.name", {"x": "y" * 2_000_000}, None, "event ok.name: data is 2000008 bytes of JSON; at most 1048576"),
        ("ok.name", {}, "", "event ok.name: id must be a string of 1 to 200 characters"),
    ],
)
async def test_a_bad_event_is_refused_in_one_line(
    rt: Runtime, name: Any, data: Any, event_id: Any, message: str
) -> None:
    with pytest.raises(ArgumentsError) as caught:
        await deliver(rt, name, data, event_id)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def cli(*args: str, app: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`runtime ARGS` as a real subprocess on the test's Redis and database."""
    full = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    full |= {"REDIS_URL": env["REDIS_URL"], "DATABASE_URL": env["DATABASE_URL"]}
    return subprocess.run(
        [command("runtime"), *args, "--manifest", str(app)], env=full, capture_output=True, text=True, timeout=60
    )


async def test_the_cli_sends_and_lists_events(app: Path, env: dict[str, str], rt: Runtime) -> None:
    sent = await asyncio.to_thread(
        cli, "events", "send", "briefing.created", "--data", '{"briefing_id": 4}', "--id", "c4", app=app, env=env
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("sent briefing.created (c4): started 1 run(s), woke 0")
    again = await asyncio.to_thread(
        cli, "events", "send", "briefing.created", "--data", '{"briefing_id": 4}', "--id", "c4", app=app, env=env
    )
    assert again.stdout.strip() == "event c4 was sent within 24 h already: nothing done"
    listed = await asyncio.to_thread(cli, "events", "list", "--json", app=app, env=env)
    assert [(e["name"], e["id"], e["data"]) for e in json.loads(listed.stdout)] == [
        ("briefing.created", "c4", {"briefing_id": 4})
    ]
    for args, message in (
        (["events", "send", "no good"], "error: event name 'no good' is not a dotted name"),
        (["events", "send", "a.b", "--data", "[1]"], "error: event a.b: data must be a JSON object, not list"),
        (["events", "send", "a.b", "--data", "{"], "error: --data is not JSON"),
    ):
        bad = await asyncio.to_thread(cli, *args, app=app, env=env)
        assert bad.returncode == 1 and bad.stderr.startswith(message) and bad.stderr.count("\n") == 1, bad.stderr


async def test_the_dashboard_api_sends_and_lists_events(rt: Runtime) -> None:
    transport = httpx.ASGITransport(app=create_dashboard_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        sent = await client.post("/api/events", json={"name": "briefing.created", "data": {"briefing_id": 2}})
        assert sent.status_code == 202 and len(sent.json()["started"]) == 1
        bad = await client.post("/api/events", json={"name": "x y"})
        assert bad.status_code == 422 and "is not a dotted name" in bad.json()["error"]
        shape = await client.post("/api/events", json={"event": "a.b"})
        assert shape.status_code == 422
        listed = (await client.get("/api/events")).json()
        assert [e["name"] for e in listed] == ["briefing.created"]

"""Arguments and enqueue options never share a namespace: `fn.enqueue(**arguments)` takes the function's own
arguments, whatever their names, and `fn.with_options(...)` carries ours. The tasks run on a real worker and say
what they received in their own side-effect log."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runtime import ArgumentsError, Runtime
from tests.conftest import write_app
from tests.runtime.workers import MARK, events, start_worker, started_runtime, wait_until, worker_env

MODULE = f"options_{uuid.uuid4().hex[:8]}"

# Every name our options use, and names pydantic keeps for itself, are the task's own parameters here.
NAMES = ["key", "queue", "delay", "at", "deadline", "self", "_token", "model_config", "model_dump", "schema"]

SOURCE = (
    MARK
    + f"""
from runtime import Context, task

@task
async def named({", ".join(f"{name}: str = ''" for name in NAMES)}, ctx: Context = None) -> None:
    mark(fn="named", got={{{", ".join(f"{name!r}: {name}" for name in NAMES)}}}, queue_of_run=ctx.run_id)

@task
async def plain(n: int) -> None:
    mark(fn="plain", n=n)
"""
)

MANIFEST = f"""
app: options-test
queues: {{default: 1, low: 1}}
functions:
  named: {{handler: "{MODULE}:named", task: {{}}}}
  plain: {{handler: "{MODULE}:plain", task: {{}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("options"), MANIFEST, {f"{MODULE}.py": SOURCE})


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return worker_env(redis_url, tmp_path, LOG_LEVEL="warning")


@pytest.fixture
async def rt(app: Path, env: dict[str, str]) -> AsyncIterator[Runtime]:
    async with started_runtime(app, env) as runtime:
        yield runtime


async def test_a_parameter_named_like_an_option_is_the_functions_own(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    arguments = {name: f"value of {name}" for name in NAMES}
    run_id = await rt.app.tasks["named"].enqueue(**arguments)
    record = await rt.store.get(run_id)
    assert record is not None
    assert record.arguments == arguments
    assert record.queue == "default" and record.status == "queued"  # not sent to a queue called "value of queue"
    start_worker(spawn, app, env, LOG_LEVEL="info")
    await wait_until(lambda: len(events(env, "named")) == 1, 30, "the run")
    assert events(env, "named")[0]["got"] == arguments


async def test_options_go_through_with_options(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    plain = rt.app.tasks["plain"]
    to_low = plain.with_options(queue="low")
    low = await to_low.with_options(key="report:42").enqueue(n=1)
    assert await to_low.with_options(key="report:42").enqueue(n=2) == low  # the key holds: the same run
    later = await plain.with_options(delay=3600).enqueue(n=3)
    when = datetime.now(UTC) + timedelta(hours=1)
    both = await plain.with_options(at=when, deadline=7200).enqueue_many([{"n": 4}, {"n": 5}])
    records = {run_id: await rt.store.get(run_id) for run_id in [low, later, *both]}
    assert records[low].queue == "low"  # type: ignore[union-attr]
    assert {records[r].status for r in [later, *both]} == {"scheduled"}  # type: ignore[union-attr]
    start_worker(spawn, app, env, LOG_LEVEL="info")
    await wait_until(lambda: len(events(env, "plain")) == 1, 30, "the low run")
    assert [e["n"] for e in events(env, "plain")] == [1]


async def test_with_options_chains_and_the_later_option_wins(rt: Runtime) -> None:
    plain = rt.app.tasks["plain"]
    bound = plain.with_options(queue="low", delay=5).with_options(queue="default")
    assert bound.options == {"queue": "default", "delay": 5}
    assert plain.with_options().options == {}


async def test_an_option_given_as_an_argument_is_a_bad_argument(rt: Runtime) -> None:
    # the second wave's `fn.enqueue(n=1, queue="low")` form: `queue` is not a parameter of `plain`
    with pytest.raises(ArgumentsError, match="bad arguments for 'plain': queue: unexpected argument"):
        await rt.app.tasks["plain"].enqueue(n=1, queue="low")
    with pytest.raises(TypeError, match="unexpected keyword argument 'n'"):
        rt.app.tasks["plain"].with_options(n=1)  # type: ignore[call-arg]
    assert await rt.store.list() == []

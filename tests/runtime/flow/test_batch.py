"""Batches on a real worker: items join the open batch of their key; a run gets `size` items at once when they
are there, or fewer after `timeout`; every item runs exactly once; a bad item fails its enqueue, naming it, and
queues none of its items. Counted from the task's side-effect log."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import ArgumentsError
from runtime.flow.state import limits_now
from tests.conftest import write_app
from tests.runtime.workers import MARK, events, start_worker, wait_until

MODULE = f"batch_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
import asyncio
from pydantic import BaseModel
from runtime import task

class Item(BaseModel):
    customer: str
    n: int

@task
async def digest(items: list[Item]) -> int:
    mark(fn="digest", customers=sorted({i.customer for i in items}), ns=[i.n for i in items])
    await asyncio.sleep(float(os.environ.get("NAP", "0")))
    return len(items)
"""
)

MANIFEST = f"""
app: batch-test
functions:
  digest: {{handler: "{MODULE}:digest", task: {{batch: {{size: 10, timeout: 2s, key: customer}}}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("batch"), MANIFEST, {f"{MODULE}.py": SOURCE})


def item(customer: str, n: int) -> dict[str, Any]:
    return {"customer": customer, "n": n}


async def test_twenty_five_items_run_as_ten_ten_and_five_after_the_timeout(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    digest = rt.app.tasks["digest"]
    first = time.time()
    ids = [await digest.enqueue(items=[item("acme", n)]) for n in range(8)]
    ids.append(await digest.enqueue(items=[item("acme", n) for n in range(8, 25)]))  # fills two, opens a third
    enqueued = time.time()
    assert len(set(ids)) == 1  # the first nine enqueues all began in the first batch
    assert uuid.UUID(ids[0]).version == 7  # a batch's run id is time-ordered like any other
    await wait_until(lambda: len(events(env, "digest")) == 2, 5, "the two full batches")
    full = events(env, "digest")
    assert all(e["t"] - enqueued < 1.0 for e in full), [e["t"] - enqueued for e in full]  # queued at once
    await wait_until(lambda: len(events(env, "digest")) == 3, 10, "the last batch")
    ran = events(env, "digest")
    assert sorted(len(e["ns"]) for e in ran) == [5, 10, 10]
    assert 1.9 <= ran[2]["t"] - enqueued < 2.8, ran[2]["t"] - enqueued  # the 5 ran after the timeout
    assert ran[0]["t"] - first < 2.0
    assert sorted(n for e in ran for n in e["ns"]) == list(range(25))  # every item exactly once
    done = await rt.wait(ids[0], timeout=10)
    assert done.status == "succeeded" and done.result == 10
    assert [i["n"] for i in done.arguments["items"]] == list(range(10))  # the record shows the batch's items
    await asyncio.sleep(1)
    assert len(events(env, "digest")) == 3
    [row] = [r for r in await limits_now(rt) if r["function"] == "digest"]  # `runtime limits` counts them
    assert (row["limit"], row["batched"]) == ("batch", 25), row


async def test_items_are_batched_per_key(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    digest = rt.app.tasks["digest"]
    for n in range(12):
        await digest.enqueue(items=[item("a", n), item("b", 100 + n)])
    await wait_until(lambda: len(events(env, "digest")) == 4, 10, "two batches per key")
    ran = events(env, "digest")
    assert all(len(e["customers"]) == 1 for e in ran), ran  # a batch holds one key's items
    sizes = Counter((e["customers"][0], len(e["ns"])) for e in ran)
    assert sizes == Counter({("a", 10): 1, ("a", 2): 1, ("b", 10): 1, ("b", 2): 1})
    assert sorted(n for e in ran for n in e["ns"]) == [*range(12), *range(100, 112)]


async def test_a_bad_item_fails_its_enqueue_and_queues_none_of_its_items(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    digest = rt.app.tasks["digest"]
    with pytest.raises(ArgumentsError, match=r"bad arguments for 'digest': items\.1\.n: "):
        await digest.enqueue(items=[item("acme", 0), {"customer": "acme", "n": "many"}])
    with pytest.raises(ArgumentsError, match="a batch enqueue needs at least one item"):
        await digest.enqueue(items=[])
    run_id = await digest.enqueue(items=[item("acme", n) for n in range(1, 11)])
    assert (await rt.wait(run_id, timeout=10)).status == "succeeded"
    await asyncio.sleep(2.5)  # past the timeout: nothing left over from the failed enqueue
    assert [e["ns"] for e in events(env, "digest")] == [list(range(1, 11))]


async def test_a_batch_run_whose_worker_died_runs_again_with_the_same_items(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    first = start_worker(spawn, app, env, NAP="30")
    run_ids = {await rt.app.tasks["digest"].enqueue(items=[item("acme", n)]) for n in range(10)}
    [run_id] = run_ids
    await wait_until(lambda: len(events(env, "digest")) == 1, 10, "the batch to start")
    first.signal(signal.SIGKILL)
    first.wait(5)
    start_worker(spawn, app, env)
    done = await rt.wait(run_id, timeout=30)  # 2 s leases
    assert (done.status, done.result, done.attempts) == ("succeeded", 10, 2)
    assert [e["ns"] for e in events(env, "digest")] == [list(range(10))] * 2  # its items were read, not popped


async def test_items_after_a_cancel_open_a_new_batch(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    digest = rt.app.tasks["digest"]
    [first] = {await digest.enqueue(items=[item("acme", n)]) for n in range(3)}
    assert (await rt.cancel(first)).status == "cancelled"
    [second] = {await digest.enqueue(items=[item("acme", n)]) for n in range(3, 5)}
    assert second != first
    assert (await rt.wait(second, timeout=10)).status == "succeeded"
    await asyncio.sleep(0.5)
    assert [e["ns"] for e in events(env, "digest")] == [[3, 4]]  # nothing joined the cancelled batch

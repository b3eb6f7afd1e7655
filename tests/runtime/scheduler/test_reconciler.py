"""The reconciler: a record whose message is gone from Redis is queued again (or failed with the reason)."""

from __future__ import annotations

import asyncio

from runtime.app.connections import Runtime
from runtime.scheduler.reconciler import Reconciler
from runtime.settings import Settings
from runtime.worker.worker import Worker
from tests.runtime.app.test_enqueue import make_app


async def test_a_record_without_a_message_is_requeued_and_runs(tmp_path, redis_url):  # type: ignore[no-untyped-def]
    settings = Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/r.db", lease_seconds=0.5)
    async with Runtime.from_manifest(make_app(tmp_path), settings) as rt:
        lost = await rt.app.tasks["generate"].enqueue(briefing_id=1)
        kept = await rt.app.tasks["generate"].enqueue(briefing_id=2)
        later = await rt.app.tasks["generate"].with_options(delay=3600).enqueue(briefing_id=3)
        [(_, entries)] = await rt.broker.redis.xread({rt.keys.queue("default").stream: "0"})
        lost_entry = next(entry_id for entry_id, fields in entries if lost.encode() in fields[b"data"])
        await rt.broker.redis.xdel(rt.keys.queue("default").stream, lost_entry)  # Redis lost the message
        reconciler = Reconciler(rt, grace=0.3)
        assert await reconciler.reconcile() == []  # within the grace period: left alone
        await asyncio.sleep(0.4)
        assert await reconciler.reconcile() == [lost]  # the kept and the delayed ones have messages
        assert await reconciler.reconcile() == []  # requeued: its record is fresh again
        worker = Worker(rt)
        running = asyncio.create_task(worker.run())
        assert (await rt.wait(lost, timeout=10)).status == "succeeded"
        assert (await rt.wait(kept, timeout=10)).status == "succeeded"
        worker.stop()
        await running
        assert (await rt.store.get(later)).status == "scheduled"  # type: ignore[union-attr]


async def test_a_lost_run_of_a_removed_function_fails_with_the_reason(tmp_path, redis_url):  # type: ignore[no-untyped-def]
    settings = Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/r.db")
    async with Runtime.from_manifest(make_app(tmp_path), settings) as rt:
        run_id = await rt.app.tasks["generate"].enqueue(briefing_id=1)
        await rt.broker.redis.delete(rt.keys.queue("default").stream)
        del rt.app.tasks["generate"]
        await asyncio.sleep(0.2)
        assert await Reconciler(rt, grace=0.1).reconcile() == [run_id]
        run = await rt.store.get(run_id)
        assert run is not None and run.status == "failed"
        assert run.last_error == "function 'generate' is no longer in the manifest; restore it, then replay this run"


async def test_candidates_are_paged(tmp_path, redis_url):  # type: ignore[no-untyped-def]
    settings = Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/r.db")
    async with Runtime.from_manifest(make_app(tmp_path), settings) as rt:
        ids = await rt.app.tasks["generate"].enqueue_many([{"briefing_id": i} for i in range(5)])
        await rt.broker.redis.delete(rt.keys.queue("default").stream)
        await asyncio.sleep(0.2)
        reconciler = Reconciler(rt, grace=0.1, limit=2)
        settled = [await reconciler.reconcile() for _ in range(3)]
        assert [len(s) for s in settled] == [2, 2, 1] and sorted(i for s in settled for i in s) == sorted(ids)

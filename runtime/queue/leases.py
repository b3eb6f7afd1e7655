"""Leases: a thread that renews the worker's leases on its stream entries, apart from the event loop.

A task that blocks the event loop (a sync call in an async function, a long GC pause) must not lose its
lease: if renewal ran on the loop, another worker would reclaim the entry and run it a second time while
its first holder is alive. The thread renews every `lease/5` with its own connection, through the fenced
script (only entries this consumer still owns), and reports the entries it lost to the loop. A loop that
has not beaten for `stall_limit` is taken for dead: the thread stops renewing, so others may reclaim.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from runtime.queue.broker import _text, by_queue
from runtime.queue.broker_scripts import RENEW
from runtime.queue.keys import Keys
from runtime.queue.redis_client import sync_client

logger = logging.getLogger("runtime.worker")


class LeaseKeeper:
    def __init__(
        self,
        redis_url: str,
        keys: Keys,
        consumer: str,
        queues: list[str],
        lease_seconds: float,
        held: Callable[[], list[str]],
        on_lost: Callable[[list[str]], None],
        loop_age: Callable[[], float],
        stall_limit: float,
    ) -> None:
        self.keys = keys
        self.consumer = consumer
        self.queues = queues
        self.interval = lease_seconds / 5
        self.lease_ms = int(lease_seconds * 1000)
        self.held = held
        self.on_lost = on_lost
        self.loop_age = loop_age
        self.stall_limit = stall_limit
        self.client = sync_client(redis_url, socket_timeout=max(1.0, lease_seconds), socket_connect_timeout=2)
        self._renew = self.client.register_script(RENEW)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failing = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.client.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.loop_age() > self.stall_limit:
                if not self.failing:
                    logger.error("event loop stalled for %.0f s: no longer renewing task leases", self.loop_age())
                self.failing = True
                continue
            try:
                lost: list[str] = []
                held = by_queue(self.held())
                for queue in self.queues:  # every served queue ticks its clock, held entries or not
                    entry_ids = held.get(queue, [])
                    keys = self.keys.queue(queue)
                    reply = self._renew(
                        keys=[keys.stream, keys.lease_clock, keys.reclaim_fence],
                        args=[self.keys.group, self.consumer, self.lease_ms, *entry_ids],
                    )
                    lost.extend(f"{queue}/{_text(entry_id)}" for entry_id in reply)
                if self.failing:
                    logger.info("renewing task leases again")
                self.failing = False
            except Exception as exc:
                if not self.failing:
                    logger.error("cannot renew task leases in Redis: %s", exc)
                self.failing = True
                continue
            if lost and self._loop is not None:
                self._loop.call_soon_threadsafe(self.on_lost, lost)

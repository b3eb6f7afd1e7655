"""Our Redis clients (runtime/queue/redis_client.py) against a real Redis that restarts under them."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from emulator.embedded_redis import EmbeddedRedis
from runtime.queue.redis_client import async_client, sync_client

IDLE = 6  # connections left idle in the pool when Redis goes away


async def test_pooled_connections_that_died_with_redis_are_replaced_not_used(tmp_path: Path) -> None:
    """Every command after Redis came back succeeds, including on the connections that sat idle in the pool while
    it was away. redis-py 8 skips its check for a dead pooled connection while maintenance notifications are on
    (its default), and our clients retry nothing: the first command on each such connection failed with
    'Connection closed by server' (a worker's /health said Redis was down after it was back)."""
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    client = async_client(server.url)
    try:
        await asyncio.gather(*(client.blpop(["nothing"], 0.1) for _ in range(IDLE)))  # IDLE pooled connections
        server.stop()
        await asyncio.sleep(0.2)  # the loop sees the connections close, as a running process's does
        server.start(port=server.port)
        replies = await asyncio.gather(*(client.ping() for _ in range(IDLE)), return_exceptions=True)
        assert replies == [True] * IDLE
    finally:
        await client.aclose()
        server.stop()


def test_a_sync_clients_pooled_connections_that_died_with_redis_are_replaced(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    client = sync_client(server.url)
    try:
        threads = [threading.Thread(target=client.blpop, args=(["nothing"], 0.1)) for _ in range(IDLE)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        server.stop()
        server.start(port=server.port)
        replies: list[object] = []

        def ping() -> None:
            try:
                replies.append(client.ping())
            except Exception as exc:
                replies.append(exc)

        threads = [threading.Thread(target=ping) for _ in range(IDLE)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert replies == [True] * IDLE
    finally:
        client.close()
        server.stop()

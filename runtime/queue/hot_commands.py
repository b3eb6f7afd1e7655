"""A worker's commands per batch (XREADGROUP, the START, RENEW and ACK scripts), packed from templates built once.

Each command's fixed parts (its name, the script's SHA, a queue's keys, the group and the consumer) are packed
once; a call packs only its counts, ids and messages, and goes on a connection the broker holds for it
(runtime/queue/held_connection.py). Reads have a connection of their own: a blocking read waits there up to a
quarter lease while runners mark starts and the commit loop acks on the other one. The replies are Redis's
own (no redis-py response callback): a read's entries are [id, [field, value, ...]] lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runtime.queue.held_connection import HeldConnection, bulk, usable
from runtime.queue.keys import QueueKeys

EVALSHA = bulk(b"EVALSHA")
BLOCK = bulk(b"BLOCK")
EMPTY = bulk(b"")

# what `HotCommands.start` takes per run: entry id, run id, start mark, its limits' (running set, size)
Start = tuple[str, str, bytes, Sequence[tuple[str, int]]]


def _value(parts: list[bytes], value: bytes) -> None:
    """Append a value that may be big (a message) without copying it into a new bytes."""
    parts += (b"$%d\r\n" % len(value), value, b"\r\n")


class HotCommands:
    def __init__(self, redis: Any, group: str, consumer: str, lease_ms: int, scripts: dict[str, Any]) -> None:
        self.redis = redis
        self.reads = HeldConnection(redis)  # XREADGROUP alone: a blocking one holds up nothing else
        self.writes = HeldConnection(redis)  # start marks, renewals and acks
        self.scripts = scripts  # "start", "renew", "ack": redis-py's Script objects (their SHA, their source)
        self.lease = bulk(b"%d" % lease_ms)
        self.read_head = b"".join(map(bulk, (b"XREADGROUP", b"GROUP", group.encode(), consumer.encode(), b"COUNT")))
        self.read_tails: dict[tuple[str, ...], bytes] = {}  # streams -> `STREAMS s1 s2 > >`
        self.owner = bulk(group.encode()) + bulk(consumer.encode())
        self.ack_heads: dict[str, bytes] = {}  # stream -> `EVALSHA sha 3 stream started delayed group consumer`
        self.renew_heads: dict[str, bytes] = {}  # stream -> `EVALSHA sha 3 stream clock fence group consumer lease`
        self.start_keys: dict[str, bytes] = {}  # stream -> `started paused`

    def usable(self) -> bool:
        """Whether the commands go this way: not to a cluster, nor while tracing (redis-py's path then)."""
        return usable(self.redis)

    async def xreadgroup(self, streams: tuple[str, ...], count: int, block_ms: int | None) -> Any:
        """New entries for this consumer: Redis's reply ([[stream, [[id, fields], ...]], ...] or None)."""
        tail = self.read_tails.get(streams)
        if tail is None:
            names = [bulk(s.encode()) for s in streams]
            tail = self.read_tails[streams] = bulk(b"STREAMS") + b"".join(names) + bulk(b">") * len(streams)
        size = 7 + 2 * len(streams)
        if block_ms is None:
            parts = [b"*%d\r\n" % size, self.read_head, bulk(b"%d" % count), tail]
        else:
            parts = [b"*%d\r\n" % (size + 2), self.read_head, bulk(b"%d" % count), BLOCK, bulk(b"%d" % block_ms), tail]
        return await self.reads.call(parts)

    async def start(self, keys: QueueKeys, runs: Sequence[Start]) -> list[int]:
        """The START script over these runs of one queue (see runtime/queue/broker_scripts.py)."""
        script = self.scripts["start"]
        fixed = self.start_keys.get(keys.stream)
        if fixed is None:
            fixed = self.start_keys[keys.stream] = bulk(keys.started.encode()) + bulk(keys.paused.encode())
        run_keys: list[bytes] = []
        args: list[bytes] = []
        nkeys = 2
        for entry_id, run_id, mark, slots in runs:
            run_keys.append(bulk(keys.cancel(run_id).encode()))
            args += (bulk(entry_id.encode()), bulk(mark), bulk(run_id.encode()), bulk(b"%d" % len(slots)))
            for running, limit in slots:
                run_keys.append(bulk(running.encode()))
                args.append(bulk(b"%d" % limit))
            nkeys += 1 + len(slots)
        size = 3 + nkeys + 1 + len(args)
        head = [b"*%d\r\n" % size, EVALSHA, bulk(script.sha.encode()), bulk(b"%d" % nkeys), fixed]
        verdicts: list[int] = await self.writes.evalsha(script, head + run_keys + [self.lease] + args)
        return verdicts

    async def renew(self, keys: QueueKeys, entry_ids: Sequence[str]) -> list[bytes]:
        """The RENEW script over these entries of one queue: the ids this consumer no longer owns."""
        script = self.scripts["renew"]
        head = self.renew_heads.get(keys.stream)
        if head is None:
            names = (keys.stream, keys.lease_clock, keys.reclaim_fence)
            head = EVALSHA + bulk(script.sha.encode()) + bulk(b"3") + b"".join(bulk(k.encode()) for k in names)
            head = self.renew_heads[keys.stream] = head + self.owner + self.lease
        parts = [b"*%d\r\n" % (9 + len(entry_ids)), head, *(bulk(entry_id.encode()) for entry_id in entry_ids)]
        lost: list[bytes] = await self.writes.evalsha(script, parts)
        return lost

    async def ack(self, keys: QueueKeys, entries: Sequence[tuple[str, bytes, int]]) -> list[bytes]:
        """The ACK script over these entries of one queue: (entry id, next attempt or b"", its due ms) each."""
        script = self.scripts["ack"]
        head = self.ack_heads.get(keys.stream)
        if head is None:
            names = (keys.stream, keys.started, keys.delayed)
            head = EVALSHA + bulk(script.sha.encode()) + bulk(b"3") + b"".join(bulk(k.encode()) for k in names)
            head = self.ack_heads[keys.stream] = head + self.owner
        parts = [b"*%d\r\n" % (8 + 3 * len(entries)), head]
        for entry_id, message, due_ms in entries:
            parts.append(bulk(entry_id.encode()))
            if message:
                _value(parts, message)
            else:
                parts.append(EMPTY)
            parts.append(bulk(b"%d" % due_ms))
        lost: list[bytes] = await self.writes.evalsha(script, parts)
        return lost

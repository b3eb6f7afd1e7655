"""An enqueue's two writes, the run's record (the database) and its message (Redis), written side by side
(`send`), and what it answers from what they did.

- The message is in Redis: the run will run; the ids are returned (a record that could not be saved is
  written by the worker when the run starts).
- Redis could not be reached, so nothing was sent (`NotSent`), and the record is saved: the record is the
  run's outbox. It is marked unsent and the ids are returned; the scheduler's leader sends it once Redis
  answers (runtime/scheduler/outbox.py). The database down as well: `EnqueueUnavailable`, nothing left.
- Redis answered with an error (`ResponseError`): nothing was queued; the records are removed
  (`EnqueueFailed`).
- Redis's answer was lost after the message was written (a timeout, a connection dropped mid-reply):
  the message may be there or not, so it is not sent again from here (that could run it twice):
  `EnqueueUncertain` with the ids; the reconciler looks for a saved record's message after its grace and
  queues it again only if it is missing.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import ResponseError

from runtime.errors import EnqueueFailed, EnqueueUnavailable, EnqueueUncertain
from runtime.queue.stream_sends import NotSent, StreamSends
from runtime.store.outbox import hold
from runtime.store.record_writer import RecordWriter
from runtime.store.runs import RunStore

logger = logging.getLogger("runtime.enqueue")


async def answer(
    store: RunStore, name: str, rows: list[dict[str, Any]], inserted: Any, kicked: Any, *, guarded: bool
) -> list[dict[str, Any]]:
    """The rows to return for an enqueue whose insert and send ended in `inserted` and `kicked` (a value
    or the exception raised), or the error to raise. A guarded send (a cron fire) is never kept for later:
    its guard, not the outbox, makes it happen once."""
    ids = [row["id"] for row in rows]
    if not isinstance(kicked, BaseException):
        if guarded and not kicked:
            return []  # its guard was there: another scheduler (or an earlier try) queued it already
        if isinstance(inserted, BaseException):
            logger.warning(
                "queued run(s) %s of %s, but their records could not be saved (%s); the worker records "
                "them when they start",
                ", ".join(ids),
                name,
                describe(inserted),
                extra={"function": name},
            )
        return rows
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    if isinstance(kicked, NotSent) and not guarded:
        if isinstance(inserted, BaseException):
            raise EnqueueUnavailable(
                f"nothing was queued for '{name}': Redis is unreachable ({describe(kicked)}) and the run's record "
                f"could not be saved either ({describe(inserted)}); try again shortly",
                "Redis and the database",
            )
        try:
            await hold(store, ids)
        except Exception as exc:  # saved but not marked: the reconciler finds its message missing, after its grace
            logger.warning("could not mark run(s) %s as unsent (%s)", shown, describe(exc), extra={"function": name})
        logger.warning(
            "Redis is unreachable (%s): run(s) %s of %s are saved and will be queued once it answers",
            describe(kicked),
            shown,
            name,
            extra={"function": name},
        )
        return rows
    if isinstance(kicked, ResponseError | NotSent):  # Redis answered, or was never reached: nothing is queued
        removed = isinstance(inserted, BaseException) or await forget(store, ids)
        if removed and isinstance(kicked, NotSent):
            raise EnqueueUnavailable(f"nothing was queued for '{name}': Redis is unreachable: {describe(kicked)}")
        if removed:
            raise EnqueueFailed(f"nothing was queued for '{name}': Redis refused: {describe(kicked)}")
    raise EnqueueUncertain(
        f"enqueue of '{name}' is uncertain: Redis did not confirm it ({describe(kicked)}); run {shown} "
        "may still run (it will, once Redis is back, if its record was saved)",
        list(ids),
    )


async def send(
    sends: StreamSends,
    records: RecordWriter,
    store: RunStore,
    name: str,
    stream: str,
    rows: list[dict[str, Any]],
    messages: list[bytes],
) -> list[dict[str, Any]]:
    """Record and XADD runs, the record written while Redis answers, and answer for them: a caller alone
    writes its XADD, saves the record and then reads Redis's reply, with no task or future; callers at the
    same time share one XADD batch and one insert (runtime/queue/stream_sends.py, record_writer.py)."""
    sent, kicked, inserted = None, None, None
    try:
        sent = await sends.start(stream, messages)
    except Exception as exc:
        kicked = exc
    try:
        await records.insert(rows, alone=sent is not None and sent.future is None)
    except Exception as exc:
        inserted = exc
    finally:
        if sent is not None:  # read even when cancelled: the connection stays in step
            try:
                await sends.finish(sent)
            except Exception as exc:
                kicked = exc
    return await answer(store, name, rows, inserted, kicked, guarded=False)


async def forget(store: RunStore, ids: list[str]) -> bool:
    """Delete records no worker has touched (their messages never reached Redis); False if it failed."""
    try:
        await store.forget(ids)
    except Exception as exc:
        logger.warning("could not remove the records of unqueued run(s) %s: %s", ", ".join(ids), exc)
        return False
    return True


def describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

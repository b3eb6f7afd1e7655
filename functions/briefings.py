"""Briefings: `POST /briefings` creates one and queues its generation; `GET /briefings/{id}` shows it.

Once generated, a briefing goes to review, a durable function: `review_briefing` starts on the event
`briefing.completed`, saves its draft as a step, then waits up to a day for `briefing.approved`
(`POST /briefings/{id}/approve`) holding no worker, and publishes the briefing, or lets the review expire.

`generate_briefing` calls the briefing source over httpx with its own timeout: BRIEFING_SOURCE_URL,
or a built-in simulated source with a few seconds of latency (BRIEFING_SOURCE_LATENCY) when unset.
Once its retries are spent, the briefing is `failed` with the error message.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

import httpx
from pydantic import BaseModel, Field
from sqlmodel import Field as Column
from sqlmodel import SQLModel
from starlette.exceptions import HTTPException

from runtime import Context, Failure, cancel, get_settings, http, send_event, session, task

SOURCE_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
REVIEW_WINDOW = timedelta(days=1)  # how long a review waits for `briefing.approved`


def now() -> datetime:
    return datetime.now(UTC)


class Briefing(SQLModel, table=True):
    __tablename__ = "briefings"

    id: int | None = Column(default=None, primary_key=True)
    topic: str = "general"
    status: str = "queued"  # queued, processing, completed, failed, cancelled
    content: str | None = None
    error: str | None = None
    run_id: str | None = None  # the generation run, to cancel it
    created_at: datetime = Column(default_factory=now)
    updated_at: datetime = Column(default_factory=now)


class BriefingRequest(BaseModel):
    topic: str = Field("general", min_length=1, max_length=200)


class BriefingAccepted(BaseModel):
    id: int
    status: str
    topic: str


async def _set(briefing_id: int, **fields: object) -> Briefing | None:
    async with session() as db:
        briefing = await db.get(Briefing, briefing_id)
        if briefing is None:
            return None
        for key, value in fields.items():
            setattr(briefing, key, value)
        briefing.updated_at = now()
        db.add(briefing)
        await db.commit()
        return briefing


@http
async def create_briefing(body: BriefingRequest) -> tuple[BriefingAccepted, int]:
    """Create a briefing and queue its generation.

    Answers 202 at once; `GET /briefings/{id}` shows it `queued`, `processing`, then `completed` or `failed`.
    """
    async with session() as db:
        briefing = Briefing(topic=body.topic)
        db.add(briefing)
        await db.commit()
        await db.refresh(briefing)
    assert briefing.id is not None
    run_id = await generate_briefing.enqueue(briefing_id=briefing.id)
    await _set(briefing.id, run_id=run_id)
    return BriefingAccepted(id=briefing.id, status=briefing.status, topic=briefing.topic), 202


@http
async def cancel_briefing(briefing_id: int) -> Briefing:
    """Cancel a briefing's generation: queued, it never starts; running, it is stopped."""
    async with session() as db:
        briefing = await db.get(Briefing, briefing_id)
    if briefing is None or briefing.run_id is None:
        raise HTTPException(404, f"no briefing with id {briefing_id}")
    try:
        await cancel(briefing.run_id)
    except ValueError as exc:  # already finished
        raise HTTPException(409, str(exc)) from None
    updated = await _set(briefing_id, status="cancelled")
    assert updated is not None
    return updated


@http
async def get_briefing(briefing_id: int) -> Briefing:
    """Show a briefing: its status, and its content once completed (or the error once failed)."""
    async with session() as db:
        briefing = await db.get(Briefing, briefing_id)
    if briefing is None:
        raise HTTPException(404, f"no briefing with id {briefing_id}")
    return briefing


async def _fetch(topic: str) -> str:
    url = get_settings().briefing_source_url
    if not url:  # the built-in simulated source: slow, like the real one
        await asyncio.sleep(float(os.environ.get("BRIEFING_SOURCE_LATENCY", "2")))
        return f"Your briefing on {topic}: markets calm, skies clear, coffee strong."
    async with httpx.AsyncClient(timeout=SOURCE_TIMEOUT) as client:
        response = await client.get(url, params={"topic": topic})
        response.raise_for_status()
        return response.text


@task
async def generate_briefing(briefing_id: int) -> dict[str, object]:
    briefing = await _set(briefing_id, status="processing")
    if briefing is None:
        return {"skipped": f"no briefing {briefing_id}"}
    content = await _fetch(briefing.topic)
    await _set(briefing_id, status="completed", content=content, error=None)
    # starts its review (`review_briefing`, on: [briefing.completed]); the id makes a retry send it once
    await send_event("briefing.completed", {"briefing_id": briefing_id}, id=f"briefing-{briefing_id}-completed")
    return {"id": briefing_id, "chars": len(content)}


async def _draft(briefing_id: int) -> dict[str, object]:
    async with session() as db:
        briefing = await db.get(Briefing, briefing_id)
    content = briefing.content if briefing is not None else None
    return {"briefing_id": briefing_id, "summary": (content or "")[:80]}


async def _publish(briefing_id: int, approved_by: str) -> str:
    await _set(briefing_id, status="published")
    return f"published, approved by {approved_by}"


@task
async def review_briefing(ctx: Context, briefing_id: int) -> str:
    """Durable: the draft is a saved step; the wait for `briefing.approved` (matching this briefing) holds no
    worker for up to a day; then the briefing is published, or the review expires."""
    draft = await ctx.step.run("draft", _draft, briefing_id)
    approval = await ctx.wait_for_event(
        "approval", event="briefing.approved", match="briefing_id", timeout=REVIEW_WINDOW
    )
    if approval is None:
        return f"expired: nobody approved {draft['summary']!r} within {REVIEW_WINDOW}"
    return str(await ctx.step.run("publish", _publish, briefing_id, str(approval.get("by", "someone"))))


class Approval(BaseModel):
    by: str = Field("someone", min_length=1, max_length=100)


@http
async def approve_briefing(briefing_id: int, body: Approval) -> dict[str, object]:
    """Approve a briefing in review: sends `briefing.approved`, which its waiting review goes on with."""
    sent = await send_event("briefing.approved", {"briefing_id": briefing_id, "by": body.by})
    return {"briefing_id": briefing_id, "woke": sent["woke"]}


@generate_briefing.on_failure
async def mark_failed(failure: Failure) -> None:
    await _set(int(failure.arguments["briefing_id"]), status="failed", error=failure.error)


@task
async def update_status(briefing_id: int, status: str) -> None:
    if status not in ("queued", "processing", "completed", "failed", "cancelled"):
        raise ValueError(f"unknown briefing status {status!r}")
    await _set(briefing_id, status=status)


@task
async def daily_briefings() -> dict[str, object]:
    async with session() as db:
        briefing = Briefing(topic="daily")
        db.add(briefing)
        await db.commit()
        await db.refresh(briefing)
    assert briefing.id is not None
    await generate_briefing.enqueue(briefing_id=briefing.id)
    return {"id": briefing.id}

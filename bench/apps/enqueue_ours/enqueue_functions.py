"""The enqueue endpoint, written as a user of our runtime writes it: validate the body, queue one task,
answer 202 with the run's id (the example app's POST /briefings, without its own table)."""

from __future__ import annotations

from pydantic import BaseModel

from runtime import http, task


class Topic(BaseModel):
    topic: str


@http
async def submit(body: Topic) -> tuple[dict[str, str], int]:
    run_id = await generate.enqueue(topic=body.topic)
    return {"run_id": run_id}, 202


@task
async def generate(topic: str) -> None:
    return None

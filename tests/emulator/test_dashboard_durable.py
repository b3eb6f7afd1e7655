"""Durable functions in the dashboard, in a real browser against a real `emulator up`: a run suspended in
ctx.wait_for_event is `waiting` wherever statuses are listed and says what it waits for; its steps sit on one
time axis (a bar per step, the failed one in the failed colour); each attempt names its worker; the overview
shows the queue depths and busy workers of /api/stats; the events view lists the events with links to the
runs each started and woke, and sends one. With DASHBOARD_SHOTS=DIR, screenshots land in DIR."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import Process, write_app
from tests.emulator.test_dashboard_browser import needs_chromium
from tests.emulator.test_dashboard_screen import SIDEWAYS, browser_page, shot
from tests.emulator.test_up import Emulator, start_emulator

MANIFEST = """\
    app: durable-screen
    defaults: {retries: 0}
    functions:
      review:
        handler: durable_mod:review
        task: {}
      on_created:
        handler: durable_mod:on_created
        task: {on: [briefing.created]}
"""
MODULE = """\
    import asyncio

    from runtime import Context, StepFailed, task


    async def load(briefing_id):
        await asyncio.sleep(0.3)
        return {"rows": briefing_id * 10}


    def charge(briefing_id):
        raise ValueError(f"card {briefing_id} declined")


    @task
    async def review(ctx: Context, briefing_id: int) -> object:
        loaded = await ctx.step.run("load", load, briefing_id)
        try:
            await ctx.step.run("charge", charge, briefing_id, retries=0)
        except StepFailed:
            pass
        await ctx.sleep("cool-off", 1)
        approval = await ctx.wait_for_event("approval", event="briefing.approved", match="briefing_id", timeout=600)
        return {"loaded": loaded, "approval": approval}


    @task
    async def on_created(briefing_id: int) -> int:
        return briefing_id
"""


def durable_app(spawn: Callable[..., Process], tmp_path: Path) -> Emulator:
    app = tmp_path / "app"
    write_app(app, MANIFEST, {"durable_mod.py": MODULE})
    return start_emulator(spawn, app)


def waiting_for_the_event(emulator: Emulator) -> str:
    """A `review` run past its steps and its sleep, suspended in ctx.wait_for_event."""
    run_id = str(emulator.enqueue("review", {"briefing_id": 7})["id"])
    deadline = time.monotonic() + 30
    while "briefing.approved" not in str(emulator.run(run_id).get("waiting_for")):
        assert time.monotonic() < deadline, emulator.run(run_id)
        time.sleep(0.1)
    return run_id


@needs_chromium
def test_a_waiting_run_shows_what_it_waits_for_and_its_steps_on_a_time_axis(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    emulator = durable_app(spawn, tmp_path)
    run_id = waiting_for_the_event(emulator)
    run = emulator.run(run_id)
    assert [s["name"] for s in run["steps"]][:3] == ["load", "charge", "cool-off"], run["steps"]
    with browser_page(width=1280) as page:
        page.goto(f"{emulator.dashboard}/#run={run_id}")
        detail = page.get_by_test_id("run-detail")
        expect(detail.get_by_test_id("detail-id")).to_have_text(run_id)
        expect(detail.get_by_test_id("run-status").first).to_have_text("waiting")
        expect(detail.get_by_test_id("detail-waiting-for")).to_have_text(run["waiting_for"])
        expect(detail.get_by_test_id("detail-waiting-for")).to_contain_text("event 'briefing.approved'")
        # the steps: one bar each, in order on one axis, the failed one in the failed colour
        waterfall = detail.get_by_test_id("steps-waterfall")
        steps = waterfall.get_by_test_id("step")
        expect(steps).to_have_count(len(run["steps"]))
        expect(waterfall.get_by_test_id("steps-tick").first).to_have_text("0 ms")
        for lane, step in zip(steps.all(), run["steps"], strict=True):
            expect(lane.get_by_test_id("step-name")).to_have_text(step["name"])
            expect(lane.get_by_test_id("step-status")).to_have_text(step["status"])
            expect(lane.get_by_test_id("step-duration")).not_to_have_text("—")
        statuses = [s["status"] for s in run["steps"]]
        assert statuses[:3] == ["succeeded", "failed", "sleep"], statuses
        bars = waterfall.get_by_test_id("step-bar")
        colour = "b => getComputedStyle(b).backgroundColor"
        assert bars.nth(1).evaluate(colour) == "rgb(210, 67, 76)"  # the failed colour, as a failed attempt's
        assert bars.nth(0).evaluate(colour) != bars.nth(1).evaluate(colour)
        expect(steps.nth(1).get_by_test_id("step-error")).to_contain_text("ValueError: card 7 declined")
        boxes = [bars.nth(i).bounding_box() for i in range(3)]
        assert all(b is not None for b in boxes)
        lefts = [b["x"] for b in boxes if b]
        assert lefts == sorted(lefts) and lefts[0] < lefts[2], lefts  # load, charge, then the sleep
        # the load step slept 0.3 s: its bar is wider than the charge's
        assert boxes[0] and boxes[1] and boxes[0]["width"] > boxes[1]["width"], boxes
        # each attempt names its worker; a suspended one says what it waited for
        lanes = detail.get_by_test_id("timeline-attempt")
        expect(lanes).to_have_count(len(run["history"]))
        for lane, attempt in zip(lanes.all(), run["history"], strict=True):
            assert attempt.get("worker"), attempt
            expect(lane.get_by_test_id("timeline-worker")).to_have_text(attempt["worker"])
            if attempt.get("waited_for"):
                expect(lane.get_by_test_id("timeline-outcome")).to_have_text(f"suspended: {attempt['waited_for']}")
        assert page.evaluate(SIDEWAYS) == [], "a run with steps"
        page.set_viewport_size({"width": 1400, "height": 900})
        shot(page, "run-steps")
        # `waiting` is a status like the others: overview card, per function, filter, badge
        expect(page.get_by_test_id("stat-waiting")).to_contain_text("1")
        row = page.locator('[data-testid="function-count-row"][data-function="review"]')
        expect(row.locator('[data-status="waiting"]')).to_have_text("1")
        page.get_by_test_id("status-filter").select_option("waiting")
        expect(page.get_by_test_id("run-row")).to_have_count(1)
        badge = page.get_by_test_id("run-row").get_by_test_id("run-status")
        expect(badge).to_have_class(re.compile(r"\bwaiting\b"))
        assert badge.evaluate("b => getComputedStyle(b).backgroundColor") not in ("rgba(0, 0, 0, 0)", "transparent")
        # the queue depths and busy workers are /api/stats's (in_flight, delayed and consumers are gone)
        stats = httpx.get(f"{emulator.dashboard}/api/stats", timeout=10).json()
        for key in ("waiting", "running", "scheduled", "retrying", "dead"):
            expect(page.get_by_test_id(f"queue-{key}").locator(".n")).to_have_text(str(stats["queue"][key]))
        busy = sum(1 for w in stats["workers_running"] if w["running"])
        expect(page.get_by_test_id("workers-running").locator(".n")).to_have_text(str(busy))
    assert emulator.interrupt() == 0


@needs_chromium
def test_the_events_view_lists_events_with_their_runs_and_sends_one(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    emulator = durable_app(spawn, tmp_path)
    run_id = waiting_for_the_event(emulator)
    sent = httpx.post(f"{emulator.dashboard}/api/events", json={"name": "briefing.created", "data": {"briefing_id": 3}})
    assert sent.status_code == 202, sent.text
    [started] = sent.json()["started"]
    with browser_page(width=1280) as page:
        page.goto(f"{emulator.dashboard}/#view=events")  # loaded directly from its URL
        expect(page.get_by_test_id("view-events")).to_be_visible()
        created = page.locator('[data-testid="event-row"][data-event="briefing.created"]')
        expect(created).to_have_count(1)
        expect(created.get_by_test_id("event-data")).to_have_text('{"briefing_id":3}')
        expect(created.get_by_test_id("event-started-link")).to_have_text(str(started)[-8:])
        # the form sends the approval: the waiting run wakes, and the event links to it
        form = page.get_by_test_id("event-form")
        form.get_by_test_id("event-name-input").fill("briefing.approved")
        form.get_by_test_id("event-data-input").fill('{"briefing_id": 7, "by": "ada"}')
        form.get_by_test_id("event-id-input").fill("approve-7")
        form.get_by_test_id("event-submit").click()
        expect(form.get_by_test_id("event-result")).to_contain_text("woke 1")
        approved = page.locator('[data-testid="event-row"][data-event="briefing.approved"]')
        expect(approved.get_by_test_id("event-woke-link")).to_have_text(run_id[-8:])
        assert page.evaluate(SIDEWAYS) == [], "events"
        page.set_viewport_size({"width": 1400, "height": 900})
        shot(page, "events-sent")
        form.get_by_test_id("event-submit").click()  # the same id again: nothing new
        expect(form.get_by_test_id("event-result")).to_contain_text("already sent")
        approved.get_by_test_id("event-woke-link").click()
        expect(page.get_by_test_id("view-runs")).to_be_visible()
        detail = page.get_by_test_id("run-detail")
        expect(detail.get_by_test_id("detail-id")).to_have_text(run_id)
        expect(detail.get_by_test_id("run-status").first).to_have_text("succeeded", timeout=30_000)
        expect(detail.get_by_test_id("detail-waiting-for")).to_have_count(0)
        wait = detail.locator('[data-testid="step"][data-step="approval"]')
        expect(wait.get_by_test_id("step-status")).to_have_text("succeeded")  # it was `wait` until the event came
        expect(detail.get_by_test_id("detail-result")).to_contain_text('"by": "ada"')
        run = emulator.run(run_id)
        expect(detail.get_by_test_id("detail-span")).not_to_have_text("—")
        assert run["duration_ms"] and run["time_in_attempts_ms"], run
        expect(page.get_by_test_id("run-row")).to_have_count(2)  # the runs list, loaded beside it
        expect(page.get_by_test_id("stat-succeeded")).to_contain_text("2")
        shot(page, "run-steps-finished")
    assert emulator.interrupt() == 0

"""The dashboard a team keeps open (issue 22 §5), measured in a real browser (Debian's chromium through
Playwright) against a real `emulator up`: every view opens from its URL, nothing scrolls sideways at
1280 px, the runs list is on the first screen at 1400x900, an open traceback survives the refresh, the
attempts sit on a time axis, the "Run a task" form starts from the function's parameters, the favicon is
served, times read one 24 h way with the timezone said once, and `cancelled` counts like the other states.
With DASHBOARD_SHOTS=DIR, a screenshot of each view at 1400x900 lands in DIR."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.conftest import Process, write_app
from tests.emulator.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from tests.emulator.test_up import Emulator, start_emulator

if TYPE_CHECKING:
    from playwright.sync_api import Page

MANIFEST = """\
    app: screen-test
    defaults: {retries: 0}
    queues: {default: 3, low: 1}
    functions:
      ping:
        handler: screen_mod:ping
        http: {path: /ping, methods: [POST]}
      add:
        handler: screen_mod:add
        task: {}
      boom:
        handler: screen_mod:boom
        task: {retries: 1, backoff: {base: 100ms, max: 100ms}}
      greet:
        handler: screen_mod:greet
        task: {}
      nightly:
        handler: screen_mod:nightly
        task: {schedule: "30 5 * * *"}
      nap:
        handler: screen_mod:nap
        task: {}
      later:
        handler: screen_mod:later
        task: {queue: low}
"""
MODULE = """\
    import asyncio

    from runtime import http, task


    @http
    async def ping(request):
        return {"pong": await request.json()}


    @task
    async def add(a: int, b: int) -> int:
        return a + b


    @task
    async def boom(reason: str) -> None:
        raise ValueError("kaboom, a long message that a dashboard must not let push its buttons away: " + reason * 8)


    @task
    async def greet(name: str, times: int = 2, loud: bool = False, tags: list[str] | None = None) -> str:
        return " ".join([name.upper() if loud else name] * times)


    @task
    async def nightly() -> None:
        return None


    @task
    async def nap(seconds: float) -> None:
        await asyncio.sleep(seconds)


    @task
    async def later() -> None:
        return None
"""
VIEWS = ("runs", "queues", "workers", "functions", "events")
LOADED = {
    "runs": "run-row",
    "queues": "queue-row",
    "workers": "worker-row",
    "functions": "function-row",
    "events": "event-row",
}

# the elements that scroll sideways: the page itself, and any element narrower than its content that
# clips or scrolls it (a table-wrap, a section)
SIDEWAYS = """() => [document.scrollingElement, ...document.querySelectorAll("main *")]
  .filter((el) => el.offsetParent !== null || el === document.scrollingElement)
  .filter((el) => el.scrollWidth > el.clientWidth + 1 && el.clientWidth > 0
    && (el === document.scrollingElement || ["auto", "scroll"].includes(getComputedStyle(el).overflowX)))
  .map((el) => `${el.tagName}.${el.className} [${el.dataset.testid || ""}] ${el.scrollWidth}>${el.clientWidth}`)"""


def emulator_app(spawn: Callable[..., Process], tmp_path: Path) -> Emulator:
    app = tmp_path / "app"
    write_app(app, MANIFEST, {"screen_mod.py": MODULE})
    return start_emulator(spawn, app)


def a_run_of_each_kind(emulator: Emulator) -> dict[str, str]:
    """A succeeded, a failed (two attempts, so a dead letter) and a cancelled run; and an event, that starts none."""
    ids = {
        "succeeded": str(emulator.enqueue("add", {"a": 1, "b": 2})["id"]),
        "failed": str(emulator.enqueue("boom", {"reason": "on purpose "})["id"]),
        "cancelled": str(emulator.enqueue("add", {"a": 2, "b": 2}, delay=600)["id"]),
    }
    response = httpx.post(f"{emulator.dashboard}/api/runs/{ids['cancelled']}/cancel", timeout=10)
    assert response.status_code == 200, response.text
    for run_id in ids.values():
        emulator.wait_run(run_id, ("succeeded", "failed", "cancelled"))
    event = {"name": "screen.checked", "data": {"by": "the screen test", "note": "a long note " * 30}}
    response = httpx.post(f"{emulator.dashboard}/api/events", json=event, timeout=10)  # for the events view
    assert response.status_code == 202, response.text
    return ids


@contextmanager
def browser_page(width: int = 1400, height: int = 900, timezone: str = "UTC") -> Iterator[Page]:
    """A page in chromium, in English (a 12 h clock is what en-US would pick), failing on any script error."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height}, timezone_id=timezone, locale="en-US")
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("dialog", lambda dialog: dialog.accept())
        expect.set_options(timeout=15_000)
        try:
            yield page
            assert problems == [], problems
        finally:
            browser.close()


def open_view(page: Page, emulator: Emulator, view: str) -> None:
    """The view's URL loaded afresh (not a hash change in an open page), and its data shown."""
    from playwright.sync_api import expect

    page.goto("about:blank")
    page.goto(f"{emulator.dashboard}/#view={view}")
    expect(page.get_by_test_id(f"view-{view}")).to_be_visible()
    expect(page.get_by_test_id(LOADED[view]).first).to_be_visible()


@needs_chromium
def test_every_view_opens_from_its_url_without_sideways_scrolling(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    emulator = emulator_app(spawn, tmp_path)
    ids = a_run_of_each_kind(emulator)
    with browser_page(width=1280) as page:
        failures: list[str] = []
        page.on("response", lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        for view in VIEWS:
            open_view(page, emulator, view)
            expect(page.get_by_test_id("app-name")).to_have_text("screen-test")  # it said "…" off the runs view
        for view in VIEWS:
            open_view(page, emulator, view)
            page.wait_for_timeout(300)  # the rest of the view's data
            assert page.evaluate(SIDEWAYS) == [], view
        page.goto("about:blank")
        page.goto(f"{emulator.dashboard}/#run={ids['failed']}")  # the runs beside one run's detail
        expect(page.get_by_test_id("attempt-timeline")).to_be_visible()
        assert page.evaluate(SIDEWAYS) == [], "runs with a run open"
        # the dead letter's Delete button is on screen, not scrolled away inside its panel
        open_view(page, emulator, "runs")
        delete = page.get_by_test_id("dead-letter-row").get_by_test_id("delete-button")
        box, panel = delete.bounding_box(), page.get_by_test_id("dead-letters-section").bounding_box()
        assert box is not None and panel is not None
        assert box["x"] + box["width"] <= panel["x"] + panel["width"], (box, panel)
        assert failures == [], failures  # /favicon.ico was a 404 on every load
    icon = httpx.get(f"{emulator.dashboard}/favicon.ico", timeout=10)
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/")
    assert emulator.interrupt() == 0


@needs_chromium
def test_times_use_one_24_hour_clock_and_name_the_timezone_once(spawn: Callable[..., Process], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    emulator = emulator_app(spawn, tmp_path)
    ids = a_run_of_each_kind(emulator)
    with browser_page(timezone="Asia/Kolkata") as page:
        page.goto(f"{emulator.dashboard}/#run={ids['failed']}")
        expect(page.get_by_test_id("run-detail").get_by_test_id("detail-id")).to_have_text(ids["failed"])
        expect(page.get_by_test_id("throughput-chart")).to_be_visible()
        text = page.evaluate("document.body.textContent")
        assert not re.search(r"\d\s?(AM|PM)\b", text), re.findall(r".{20}\d\s?(?:AM|PM)\b", text)
        assert page.evaluate("document.body.innerText").count("UTC+05:30") == 1  # in the header only
        expect(page.get_by_test_id("updated")).to_contain_text("(UTC+05:30)")
        run = emulator.run(ids["failed"])
        expect(page.get_by_test_id("detail-enqueued")).to_have_text(local_time(run["enqueued_at"], 5 * 60 + 30))
    with browser_page(timezone="UTC") as page:
        page.goto(emulator.dashboard)
        expect(page.get_by_test_id("updated")).to_contain_text("times in UTC")
        expect(page.get_by_test_id("updated")).not_to_contain_text("UTC (UTC)")
    assert emulator.interrupt() == 0


def local_time(when: str | float, offset_minutes: int) -> str:
    """A run's time (ISO text, or epoch seconds in its history) as the page shows it in that timezone."""
    from datetime import UTC, datetime, timedelta

    if isinstance(when, str):
        moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    else:
        moment = datetime.fromtimestamp(when, UTC)
    return (moment + timedelta(minutes=offset_minutes)).strftime("%Y-%m-%d %H:%M:%S")


@needs_chromium
def test_the_runs_list_is_on_the_first_screen_and_counts_cancelled_runs(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    emulator = emulator_app(spawn, tmp_path)
    ids = a_run_of_each_kind(emulator)
    with browser_page() as page:
        page.goto(emulator.dashboard)
        rows = page.get_by_test_id("run-row")
        expect(rows).to_have_count(3)
        expect(page.get_by_test_id("dead-letter-row")).to_have_count(1)
        # the overview is one row of counts, and the newest runs are above the fold
        cards = '[data-testid="stats-counts"] .card'
        tops = page.eval_on_selector_all(cards, "cards => cards.map((c) => c.getBoundingClientRect().top)")
        assert len(tops) >= 7 and len(set(tops)) == 1, tops
        last = rows.last.bounding_box()
        assert last is not None and last["y"] + last["height"] <= 900, last
        # cancelled: counted in the overview and per function, with a badge of its own
        expect(page.get_by_test_id("stat-cancelled")).to_contain_text("1")
        add = page.locator('[data-testid="function-count-row"][data-function="add"]')
        expect(add.locator('[data-status="cancelled"]')).to_have_text("1")
        badge = page.locator(f'[data-testid="run-row"][data-run-id="{ids["cancelled"]}"] [data-testid="run-status"]')
        expect(badge).to_have_class(re.compile(r"\bcancelled\b"))
        assert badge.evaluate("b => getComputedStyle(b).backgroundColor") not in ("rgba(0, 0, 0, 0)", "transparent")
        # the filters are in the URL: a reload (or a shared link) keeps them
        page.get_by_test_id("status-filter").select_option("cancelled")
        expect(rows).to_have_count(1)
        page.get_by_test_id("function-filter").select_option("add")
        assert "status=cancelled" in page.url and "function=add" in page.url
        page.reload()
        expect(page.get_by_test_id("status-filter")).to_have_value("cancelled")
        expect(page.get_by_test_id("function-filter")).to_have_value("add")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-run-id", ids["cancelled"])
    assert emulator.interrupt() == 0


@needs_chromium
def test_the_attempts_sit_on_a_time_axis_and_an_open_traceback_stays_open(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    emulator = emulator_app(spawn, tmp_path)
    ids = a_run_of_each_kind(emulator)
    run = emulator.run(ids["failed"])
    assert len(run["history"]) == 2
    with browser_page() as page:
        page.goto(f"{emulator.dashboard}/#run={ids['failed']}")
        detail = page.get_by_test_id("run-detail")
        expect(detail.get_by_test_id("detail-id")).to_have_text(ids["failed"])
        timeline = detail.get_by_test_id("attempt-timeline")
        ticks = timeline.get_by_test_id("timeline-tick")
        expect(ticks.first).to_have_text("0 ms")
        assert ticks.count() >= 3
        lanes = timeline.get_by_test_id("timeline-attempt")
        expect(lanes).to_have_count(2)
        for lane, attempt in zip(lanes.all(), run["history"], strict=True):
            expect(lane.get_by_test_id("timeline-start")).to_have_text(local_time(attempt["started_at"], 0)[11:])
            expect(lane.get_by_test_id("timeline-duration")).not_to_be_empty()
            # the worker once the history records it (runtime/worker/attempts.py does not yet)
            expect(lane.get_by_test_id("timeline-worker")).to_have_text(attempt.get("worker") or "—")
            expect(lane.get_by_test_id("timeline-outcome")).to_have_text("ValueError")
        # a traceback opened by hand stays open through the 2 s refreshes
        traceback = detail.get_by_test_id("attempt-traceback").last
        traceback.locator("summary").click()
        expect(traceback).to_have_attribute("open", "")
        page.wait_for_timeout(4500)
        expect(traceback).to_have_attribute("open", "")
        expect(traceback).to_contain_text("raise ValueError")
        shot(page, "run-traceback-open")
    assert emulator.interrupt() == 0


@needs_chromium
def test_run_a_task_starts_from_the_functions_parameters(spawn: Callable[..., Process], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    emulator = emulator_app(spawn, tmp_path)
    functions = {f["name"]: f for f in httpx.get(f"{emulator.dashboard}/api/functions", timeout=10).json()}
    schema = functions["greet"]["arguments"]
    assert schema["required"] == ["name"] and schema["properties"]["times"]["default"] == 2
    assert "arguments" not in functions["ping"]
    with browser_page() as page:
        page.goto(emulator.dashboard)
        form = page.get_by_test_id("enqueue-form")
        form.get_by_test_id("enqueue-function").select_option("add")
        expect(form.get_by_test_id("enqueue-arguments")).not_to_have_value("{}")
        assert json.loads(form.get_by_test_id("enqueue-arguments").input_value()) == {"a": 0, "b": 0}
        form.get_by_test_id("enqueue-submit").click()
        expect(form.get_by_test_id("enqueue-result")).to_contain_text("Queued run")  # it was a 422
        form.get_by_test_id("enqueue-function").select_option("greet")
        template: dict[str, Any] = json.loads(form.get_by_test_id("enqueue-arguments").input_value())
        assert template == {"name": "", "times": 2, "loud": False, "tags": None}
        form.get_by_test_id("enqueue-arguments").fill('{"name": "ada"}')
        form.get_by_test_id("enqueue-function").select_option("add")
        form.get_by_test_id("enqueue-function").select_option("greet")
        expect(form.get_by_test_id("enqueue-arguments")).to_have_value('{"name": "ada"}')  # an edit is kept
    assert emulator.interrupt() == 0


@needs_chromium
def test_queues_and_workers_views_show_what_asynqmon_and_flower_show(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    emulator = emulator_app(spawn, tmp_path)
    assert httpx.post(f"{emulator.dashboard}/api/queues/low/pause", timeout=10).status_code == 200
    time.sleep(1.5)  # workers read the paused flags once a second
    waiting = str(emulator.enqueue("later", {})["id"])
    napping = str(emulator.enqueue("nap", {"seconds": 60})["id"])
    emulator.wait_run(napping, ("running",))
    with browser_page() as page:
        # queues: weight, paused, the waiting task and how long it has waited; the name opens its runs
        page.goto(f"{emulator.dashboard}/#view=queues")
        low = page.locator('[data-testid="queue-row"][data-queue="low"]')
        default = page.locator('[data-testid="queue-row"][data-queue="default"]')
        expect(default.locator('[data-key="weight"]')).to_have_text("3")
        expect(low.locator('[data-key="weight"]')).to_have_text("1")
        expect(low.get_by_test_id("queue-state")).to_have_text("paused")
        expect(low.locator('[data-key="waiting"]')).to_have_text("1")
        expect(low.locator('[data-key="oldest_waiting_seconds"]')).to_have_text(re.compile(r"^\d.* s$"))
        expect(default.locator('[data-key="running"]')).to_have_text("1")
        expect(default.locator('[data-key="oldest_waiting_seconds"]')).to_have_text("—")
        shot(page, "queues-busy")
        low.get_by_test_id("queue-runs-link").click()
        expect(page.get_by_test_id("view-runs")).to_be_visible()
        expect(page.get_by_test_id("queue-filter")).to_have_value("low")
        expect(page.get_by_test_id("run-row")).to_have_count(1)
        expect(page.get_by_test_id("run-row")).to_have_attribute("data-run-id", waiting)
        # workers: the run each holds now, as a link to it; uptime and heartbeat
        page.goto(f"{emulator.dashboard}/#view=workers")
        worker = page.get_by_test_id("worker-row")
        expect(worker).to_have_count(1)
        expect(worker.get_by_test_id("worker-running")).to_have_text("1")
        expect(worker.get_by_test_id("worker-run-link")).to_have_text(napping[-8:])
        expect(worker.get_by_test_id("worker-uptime")).not_to_have_text("—")
        expect(worker.get_by_test_id("worker-heartbeat")).to_contain_text("ago")
        shot(page, "workers-busy")
        worker.get_by_test_id("worker-run-link").click()
        expect(page.get_by_test_id("run-detail").get_by_test_id("detail-id")).to_have_text(napping)
    assert httpx.post(f"{emulator.dashboard}/api/runs/{napping}/cancel", timeout=10).status_code == 200
    emulator.wait_run(napping, ("cancelled",))
    assert emulator.interrupt() == 0


@needs_chromium
def test_screenshots_of_each_view(spawn: Callable[..., Process], tmp_path: Path) -> None:
    emulator = emulator_app(spawn, tmp_path)
    ids = a_run_of_each_kind(emulator)
    with browser_page() as page:
        for view in VIEWS:
            open_view(page, emulator, view)
            page.wait_for_timeout(500)
            shot(page, view)
        page.goto(f"{emulator.dashboard}/#run={ids['failed']}")
        page.get_by_test_id("attempt-timeline").wait_for()
        shot(page, "run-detail")
    assert emulator.interrupt() == 0


def shot(page: Page, name: str) -> None:
    """The screen as a user sees it (1400x900, not the whole page), into DASHBOARD_SHOTS when it is set."""
    folder = os.environ.get("DASHBOARD_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"dashboard-{name}.png"))

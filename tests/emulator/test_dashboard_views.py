"""Each view of the dashboard in a real browser (Debian's chromium through Playwright) against a real
`emulator up`: runs (paging, throughput), one run (attempts, traceback, trace id, rerun with edited
arguments), workers, functions (schedules, the invoke console), queues, and the read-only dashboard of a
broken generation. A screenshot per view lands in the test's tmp folder."""

from __future__ import annotations

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
    app: views-test
    defaults: {retries: 0}
    functions:
      ping:
        handler: views_mod:ping
        http: {path: /ping, methods: [POST]}
      add:
        handler: views_mod:add
        task: {}
      boom:
        handler: views_mod:boom
        task: {}
      nightly:
        handler: views_mod:nightly
        task: {schedule: "30 5 * * *"}
"""
MODULE = """\
    from runtime import http, task


    @http
    async def ping(request):
        return {"pong": await request.json()}


    @task
    async def add(a: int, b: int) -> int:
        return a + b


    @task
    async def boom(reason: str) -> None:
        raise ValueError("kaboom: " + reason)


    @task
    async def nightly() -> None:
        return None
"""


def emulator_app(spawn: Callable[..., Process], tmp_path: Path) -> Emulator:
    app = tmp_path / "app"
    write_app(app, MANIFEST, {"views_mod.py": MODULE})
    return start_emulator(spawn, app)


@contextmanager
def browser_page(timezone: str = "UTC") -> Iterator[Page]:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, timezone_id=timezone)
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("dialog", lambda dialog: dialog.accept())
        expect.set_options(timeout=15_000)
        try:
            yield page
            assert problems == [], problems
        finally:
            browser.close()


def shot(page: Page, tmp_path: Path, name: str) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(tmp_path / f"dashboard-{name}.png"), full_page=True)


def enqueue(emulator: Emulator, name: str, arguments: dict[str, Any]) -> str:
    return str(emulator.enqueue(name, arguments)["id"])


@needs_chromium
def test_runs_run_workers_and_functions_views(spawn: Callable[..., Process], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    emulator = emulator_app(spawn, tmp_path)
    ids = [enqueue(emulator, "add", {"a": i, "b": 1}) for i in range(104)]
    failed = enqueue(emulator, "boom", {"reason": "on purpose"})
    emulator.wait_run(ids[-1])
    emulator.wait_run(failed)

    with browser_page(timezone="Asia/Kolkata") as page:
        # runs: the latest 100, then the older ones on the next page; times in the browser's timezone, which
        # the header names once
        page.goto(emulator.dashboard)
        expect(page.get_by_test_id("app-name")).to_have_text("views-test")
        rows = page.get_by_test_id("run-row")
        expect(rows).to_have_count(100)
        expect(page.get_by_test_id("runs-page")).to_contain_text("runs 1\u2013100")
        expect(rows.first.locator("td.time")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"))
        expect(page.get_by_test_id("updated")).to_contain_text("(UTC+05:30)")
        page.get_by_test_id("runs-older").click()
        expect(rows).to_have_count(5)
        expect(page.get_by_test_id("runs-page")).to_contain_text("runs 101\u2013105")
        expect(page.locator(f'[data-testid="run-row"][data-run-id="{ids[0]}"]')).to_be_visible()
        assert "offset=100" in page.url
        page.get_by_test_id("runs-newer").click()
        expect(rows).to_have_count(100)
        # throughput: the finished runs of the last hour, per minute, as an inline SVG
        expect(page.get_by_test_id("throughput-chart")).to_be_visible()
        expect(page.get_by_test_id("throughput-total")).to_contain_text("104 succeeded, 1 failed")
        shot(page, tmp_path, "runs")

        # one run: its attempt with the error type, traceback, duration and trace id
        page.locator(f'[data-testid="run-row"][data-run-id="{failed}"]').click()
        detail = page.get_by_test_id("run-detail")
        expect(detail.get_by_test_id("detail-id")).to_have_text(failed)
        expect(detail.get_by_test_id("attempt")).to_have_count(1)
        expect(detail.get_by_test_id("attempt-error-type")).to_have_text("ValueError")
        expect(detail.get_by_test_id("attempt-error")).to_contain_text("kaboom: on purpose")
        expect(detail.get_by_test_id("attempt-traceback")).to_contain_text("traceback")
        detail.get_by_test_id("attempt-traceback").locator("summary").click()
        expect(detail.get_by_test_id("attempt-traceback")).to_contain_text("raise ValueError")
        expect(detail.get_by_test_id("attempt-timeline")).to_be_visible()
        expect(detail.get_by_test_id("detail-attempts-total")).to_contain_text("over 1 attempt")
        expect(detail.get_by_test_id("detail-span")).not_to_have_text("—")
        trace = emulator.run(failed)["trace_id"]
        expect(detail.get_by_test_id("detail-trace-id")).to_have_text(trace or "—")
        expect(detail).not_to_contain_text("undefined")
        shot(page, tmp_path, "run")
        page.evaluate("document.getElementById('runs-layout').scrollIntoView()")
        page.screenshot(path=str(tmp_path / "dashboard-run-screen.png"))  # docs/dashboard.png is one of these

        # rerun with edited arguments: a new run of the same function with what was typed
        page.locator(f'[data-testid="run-row"][data-run-id="{ids[-1]}"]').click()
        expect(detail.get_by_test_id("detail-result")).to_have_text("104")
        detail.get_by_test_id("rerun-arguments").fill('{"a": 40, "b": 2}')
        detail.get_by_test_id("rerun-submit").click()
        expect(detail.get_by_test_id("detail-id")).not_to_have_text(ids[-1])
        expect(detail.get_by_test_id("detail-result")).to_have_text("42", timeout=20_000)
        expect(detail.get_by_test_id("detail-arguments")).to_contain_text('"a": 40')

        # workers: the emulator's worker publishes itself
        page.get_by_test_id("nav-workers").click()
        worker = page.get_by_test_id("worker-row")
        expect(worker).to_have_count(1)
        expect(worker).to_contain_text("default")
        expect(worker.get_by_test_id("worker-heartbeat")).to_contain_text("ago")
        assert re.search(r"view=workers", page.url)
        shot(page, tmp_path, "workers")

        # functions: each function, the cron function's next fire and last run, the invoke console
        page.get_by_test_id("nav-functions").click()
        expect(page.get_by_test_id("function-row")).to_have_count(4)
        schedule = page.get_by_test_id("schedule-row")
        expect(schedule).to_have_count(1)
        expect(schedule.get_by_test_id("schedule-next")).to_contain_text(" 11:00:00")  # 05:30 UTC
        expect(schedule.get_by_test_id("schedule-last")).to_contain_text("never")
        page.get_by_test_id("invoke-function").select_option("ping")
        expect(page.get_by_test_id("invoke-path")).to_have_value("/ping")
        page.get_by_test_id("invoke-body").fill('{"hello": "there"}')
        page.get_by_test_id("invoke-submit").click()
        expect(page.get_by_test_id("invoke-status")).to_contain_text("200")
        expect(page.get_by_test_id("invoke-response")).to_contain_text('"hello": "there"')
        page.get_by_test_id("invoke-path").fill("/nowhere")
        page.get_by_test_id("invoke-submit").click()
        expect(page.get_by_test_id("invoke-status")).to_contain_text("404")
        shot(page, tmp_path, "functions")

        # a reload keeps the view
        page.reload()
        expect(page.get_by_test_id("view-functions")).to_be_visible()
        expect(page.get_by_test_id("view-runs")).to_be_hidden()
        assert page.get_by_test_id("connection-error").is_hidden()
    assert emulator.interrupt() == 0


@needs_chromium
def test_a_broken_generation_still_shows_its_runs(spawn: Callable[..., Process], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    emulator = emulator_app(spawn, tmp_path)
    run_id = enqueue(emulator, "add", {"a": 1, "b": 2})
    emulator.wait_run(run_id)
    (emulator.app / "views_mod.py").write_text("from runtime import task\n\n@task\ndef add(a: int, b: int) -> int\n")
    emulator.process.wait_for("reload failed", timeout=30)
    assert httpx.get(f"{emulator.web}/ping", timeout=10).status_code == 503

    with browser_page() as page:
        page.goto(emulator.dashboard)
        error = page.get_by_test_id("app-error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("failed to load")
        expect(page.get_by_test_id("app-error-detail")).to_contain_text("views_mod.py")
        row = page.locator(f'[data-testid="run-row"][data-run-id="{run_id}"]')
        expect(row).to_have_attribute("data-status", "succeeded")
        row.click()
        expect(page.get_by_test_id("run-detail").get_by_test_id("detail-result")).to_have_text("3")
        expect(page.get_by_test_id("connection-error")).to_be_hidden()
        shot(page, tmp_path, "broken")

        # the next good save brings the whole dashboard back
        write_app(emulator.app, MANIFEST, {"views_mod.py": MODULE})
        emulator.process.wait_for("reloaded in", timeout=30)
        expect(error).to_be_hidden()
        expect(page.get_by_test_id("stat-succeeded")).to_contain_text("1")
    assert emulator.interrupt() == 0


@needs_chromium
def test_queues_view_pauses_and_resumes(spawn: Callable[..., Process], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    emulator = emulator_app(spawn, tmp_path)
    with browser_page() as page:
        page.goto(f"{emulator.dashboard}/#view=queues")
        queue = page.locator('[data-testid="queue-row"][data-queue="default"]')
        expect(queue).to_have_attribute("data-paused", "false")
        expect(queue.locator('[data-key="waiting"]')).to_have_text("0")
        shot(page, tmp_path, "queues")
        queue.get_by_test_id("queue-pause").click()
        expect(queue).to_have_attribute("data-paused", "true")
        time.sleep(1.5)  # workers read the paused flags once a second
        run_id = enqueue(emulator, "add", {"a": 1, "b": 1})
        expect(queue.locator('[data-key="waiting"]')).to_have_text("1")
        assert emulator.run(run_id)["status"] == "queued"
        queue.get_by_test_id("queue-resume").click()
        expect(queue).to_have_attribute("data-paused", "false")
        emulator.wait_run(run_id)
    assert emulator.interrupt() == 0


@needs_chromium
def test_search_bulk_actions_and_cancel(spawn: Callable[..., Process], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    emulator = emulator_app(spawn, tmp_path)
    failed = [enqueue(emulator, "boom", {"reason": f"needle-{i}"}) for i in range(3)]
    other = enqueue(emulator, "add", {"a": 1, "b": 1})
    for run_id in [*failed, other]:
        emulator.wait_run(run_id)
    with browser_page() as page:
        page.goto(emulator.dashboard)
        rows = page.get_by_test_id("run-row")
        expect(rows).to_have_count(4)
        # search: by argument text, then by the short id a row shows (the id's last 8 digits)
        short = page.locator(f'[data-testid="run-row"][data-run-id="{other}"]').get_by_test_id("run-link").inner_text()
        assert short == other[-8:]
        page.get_by_test_id("runs-search").fill("needle-1")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-run-id", failed[1])
        page.get_by_test_id("runs-search").fill(short)
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-run-id", other)
        page.get_by_test_id("runs-search").fill(other[:16])
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-run-id", other)
        page.get_by_test_id("runs-search").fill("")
        expect(rows).to_have_count(4)
        # bulk replay of every failed run of `boom`
        page.get_by_test_id("function-filter").select_option("boom")
        page.get_by_test_id("bulk-replay-failed").click()
        expect(page.get_by_test_id("bulk-notice")).to_contain_text("Replayed 3 runs")
        # bulk delete of the selected runs
        page.get_by_test_id("function-filter").select_option("")
        for run_id in failed:
            page.locator(f'[data-testid="run-row"][data-run-id="{run_id}"]').get_by_test_id("run-select").check()
        page.get_by_test_id("bulk-delete-selected").click()
        expect(page.get_by_test_id("bulk-notice")).to_contain_text("Deleted 3 runs")
        for run_id in failed:
            expect(page.locator(f'[data-testid="run-row"][data-run-id="{run_id}"]')).to_have_count(0)
        # cancel a run that waits for its time
        waiting = str(emulator.enqueue("add", {"a": 2, "b": 2}, delay=600)["id"])
        page.goto(f"{emulator.dashboard}/#run={waiting}")
        page.get_by_test_id("detail-cancel-button").click()
        expect(page.get_by_test_id("detail-notice")).to_contain_text("cancelled")
        page.wait_for_timeout(2500)  # a refresh re-renders the run: the notice stays (it vanished before)
        expect(page.get_by_test_id("detail-notice")).to_contain_text("cancelled")
    assert emulator.interrupt() == 0

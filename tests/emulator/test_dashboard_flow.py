"""Flow control in the functions view, in a real browser against a real `emulator up`: each task's settings in
words (the "limits" column) and what the limits hold now (the "Flow control now" table): 5 long runs of one
customer under `concurrency: {limit: 2, key: customer}` show 2/2 running and 3 waiting, and a rate-limited task's
turned-away runs show as skipped. The numbers expected come from the tasks' own log, not from our records."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Process, write_app
from tests.emulator.test_dashboard_browser import needs_chromium
from tests.emulator.test_dashboard_views import browser_page, enqueue, shot
from tests.emulator.test_dashboard_workers_queues import WIDTH, fits_the_width, log_lines
from tests.emulator.test_up import start_emulator

MANIFEST = """\
    app: flow-view-test
    defaults: {retries: 0, concurrency: 8}
    limits: {openai: {concurrency: 20}}
    functions:
      summarize:
        handler: "flow_mod:summarize"
        task: {concurrency: {limit: 2, key: customer}, limits: [openai]}
      notify:
        handler: "flow_mod:notify"
        task: {rate_limit: {limit: 1, period: 1h, key: customer}, throttle: {limit: 10, period: 1m}}
"""
# the tasks note each start in a log outside the app's folder (a write inside it would reload the app)
MODULE = """\
    import asyncio
    import os
    from pathlib import Path

    from runtime import task

    SIDE = Path(os.environ["FLOW_SIDE"])


    def note(line: str) -> None:
        with (SIDE / "ran.log").open("a") as log:
            log.write(line + "\\n")


    @task
    async def summarize(customer: str, n: int) -> None:
        note(f"started summarize {customer} {n}")
        while not (SIDE / "release").exists():
            await asyncio.sleep(0.05)


    @task
    async def notify(customer: str, n: int) -> None:
        note(f"ran notify {customer} {n}")
"""
SCREENSHOT = Path("/tmp/s/functions.png")


@needs_chromium
def test_functions_view_shows_flow_settings_and_what_the_limits_hold_now(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    side = tmp_path / "side"
    side.mkdir()
    app = tmp_path / "app"
    write_app(app, MANIFEST, {"flow_mod.py": MODULE})
    emulator = start_emulator(spawn, app, env={"FLOW_SIDE": str(side)})
    # the rate limit lets one notify of acme through in the hour: the other two end skipped, never run
    notified = [enqueue(emulator, "notify", {"customer": "acme", "n": n}) for n in range(3)]
    ended = [emulator.wait_run(run_id, ("succeeded", "failed", "skipped"))["status"] for run_id in notified]
    assert sorted(ended) == ["skipped", "skipped", "succeeded"]
    skipped = 3 - sum(line.startswith("ran notify") for line in log_lines(side))
    assert skipped == 2, log_lines(side)
    held = [enqueue(emulator, "summarize", {"customer": "acme", "n": n}) for n in range(5)]
    deadline = time.monotonic() + 30
    while sum(line.startswith("started summarize") for line in log_lines(side)) < 2:
        assert time.monotonic() < deadline, emulator.process.output
        time.sleep(0.05)
    time.sleep(1)  # a third start, were the limit not held, would show in the log by now
    running = sum(line.startswith("started summarize") for line in log_lines(side))
    assert running == 2, log_lines(side)

    with browser_page() as page:
        page.set_viewport_size({"width": WIDTH, "height": 900})
        page.goto(f"{emulator.dashboard}/#view=functions")
        functions = page.get_by_test_id("functions-table")
        summarize = functions.locator('[data-testid="function-row"][data-function="summarize"]')
        expect(summarize.get_by_test_id("function-limits")).to_have_text("2 per customer · openai")
        notify = functions.locator('[data-testid="function-row"][data-function="notify"]')
        expect(notify.get_by_test_id("function-limits")).to_have_text("10/1m throttle · 1/1h rate limit per customer")

        flow = page.get_by_test_id("flow-table")
        acme = flow.locator('[data-testid="flow-row"][data-function="summarize"][data-key="acme"]')
        expect(acme.locator('[data-key="running"]')).to_have_text(f"{running}/2")
        expect(acme.locator('[data-key="waiting"]')).to_have_text(str(5 - running))
        expect(acme.locator("td").nth(1)).to_have_text("concurrency customer")
        shared = flow.locator('[data-testid="flow-row"][data-function="*"]')
        expect(shared.locator('[data-key="running"]')).to_have_text(f"{running}/20")
        rated = flow.locator('[data-testid="flow-row"][data-function="notify"][data-key="acme"]')
        expect(rated.locator('[data-key="skipped"]')).to_have_text(str(skipped))
        # the busiest first: the 5 runs of acme (2 running, 3 waiting) head the table
        expect(flow.get_by_test_id("flow-row").first).to_have_attribute("data-key", "acme")
        expect(flow.get_by_test_id("flow-row").first).to_have_attribute("data-function", "summarize")
        assert fits_the_width(page), "the functions view scrolls sideways at 1280 px"
        shot(page, tmp_path, "functions")
        if SCREENSHOT.parent.is_dir():
            shutil.copyfile(tmp_path / "dashboard-functions.png", SCREENSHOT)

        (side / "release").touch()  # the waiting runs start as slots free; the table follows on its refresh
        for run_id in held:
            assert emulator.wait_run(run_id)["status"] == "succeeded"
        expect(acme).to_have_count(0)
    assert sum(line.startswith("started summarize") for line in log_lines(side)) == 5
    assert emulator.interrupt() == 0

"""The workers view at Flower's level and the queues view's chart, in a real browser against a real `emulator up`
whose worker ran tasks (some failing, one retried) and runs one now: the worker's concurrency, the attempts it
processed and failed since it started, the run it runs (a link to it); per queue, the runs processed and failed
per minute over the last hour. The numbers expected come from the tasks' own log, not from our records."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Process, write_app
from tests.emulator.test_dashboard_browser import needs_chromium
from tests.emulator.test_dashboard_views import browser_page, enqueue, shot
from tests.emulator.test_up import Emulator, start_emulator

MANIFEST = """\
    app: flower-test
    queues: {default: 3, low: 1}
    defaults: {retries: 0, concurrency: 3}
    functions:
      add: {handler: "wq_mod:add", task: {}}
      boom: {handler: "wq_mod:boom", task: {queue: low}}
      flaky: {handler: "wq_mod:flaky", task: {retries: 1, backoff: {base: 0.1, max: 0.1}}}
      hold: {handler: "wq_mod:hold", task: {}}
"""
# the tasks note each attempt in a log outside the app's folder (a write inside it would reload the app)
MODULE = """\
    import asyncio
    import os
    from pathlib import Path

    from runtime import task

    SIDE = Path(os.environ["WQ_SIDE"])


    def note(line: str) -> None:
        with (SIDE / "ran.log").open("a") as log:
            log.write(line + "\\n")


    @task
    async def add(a: int, b: int) -> int:
        note("ok add")
        return a + b


    @task
    async def boom(reason: str) -> None:
        note("failed boom")
        raise ValueError(reason)


    @task
    async def flaky(key: str) -> str:
        marker = SIDE / f"flaky-{key}"
        if not marker.exists():
            marker.touch()
            note("failed flaky")
            raise RuntimeError("the first attempt fails")
        note("ok flaky")
        return "the second one succeeds"


    @task
    async def hold() -> None:
        note("started hold")
        while not (SIDE / "release").exists():
            await asyncio.sleep(0.05)
        note("ok hold")
"""
WIDTH = 1280


def log_lines(side: Path) -> list[str]:
    path = side / "ran.log"
    return path.read_text().splitlines() if path.exists() else []


def fits_the_width(page: object) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))  # type: ignore[attr-defined]


@dataclass
class Ran:
    """An emulator whose worker ran the tasks below and runs `held` now, and what the tasks' log says."""

    emulator: Emulator
    side: Path
    held: str
    attempts_ended: int
    attempts_failed: int
    default_runs: int  # runs that ended in each queue
    low_runs: int


def run_tasks(spawn: Callable[..., Process], tmp_path: Path) -> Ran:
    """4 adds, 2 booms (on `low`, no retries), a flaky run that fails once then succeeds, and `hold`, running."""
    side = tmp_path / "side"
    side.mkdir()
    app = tmp_path / "app"
    write_app(app, MANIFEST, {"wq_mod.py": MODULE})
    emulator = start_emulator(spawn, app, env={"WQ_SIDE": str(side)})
    done = [enqueue(emulator, "add", {"a": i, "b": 1}) for i in range(4)]
    done += [enqueue(emulator, "boom", {"reason": f"on purpose {i}"}) for i in range(2)]
    done.append(enqueue(emulator, "flaky", {"key": "k"}))
    for run_id in done:
        emulator.wait_run(run_id)
    held = enqueue(emulator, "hold", {})
    deadline = time.monotonic() + 30
    while "started hold" not in log_lines(side):
        assert time.monotonic() < deadline, emulator.process.output
        time.sleep(0.05)
    lines = log_lines(side)
    ran = Ran(
        emulator,
        side,
        held,
        attempts_ended=sum(not line.startswith("started") for line in lines),
        attempts_failed=sum(line.startswith("failed") for line in lines),
        # each `ok` line ends a run of `default`; each boom (no retries) one of `low`
        default_runs=sum(line in ("ok add", "ok flaky") for line in lines),
        low_runs=sum(line == "failed boom" for line in lines),
    )
    assert (ran.attempts_ended, ran.attempts_failed, ran.default_runs, ran.low_runs) == (8, 3, 5, 2)
    return ran


def release(ran: Ran) -> None:
    (ran.side / "release").touch()
    assert ran.emulator.wait_run(ran.held)["status"] == "succeeded"
    assert ran.emulator.interrupt() == 0


@needs_chromium
def test_workers_view_shows_concurrency_processed_failed_and_the_running_run(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    ran = run_tasks(spawn, tmp_path)
    with browser_page() as page:
        page.set_viewport_size({"width": WIDTH, "height": 900})
        page.goto(f"{ran.emulator.dashboard}/#view=workers")
        worker = page.get_by_test_id("worker-row")
        expect(worker).to_have_count(1)
        expect(worker.get_by_test_id("worker-concurrency")).to_have_text("3")
        # attempts: flaky's failed first attempt counts as failed, as do both booms
        expect(worker.get_by_test_id("worker-processed")).to_have_text(str(ran.attempts_ended))
        expect(worker.get_by_test_id("worker-failed")).to_have_text(str(ran.attempts_failed))
        expect(worker.get_by_test_id("worker-running")).to_have_text("1")
        expect(worker.get_by_test_id("worker-uptime")).not_to_have_text("—")
        held = worker.locator(f'[data-testid="worker-run"][data-run-id="{ran.held}"]')
        expect(held.get_by_test_id("worker-run-link")).to_be_visible()
        assert fits_the_width(page), "the workers view scrolls sideways at 1280 px"
        shot(page, tmp_path, "workers")
        held.get_by_test_id("worker-run-link").click()  # opens that run
        expect(page.get_by_test_id("run-detail").get_by_test_id("detail-id")).to_have_text(ran.held)
    release(ran)


@needs_chromium
def test_queues_view_charts_processed_and_failed_per_minute(spawn: Callable[..., Process], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    ran = run_tasks(spawn, tmp_path)
    with browser_page() as page:
        page.set_viewport_size({"width": WIDTH, "height": 900})
        page.goto(f"{ran.emulator.dashboard}/#view=queues")
        default = page.locator('[data-testid="queue-chart"][data-queue="default"]')
        low = page.locator('[data-testid="queue-chart"][data-queue="low"]')
        expect(default).to_have_attribute("data-processed", str(ran.default_runs))
        expect(default).to_have_attribute("data-failed", "0")
        expect(low).to_have_attribute("data-processed", str(ran.low_runs))
        expect(low).to_have_attribute("data-failed", str(ran.low_runs))
        expect(low.get_by_test_id("queue-chart-total")).to_have_text(f"{ran.low_runs} processed, {ran.low_runs} failed")
        bars = default.get_by_test_id("queue-minute")
        expect(bars).to_have_count(60)
        assert sum(int(bars.nth(i).get_attribute("data-processed") or 0) for i in range(60)) == ran.default_runs
        expect(low.locator("rect.bad").first).to_be_visible()
        assert fits_the_width(page), "the queues view scrolls sideways at 1280 px"
        shot(page, tmp_path, "queues")
    release(ran)

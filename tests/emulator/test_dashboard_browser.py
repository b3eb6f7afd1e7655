"""The dashboard in a real browser (Debian's chromium through Playwright) against real processes:
`runtime worker` and `runtime dashboard` on a throwaway app, a private Redis and SQLite."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Dialog

from tests.conftest import Process, free_port, wait_for_port, write_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path("/tmp/dashboard.png")

MODULE = '''
import os

from runtime import http, task


@http
async def ping(request):
    return {"pong": True}


@task
def needs_file(path: str) -> dict:
    """Fails until the file named in its arguments exists (the "fix")."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"the fix file {path} is missing")
    return {"fixed": True, "path": path}


@task
async def nightly() -> None:
    return None
'''

MANIFEST = """
app: browser-test
defaults: {retries: 3, timeout: 30s, concurrency: 2}
functions:
  ping:
    handler: MODULE:ping
    http: {path: /ping, methods: [GET]}
  needs_file:
    handler: MODULE:needs_file
    task: {retries: 0, timeout: 10s}
  nightly:
    handler: MODULE:nightly
    task: {schedule: "30 5 * * *"}
"""


needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="no browser: /usr/bin/chromium is not installed")


def start(spawn: Callable[..., Process], tmp_path: Path, env: dict[str, str], worker: bool = True) -> str:
    """Start `runtime worker` (optionally) and `runtime dashboard` on a throwaway app; the dashboard's URL."""
    module = f"browser_{uuid.uuid4().hex[:12]}"
    manifest = write_app(tmp_path / "app", MANIFEST.replace("MODULE", module), {f"{module}.py": MODULE})
    port = free_port()
    dashboard = spawn(
        ["runtime", "dashboard", "--manifest", str(manifest), "--host", "127.0.0.1", "--port", str(port)],
        cwd=manifest.parent,
        env=env,
    )
    if worker:
        spawn(["runtime", "worker", "--manifest", str(manifest)], cwd=manifest.parent, env=env).wait_for(
            "ready: ", timeout=30
        )
    try:
        wait_for_port(port, timeout=30)
    except TimeoutError:
        pytest.fail(f"the dashboard did not start; output:\n{dashboard.output}")
    return f"http://127.0.0.1:{port}/"


@needs_chromium
def test_dashboard_in_a_browser(tmp_path: Path, redis_url: str, sqlite_url: str, spawn: Callable[..., Process]) -> None:
    from playwright.sync_api import expect, sync_playwright

    env = {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_url, "WORKER_HEALTH_PORT": "0"}
    url = start(spawn, tmp_path, env)
    fix = tmp_path / "fix.txt"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        dialogs: list[str] = []

        def accept(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            dialog.accept()

        page.on("dialog", accept)
        expect.set_options(timeout=10_000)
        try:
            page.goto(url)

            # the page loads and shows the app, its functions and the (empty) counts
            expect(page.get_by_test_id("app-name")).to_have_text("browser-test")
            functions = page.get_by_test_id("function-row")
            expect(functions).to_have_count(3)
            expect(functions.and_(page.locator('[data-function="needs_file"]'))).to_contain_text("10s")
            expect(functions.and_(page.locator('[data-function="ping"]'))).to_contain_text("GET /ping")
            expect(functions.and_(page.locator('[data-function="nightly"]'))).to_contain_text("30 5 * * *")
            expect(page.get_by_test_id("stat-failed")).to_contain_text("0")

            # the "run a task" form: an API error shows inline, then a good run is queued
            page.get_by_test_id("enqueue-function").select_option("needs_file")
            page.get_by_test_id("enqueue-arguments").fill('{"path": 5}')
            page.get_by_test_id("enqueue-submit").click()
            expect(page.get_by_test_id("enqueue-result")).to_contain_text("422")
            page.get_by_test_id("enqueue-arguments").fill('{"path": ')
            page.get_by_test_id("enqueue-submit").click()
            expect(page.get_by_test_id("enqueue-result")).to_contain_text("400")
            page.get_by_test_id("enqueue-arguments").fill(f'{{"path": "{fix}"}}')
            page.get_by_test_id("enqueue-submit").click()
            link = page.get_by_test_id("enqueued-run-link")
            expect(link).to_be_visible()
            run_id = link.get_attribute("title")
            assert run_id and re.fullmatch(r"[0-9a-f]{32}", run_id)

            # it fails; the runs table, the counts and the dead letters show it, with its error
            row = page.locator(f'[data-testid="run-row"][data-run-id="{run_id}"]')
            expect(row).to_have_attribute("data-status", "failed", timeout=20_000)
            expect(row.get_by_test_id("run-status")).to_have_text("failed")
            expect(row).to_contain_text("the fix file")
            expect(row).to_contain_text("1/1")
            expect(page.get_by_test_id("stat-failed")).to_contain_text("1")
            expect(page.get_by_test_id("queue-dead")).to_contain_text("1")
            dead = page.locator(f'[data-testid="dead-letter-row"][data-run-id="{run_id}"]')
            expect(dead).to_contain_text("FileNotFoundError")

            # its detail (opened by the form): arguments, the attempt and its error
            detail = page.get_by_test_id("run-detail")
            expect(detail).to_be_visible()
            expect(detail.get_by_test_id("detail-id")).to_have_text(run_id)
            expect(detail.get_by_test_id("detail-arguments")).to_contain_text(str(fix))
            expect(detail.get_by_test_id("attempt")).to_have_count(1)
            expect(detail.get_by_test_id("attempt-error")).to_contain_text("the fix file")

            # filters live in the URL hash, so a reload keeps them (and the open run)
            page.get_by_test_id("status-filter").select_option("succeeded")
            expect(page.get_by_test_id("run-row")).to_have_count(0)
            page.get_by_test_id("status-filter").select_option("failed")
            page.get_by_test_id("function-filter").select_option("needs_file")
            expect(row).to_be_visible()
            assert "status=failed" in page.url and "function=needs_file" in page.url
            page.reload()
            expect(page.get_by_test_id("status-filter")).to_have_value("failed")
            expect(page.get_by_test_id("function-filter")).to_have_value("needs_file")
            expect(row).to_be_visible()
            expect(page.get_by_test_id("run-detail").get_by_test_id("detail-id")).to_have_text(run_id)
            page.get_by_test_id("status-filter").select_option("")

            # the fix, then Replay: the new run succeeds and the page shows it without a reload
            fix.write_text("fixed")
            dead.get_by_test_id("replay-button").click()
            replayed = page.get_by_test_id("replayed-run-link")
            expect(replayed).to_be_visible()
            new_id = replayed.get_attribute("title")
            assert new_id and new_id != run_id
            new_row = page.locator(f'[data-testid="run-row"][data-run-id="{new_id}"]')
            expect(new_row).to_have_attribute("data-status", "succeeded", timeout=15_000)
            expect(new_row.get_by_test_id("run-status")).to_have_text("succeeded")
            expect(dead).to_have_count(0)
            expect(page.get_by_test_id("queue-dead")).to_contain_text("0")
            expect(detail.get_by_test_id("detail-id")).to_have_text(new_id)
            expect(detail.get_by_test_id("run-status")).to_have_text("succeeded")
            expect(detail.get_by_test_id("detail-result")).to_contain_text('"fixed": true')
            expect(detail.get_by_test_id("replay-of-link")).to_have_attribute("title", run_id)
            expect(detail).not_to_contain_text("null")
            expect(detail).not_to_contain_text("undefined")
            expect(page.get_by_test_id("stat-succeeded")).to_contain_text("1")

            # Delete (after a confirm) removes a dead letter and its record
            page.get_by_test_id("enqueue-arguments").fill(f'{{"path": "{tmp_path / "never"}"}}')
            link = page.get_by_test_id("enqueued-run-link")
            previous_id = link.get_attribute("title") if link.count() else None  # an older link may be shown
            page.get_by_test_id("enqueue-submit").click()
            expect(link).to_be_visible()
            if previous_id:
                expect(link).not_to_have_attribute("title", previous_id)
            doomed_id = link.get_attribute("title")
            doomed = page.locator(f'[data-testid="dead-letter-row"][data-run-id="{doomed_id}"]')
            expect(doomed).to_contain_text("never", timeout=20_000)
            doomed.get_by_test_id("delete-button").click()
            expect(doomed).to_have_count(0)
            expect(page.locator(f'[data-testid="run-row"][data-run-id="{doomed_id}"]')).to_have_count(0)
            expect(page.get_by_test_id("dead-letter-notice")).to_contain_text("deleted")
            expect(detail).to_be_hidden()
            assert dialogs and "Delete run" in dialogs[0]

            # the replayed run is still there to look at
            new_row.click()
            expect(detail.get_by_test_id("detail-id")).to_have_text(new_id)
            detail.get_by_test_id("replay-of-link").click()
            expect(detail.get_by_test_id("detail-id")).to_have_text(run_id)
            expect(detail.get_by_test_id("run-status")).to_have_text("failed")
            page.locator(f'[data-testid="run-row"][data-run-id="{new_id}"]').click()
            expect(detail.get_by_test_id("detail-id")).to_have_text(new_id)

            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert problems == [], problems
            assert page.get_by_test_id("connection-error").is_hidden()
        finally:
            browser.close()


@needs_chromium
def test_dashboard_asks_for_its_token(
    tmp_path: Path, redis_url: str, sqlite_url: str, spawn: Callable[..., Process]
) -> None:
    from playwright.sync_api import expect, sync_playwright

    env = {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_url, "DASHBOARD_TOKEN": "let-me-in-please-0123"}
    url = start(spawn, tmp_path, env, worker=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        expect.set_options(timeout=10_000)
        try:
            page.goto(url)
            prompt = page.get_by_test_id("token-prompt")
            expect(prompt).to_be_visible()
            page.get_by_test_id("token-input").fill("wrong")
            page.get_by_test_id("token-submit").click()
            expect(prompt).to_be_visible()
            expect(page.get_by_test_id("token-error")).to_contain_text("not accepted")
            page.get_by_test_id("token-input").fill("let-me-in-please-0123")
            page.get_by_test_id("token-submit").click()
            expect(prompt).to_be_hidden()
            expect(page.get_by_test_id("function-row")).to_have_count(3)
            # kept for the tab: a reload does not ask again
            page.reload()
            expect(page.get_by_test_id("function-row")).to_have_count(3)
            expect(prompt).to_be_hidden()
        finally:
            browser.close()

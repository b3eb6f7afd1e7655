"""The emulator's dashboard (no token) against other sites, in a real browser (Debian's chromium through
Playwright): a page served from another port cannot enqueue or replay a run with "simple" no-cors requests,
and a request for another host name (DNS rebinding) is refused, while the dashboard's own page still works."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Process, free_port
from tests.emulator.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, needs_chromium
from tests.emulator.test_up import Emulator, make_app, start_emulator

ATTACK = """<!doctype html>
<title>cute cats</title>
<script>
(async () => {
  const dashboard = "DASHBOARD";
  const attempts = [
    // "simple" requests: a browser sends them cross-origin without asking the server first
    fetch(`${dashboard}/api/functions/add/runs`, {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "text/plain"}, body: JSON.stringify({a: 40, b: 2})}),
    fetch(`${dashboard}/api/functions/add/runs`, {method: "POST", mode: "no-cors", body: "{}"}),
    fetch(`${dashboard}/api/runs/RUN_ID/replay`, {method: "POST", mode: "no-cors"}),
    fetch(`${dashboard}/api/runs/RUN_ID/replay`, {method: "POST", mode: "no-cors",
      headers: {"Content-Type": "text/plain"}, body: "x"}),
    // and a read: CORS hides the answer, the dashboard refuses it anyway
    fetch(`${dashboard}/api/runs`, {mode: "no-cors"}),
  ];
  await Promise.allSettled(attempts);
  document.title = "done";
})();
</script>
"""


@pytest.fixture
def emulator(spawn: Callable[..., Process], tmp_path: Path) -> Emulator:
    return start_emulator(spawn, make_app(tmp_path / "app"))


@pytest.fixture
def attacker_site(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A tiny static site on another port of the same machine: (its folder, its URL)."""
    site = tmp_path / "site"
    site.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(site), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def failed_run(emulator: Emulator) -> str:
    run_id = str(emulator.enqueue("boom", {})["id"])
    assert emulator.wait_run(run_id)["status"] == "failed"
    return run_id


def run_ids(emulator: Emulator) -> set[str]:
    return {run["id"] for run in httpx.get(f"{emulator.dashboard}/api/runs", timeout=10).json()}


@needs_chromium
def test_a_page_on_another_port_cannot_enqueue_or_replay(emulator: Emulator, attacker_site: tuple[Path, str]) -> None:
    from playwright.sync_api import sync_playwright

    run_id = failed_run(emulator)
    site, site_url = attacker_site
    (site / "index.html").write_text(ATTACK.replace("DASHBOARD", emulator.dashboard).replace("RUN_ID", run_id))

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            answers: dict[str, list[int]] = {}
            page.on(
                "response",
                lambda response: answers.setdefault(response.request.method + " " + response.url, []).append(
                    response.status
                ),
            )
            page.goto(f"{site_url}/index.html")
            page.wait_for_function("document.title === 'done'", timeout=15_000)

            # the requests did reach the dashboard, which refused every one
            to_dashboard = {key: codes for key, codes in answers.items() if emulator.dashboard in key}
            assert len(to_dashboard) == 3 and sum(len(codes) for codes in to_dashboard.values()) == 5, answers
            assert all(code == 403 for codes in to_dashboard.values() for code in codes), answers

            # the dashboard's own page, in the same browser, still enqueues and replays
            page.goto(emulator.dashboard + "/")
            statuses = page.evaluate(
                """async (runId) => {
                    const enqueue = await fetch("/api/functions/add/runs", {method: "POST",
                        headers: {"Content-Type": "application/json"}, body: JSON.stringify({a: 1, b: 2})});
                    const replay = await fetch(`/api/runs/${runId}/replay`, {method: "POST"});
                    return [enqueue.status, replay.status];
                }""",
                run_id,
            )
            assert statuses == [202, 201]
        finally:
            browser.close()

    # nothing the other page sent created a run: only the failed run and the dashboard's own two
    runs = httpx.get(f"{emulator.dashboard}/api/runs", timeout=10).json()
    assert len(runs) == 3, runs
    assert sorted(run["function"] for run in runs) == ["add", "boom", "boom"]
    assert [run["arguments"] for run in runs if run["function"] == "add"] == [{"a": 1, "b": 2}]


def test_another_host_name_is_refused(emulator: Emulator) -> None:
    """DNS rebinding: evil.example resolving to 127.0.0.1 must not read the runs."""
    failed_run(emulator)
    port = emulator.dashboard_port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1", "localhost"):
        response = httpx.get(f"{emulator.dashboard}/api/runs", headers={"host": host}, timeout=10)
        assert response.status_code == 403, host
        assert "Host" in response.json()["error"]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}"):
        response = httpx.get(f"{emulator.dashboard}/api/runs", headers={"host": host}, timeout=10)
        assert response.status_code == 200 and len(response.json()) == 1, host


def test_another_origin_is_refused(emulator: Emulator) -> None:
    url = f"{emulator.dashboard}/api/functions/add/runs"
    for origin in (
        "http://evil.example",
        f"http://127.0.0.1:{free_port()}",
        "null",
        f"https://127.0.0.1:{emulator.dashboard_port}",
    ):
        response = httpx.post(url, json={"a": 1, "b": 2}, headers={"origin": origin}, timeout=10)
        assert response.status_code == 403 and "Origin" in response.json()["error"], origin
    assert run_ids(emulator) == set()
    own = httpx.post(url, json={"a": 1, "b": 2}, headers={"origin": emulator.dashboard}, timeout=10)
    assert own.status_code == 202


def test_a_write_with_a_body_that_is_not_json_is_refused(emulator: Emulator) -> None:
    url = f"{emulator.dashboard}/api/functions/add/runs"
    response = httpx.post(url, content=b'{"a": 1, "b": 2}', headers={"content-type": "text/plain"}, timeout=10)
    assert response.status_code == 403 and "application/json" in response.json()["error"]
    assert run_ids(emulator) == set()

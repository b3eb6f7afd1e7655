"""The install users get: the wheel with no extras, in a fresh venv, run from a folder outside the checkout.

A dev venv hid a missing dependency (greenlet) for a whole wave, so this builds the wheel, installs it with
`constraints.txt` (what the image installs) and drives the example app to `completed` with every production
process, and with `emulator up`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Process, free_port, wait_for_port

pytestmark = pytest.mark.install


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project's wheel installed, no extras."""
    base = tmp_path_factory.mktemp("bare")
    dist = base / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = dist.glob("first_sip_runtime-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return venv


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """The example app copied outside the checkout: nothing can be imported from the source tree."""
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(ROOT / "manifest.yaml", app / "manifest.yaml")
    shutil.copytree(ROOT / "functions", app / "functions", ignore=shutil.ignore_patterns("__pycache__"))
    return app


@pytest.fixture
def started() -> Iterator[list[Process]]:
    processes: list[Process] = []
    yield processes
    for process in processes:
        process.stop()


def _env(**more: str) -> dict[str, str]:
    # no PYTHONPATH, and a PATH without the dev venv: only the bare venv's commands are used
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return {"PYTHONPATH": "", "PATH": path, "BRIEFING_SOURCE_LATENCY": "0.3"} | more


def _get(url: str, **headers: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def _post(url: str, data: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(data).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def _briefing_completes(base: str) -> dict[str, Any]:
    status, created = _post(f"{base}/briefings", {"topic": "bare install"})
    assert status == 202, created
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, briefing = _get(f"{base}/briefings/{created['id']}")
        if briefing.get("status") in ("completed", "failed"):
            break
        time.sleep(0.2)
    assert briefing["status"] == "completed", briefing
    return briefing


def _health(port: int) -> int:
    return _get(f"http://127.0.0.1:{port}/health")[0]


def test_every_production_process_runs_the_example_from_a_bare_install(
    bare_venv: Path, app_dir: Path, redis_url: str, started: list[Process]
) -> None:
    runtime = str(bare_venv / "bin" / "runtime")
    check = subprocess.run(
        [runtime, "check"], cwd=app_dir, env=os.environ | _env(), capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr

    web, worker_health, scheduler_health, dashboard = (free_port() for _ in range(4))
    env = _env(REDIS_URL=redis_url, DATABASE_URL=f"sqlite:///{app_dir}/runs.db", DASHBOARD_TOKEN="t" * 32)
    started.append(Process([runtime, "web", "--host", "127.0.0.1", "--port", str(web)], app_dir, env))
    started.append(Process([runtime, "worker"], app_dir, env | {"WORKER_HEALTH_PORT": str(worker_health)}))
    started.append(Process([runtime, "scheduler"], app_dir, env | {"WORKER_HEALTH_PORT": str(scheduler_health)}))
    started.append(Process([runtime, "dashboard", "--host", "127.0.0.1", "--port", str(dashboard)], app_dir, env))
    for port in (web, worker_health, scheduler_health, dashboard):
        try:
            wait_for_port(port, timeout=30)
        except TimeoutError:
            pytest.fail("a process did not start:\n" + "\n---\n".join(p.output for p in started))

    briefing = _briefing_completes(f"http://127.0.0.1:{web}")
    assert briefing["content"]
    for port in (web, worker_health, scheduler_health, dashboard):
        assert _health(port) == 200
    status, runs = _get(f"http://127.0.0.1:{dashboard}/api/runs", Authorization=f"Bearer {'t' * 32}")
    assert status == 200 and any(r["function"] == "generate_briefing" for r in runs)
    for process in started:
        assert "Traceback" not in process.output, process.output


def test_emulator_up_runs_the_example_from_a_bare_install(
    bare_venv: Path, app_dir: Path, started: list[Process]
) -> None:
    port, dashboard = free_port(), free_port()
    emulator = Process(
        [str(bare_venv / "bin" / "emulator"), "up", "--port", str(port), "--dashboard-port", str(dashboard)],
        app_dir,
        _env(),
    )
    started.append(emulator)
    emulator.wait_for("ready", timeout=60)
    _briefing_completes(f"http://127.0.0.1:{port}")
    status, page = _get(f"http://127.0.0.1:{dashboard}/")
    assert status == 200 and "<html" in page.lower()  # the page is package data
    assert "Traceback" not in emulator.output, emulator.output

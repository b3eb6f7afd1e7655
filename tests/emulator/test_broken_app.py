"""While the app in `emulator up` fails to load (a syntax error in its handler module), as a newcomer meets it:
`emulator invoke` answers one line naming the file and the line, and the inspector commands keep working (they
need Redis and the database, not the app); only a replay, which checks arguments against the functions, refuses.
One emulator for the module, with a run recorded before the module broke."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Process, command, free_port
from tests.emulator.test_up import Emulator, make_app


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulator, str, int]]:
    """The emulator, the id of a run that succeeded before the break, and the line of the syntax error."""
    app = make_app(tmp_path_factory.mktemp("broken") / "app")
    port, dashboard_port = free_port(), free_port()
    args = ["up", "--port", str(port), "--dashboard-port", str(dashboard_port)]
    process = Process([command("emulator"), *args], cwd=app, env={})
    try:
        process.wait_for("emulator ready", timeout=60)
        emulator = Emulator(process, app, port, dashboard_port)
        run_id = emulator.enqueue("add", {"a": 2, "b": 3})["id"]
        assert emulator.wait_run(run_id)["status"] == "succeeded"
        source = app / "app_mod.py"
        good = source.read_text()
        source.write_text(good + "def broken(:\n")
        emulator.wait_for_count("reload failed", 1)
        yield emulator, run_id, good.count("\n") + 1
    finally:
        process.stop()


def run(command_name: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    return subprocess.run([command(command_name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "", result.stdout
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("name", ["add", "hello", "nope"])
def test_invoke_answers_one_line_naming_the_file_and_the_line(broken: tuple[Emulator, str, int], name: str) -> None:
    """It read the 503 body as the list of functions: `TypeError: string indices must be integers`."""
    emulator, _, line = broken
    result = run("emulator", emulator.app, "invoke", name, "--data", '{"a": 1, "b": 2}', "--wait")
    error = assert_one_line_error(result)
    assert "the app failed to load" in error and f"app_mod.py, line {line}: SyntaxError" in error, error


def test_runs_and_queues_work_while_the_app_fails_to_load(broken: tuple[Emulator, str, int]) -> None:
    emulator, run_id, _ = broken
    listed = run("runtime", emulator.app, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [run_id]
    shown = run("runtime", emulator.app, "runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "status     succeeded" in shown.stdout and "result     5" in shown.stdout
    queues = run("runtime", emulator.app, "queues", "--json")
    assert queues.returncode == 0, queues.stderr
    assert json.loads(queues.stdout)["default"]["succeeded_last_hour"] == 1
    paused = run("runtime", emulator.app, "queues", "pause", "default")
    assert paused.returncode == 0, paused.stderr
    resumed = run("runtime", emulator.app, "queues", "resume", "default")
    assert resumed.returncode == 0, resumed.stderr


def test_replay_refuses_in_one_line_while_the_app_fails_to_load(broken: tuple[Emulator, str, int]) -> None:
    emulator, _, line = broken
    error = assert_one_line_error(run("runtime", emulator.app, "runs", "replay", "--failed"))
    assert "cannot replay while the app fails to load" in error and f"app_mod.py, line {line}" in error, error


def test_a_second_emulator_in_the_same_folder_refuses_in_one_line(broken: tuple[Emulator, str, int]) -> None:
    """It started, on other ports, over the first one's Redis data and state.json."""
    emulator, _, _ = broken
    args = ["up", "--port", str(free_port()), "--dashboard-port", str(free_port())]
    error = assert_one_line_error(run("emulator", emulator.app, *args))
    assert "an emulator already runs in" in error and emulator.dashboard in error, error
    assert emulator.state()["dashboard"] == emulator.dashboard

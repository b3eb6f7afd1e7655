"""`emulator invoke NAME [--data JSON] [--wait]` against a running `emulator up` (one for the module):
a task's run and result, a failing task's error and exit code 1, an HTTP function's response."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Process, command, free_port
from tests.emulator.test_up import Emulator, make_app


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    app = make_app(tmp_path_factory.mktemp("invoke") / "app")
    port, dashboard_port = free_port(), free_port()
    args = ["up", "--port", str(port), "--dashboard-port", str(dashboard_port)]
    process = Process([command("emulator"), *args], cwd=app, env={})
    try:
        process.wait_for("emulator ready", timeout=60)
        yield Emulator(process, app, port, dashboard_port)
    finally:
        process.stop()


def invoke(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([command("emulator"), "invoke", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


RUN_LINE = re.compile(r"^run ([0-9a-f]+) (\w+)$", re.MULTILINE)


def test_task_with_wait_prints_the_result(emulator: Emulator) -> None:
    result = invoke(emulator.app, "add", "--data", '{"a": 2, "b": 3}', "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    match = RUN_LINE.search(result.stdout)
    assert match, result.stdout
    assert json.loads(result.stdout[match.end() :]) == 5
    run = emulator.run(match.group(1))
    assert run["status"] == "succeeded" and run["result"] == 5


def test_task_without_wait_prints_the_run(emulator: Emulator) -> None:
    result = invoke(emulator.app, "slow", "--data", '{"seconds": 0}')
    assert result.returncode == 0, result.stdout + result.stderr
    match = RUN_LINE.search(result.stdout)
    assert match, result.stdout
    assert match.group(2) in ("queued", "running", "succeeded")
    assert emulator.wait_run(match.group(1))["result"] == "slept v1"


def test_failing_task_exits_1_with_the_error(emulator: Emulator) -> None:
    result = invoke(emulator.app, "boom", "--wait")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "kaboom from the test task" in result.stdout + result.stderr
    match = RUN_LINE.search(result.stdout)
    assert match, result.stdout
    assert emulator.run(match.group(1))["status"] == "failed"


def test_task_with_invalid_arguments_is_an_error(emulator: Emulator) -> None:
    result = invoke(emulator.app, "add", "--data", '{"a": "not a number", "b": 1}', "--wait")
    assert result.returncode == 1
    assert "'add'" in result.stderr and "valid integer" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_http_function_prints_the_response(emulator: Emulator) -> None:
    result = invoke(emulator.app, "hello")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GET /hello -> 200" in result.stdout
    assert '{"marker":"v1"}' in result.stdout


def test_http_function_with_path_params_and_body(emulator: Emulator) -> None:
    result = invoke(emulator.app, "echo", "--data", '{"n": 7, "topic": "tea"}')
    assert result.returncode == 0, result.stdout + result.stderr
    assert "POST /echo/7 -> 200" in result.stdout
    body = json.loads(result.stdout.splitlines()[-1])
    assert body == {"n": 7, "body": {"topic": "tea"}, "marker": "v1"}


def test_manifest_option_from_another_folder(emulator: Emulator, tmp_path: Path) -> None:
    result = invoke(tmp_path, "hello", "--manifest", str(emulator.app / "manifest.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert '{"marker":"v1"}' in result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Every answer to an error: one line on stderr, exit 1."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_unknown_function_lists_the_functions(emulator: Emulator) -> None:
    error = one_line_error(invoke(emulator.app, "nope"))
    assert "nope" in error and "add" in error and "hello" in error


@pytest.mark.parametrize("data", ["{not json", "[1, 2]", "7"])
def test_invalid_data_is_an_error(emulator: Emulator, data: str) -> None:
    assert "--data" in one_line_error(invoke(emulator.app, "add", "--data", data))


def test_a_missing_route_parameter_is_an_error(emulator: Emulator) -> None:
    assert "--data needs 'n'" in one_line_error(invoke(emulator.app, "echo", "--data", '{"topic": "tea"}'))


def test_a_state_file_that_is_not_an_emulators_is_an_error(tmp_path: Path) -> None:
    make_app(tmp_path)
    (tmp_path / ".emulator").mkdir()
    (tmp_path / ".emulator" / "state.json").write_text('["not", "a", "state"]')
    assert "emulator up" in one_line_error(invoke(tmp_path, "add"))


def test_no_running_emulator_is_a_clear_error(tmp_path: Path) -> None:
    make_app(tmp_path)
    result = invoke(tmp_path, "hello")
    assert result.returncode == 1
    assert "emulator up" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_stopped_emulator_is_a_clear_error(tmp_path: Path) -> None:
    """state.json left by an emulator that is no longer running."""
    make_app(tmp_path)
    (tmp_path / ".emulator").mkdir()
    urls = {"web": f"http://127.0.0.1:{free_port()}", "dashboard": f"http://127.0.0.1:{free_port()}"}
    (tmp_path / ".emulator" / "state.json").write_text(json.dumps(urls))
    result = invoke(tmp_path, "add", "--data", '{"a": 1, "b": 2}', "--wait")
    assert result.returncode == 1
    assert "does not answer" in result.stderr and "emulator up" in result.stderr
    assert "Traceback" not in result.stderr

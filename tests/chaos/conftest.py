"""Fixtures for the chaos suite: the chaos app, its side-effect log, and fleets of workers stopped after each test.
The numbers of every scenario are printed at the end of the session, one line each (for BENCHMARKS.md)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from emulator.embedded_redis import EmbeddedRedis
from tests.chaos.harness import SUMMARIES, Fleet, write_chaos_app


@pytest.fixture(scope="module")
def chaos_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_chaos_app(tmp_path_factory.mktemp("chaos-app"))


@pytest.fixture
def own_redis(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A Redis of this test's own, with its AOF on (it is killed, paused and restarted)."""
    server = EmbeddedRedis(tmp_path / "redis", persistent=True)
    server.start()
    yield server
    if server.process and server.process.poll() is None:
        server.process.send_signal(signal.SIGCONT)
    server.stop()


@pytest.fixture
def effects_log(tmp_path: Path) -> Path:
    return tmp_path / "effects.log"


@pytest.fixture
def fleets() -> Iterator[Callable[..., Fleet]]:
    """fleets(manifest, env) -> a Fleet; every process of every fleet is stopped after the test."""
    made: list[Fleet] = []

    def make(manifest: Path, env: dict[str, str], kind: str = "worker") -> Fleet:
        fleet = Fleet(manifest, env, kind)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARIES:
        terminalreporter.section("chaos summary")
        for line in SUMMARIES:
            terminalreporter.write_line(line)

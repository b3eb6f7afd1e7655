"""`emulator up` prints its own `ready` last: a script waiting for "ready" must not match the worker's or the
scheduler's start line (issue 11 §8)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Process
from tests.emulator.test_up import make_app, start_emulator


def test_the_emulator_announces_itself_last(spawn: Callable[..., Process], tmp_path: Path) -> None:
    emulator = start_emulator(spawn, make_app(tmp_path / "app"))
    lines = list(emulator.process.lines)
    first = next(line for line in lines if "ready" in line)
    assert first.startswith("emulator ready"), emulator.process.output
    at = lines.index(first)
    # the worker and the scheduler said they started, before the emulator's line
    assert any("worker" in line and "started: " in line for line in lines[:at]), emulator.process.output
    assert any("scheduler started: " in line for line in lines[:at]), emulator.process.output
    assert emulator.interrupt() == 0

"""The sync pool on its own, in-process, with real child processes: its size, a killed child's warm
replacement, timeouts that count from the function's start, and errors carried back with their traces."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.worker.sync_pool import SyncPool, SyncProcessError, TaskError

PREFIX = f"pool_{uuid.uuid4().hex[:8]}"

JOBS = """
import os, time

def pid():
    return os.getpid()

def nap(seconds):
    time.sleep(seconds)
    return os.getpid()

def fails():
    raise ValueError("bad input 42")

def unpicklable():
    return lambda: None
"""

SLOW_IMPORT = """
import os, time
time.sleep(1.0)  # a heavy import: it must not count against the task's timeout

def pid():
    return os.getpid()
"""

HANGS = """
import time
time.sleep(60)

def never():
    pass
"""


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("jobs")
    sources = {"jobs": JOBS, "slow_import": SLOW_IMPORT, "hangs": HANGS, "broken": "import nowhere_42\n"}
    for name, source in sources.items():
        (folder / f"{PREFIX}_{name}.py").write_text(source)
    return folder


@pytest.fixture
async def pool(modules: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SyncPool]:
    monkeypatch.syspath_prepend(str(modules))  # the children get the worker's sys.path
    pools: list[SyncPool] = []

    def make(size: int, **options: float) -> SyncPool:
        pools.append(SyncPool(size, **options))
        return pools[-1]

    yield make  # type: ignore[misc]
    for made in pools:
        made.close()


def ref(module: str, attribute: str) -> str:
    return f"{PREFIX}_{module}:{attribute}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def until(condition, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_warm_fills_the_pool_to_its_size_and_no_further(pool):
    sync = pool(3)
    sync.warm([ref("jobs", "pid")])
    await until(lambda: len(sync.children) == 3 and all(c.is_ready for c in sync.children))
    warm = {c.pid for c in sync.children}
    # as many at once as the pool's size, each in a warm child of its own: no process is started for them
    pids = await asyncio.gather(*(sync.run(ref("jobs", "nap"), {"seconds": 0.3}, 5) for _ in range(3)))
    assert set(pids) == warm
    # more than the size at once: they wait their turn, still in the same three processes
    pids = await asyncio.gather(*(sync.run(ref("jobs", "nap"), {"seconds": 0.1}, 5) for _ in range(6)))
    assert set(pids) == warm and len(sync.children) == 3


async def test_warm_after_a_delay_starts_no_process_before_it(pool):
    """The emulator's reloaded generation fills its pool only once it has served a while."""
    sync = pool(2)
    sync.warm([ref("jobs", "pid")], after=0.5)
    await asyncio.sleep(0.3)
    assert sync.children == []
    await until(lambda: len(sync.children) == 2 and all(c.is_ready for c in sync.children))


async def test_a_timed_out_child_is_killed_and_replaced_by_a_warm_one(pool):
    sync = pool(1)
    sync.warm([ref("jobs", "pid")])
    first = await sync.run(ref("jobs", "pid"), {}, 5)
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        await sync.run(ref("jobs", "nap"), {"seconds": 10}, 0.3)
    assert 0.3 <= time.monotonic() - began < 2
    assert not alive(first)  # killed and reaped before the attempt counted as failed
    # a replacement starts without waiting for a task, and the next task finds it ready
    await until(lambda: sync.children and sync.children[0].is_ready)
    began = time.monotonic()
    second = await sync.run(ref("jobs", "pid"), {}, 5)
    latency = time.monotonic() - began
    print(f"a task on the warm replacement: {latency * 1000:.1f} ms")
    assert second != first and latency < 0.5


async def test_the_timeout_counts_from_the_functions_start_not_the_import(pool):
    sync = pool(1)  # not warmed, and the handler's module takes 1 s to import
    began = time.monotonic()
    assert await sync.run(ref("slow_import", "pid"), {}, 0.3) > 0
    assert time.monotonic() - began >= 1.0
    # but the function's own time counts
    with pytest.raises(TimeoutError):
        await sync.run(ref("jobs", "nap"), {"seconds": 2}, 0.3)


async def test_a_child_that_never_starts_the_function_frees_its_slot(pool):
    sync = pool(1, start_timeout=1.0)
    began = time.monotonic()
    with pytest.raises(SyncProcessError, match=r"did not start it within 1s"):
        await sync.run(ref("hangs", "never"), {}, 0.3)
    assert time.monotonic() - began < 3
    assert await sync.run(ref("jobs", "pid"), {}, 5) > 0  # the slot is free again, on a new child


async def test_an_exception_comes_back_with_its_traceback(pool):
    sync = pool(1)
    with pytest.raises(TaskError) as caught:
        await sync.run(ref("jobs", "fails"), {}, 5)
    assert str(caught.value) == "ValueError: bad input 42"
    assert 'raise ValueError("bad input 42")' in caught.value.trace
    with pytest.raises(TaskError, match=r"^(PicklingError|AttributeError): "):
        await sync.run(ref("jobs", "unpicklable"), {}, 5)
    assert await sync.run(ref("jobs", "pid"), {}, 5) > 0  # the same child goes on serving


async def test_a_handler_module_that_fails_to_import_is_an_error_not_a_hang(pool):
    sync = pool(1)
    sync.warm([ref("broken", "anything")])  # a failed preload does not stop the child
    began = time.monotonic()
    with pytest.raises(TaskError, match=r"^ModuleNotFoundError: No module named 'nowhere_42'$") as caught:
        await sync.run(ref("broken", "anything"), {}, 0.5)
    assert "import nowhere_42" in caught.value.trace
    assert time.monotonic() - began < 10


async def test_a_child_that_dies_mid_task_is_a_clear_error_and_is_replaced(pool):
    sync = pool(1)
    task = asyncio.ensure_future(sync.run(ref("jobs", "nap"), {"seconds": 10}, 20))
    await until(lambda: sync._busy and next(iter(sync._busy)).is_ready)
    await asyncio.sleep(0.3)
    os.kill(next(iter(sync._busy)).pid, 9)
    with pytest.raises(SyncProcessError, match=r"exited \(code -9\)"):
        await task
    assert await sync.run(ref("jobs", "pid"), {}, 5) > 0

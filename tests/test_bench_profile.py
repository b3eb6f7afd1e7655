"""bench/profile.py: py-spy's raw stacks folded into idle vs busy and areas, on made-up and on real samples."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import profile

MAIN = "thread (0x10): MainThread"
POOL = "thread (0x20): Thread-1 (_connection_worker_thread)"
LINES = [
    # the loop waiting in epoll: idle
    f"{MAIN};run (asyncio/runners.py:118);uv_run (core.c:464);epoll_pwait (libc.so.6) 50",
    # a socket write: busy, the kernel's
    f"{MAIN};run (asyncio/runners.py:118);send (redis/asyncio/connection.py:1215);write (libc.so.6) 20",
    # SQLAlchemy compiling, then sqlite3 in C called from aiosqlite's thread
    f"{MAIN};update_many (runtime/runs.py:300);_init_compiled (sqlalchemy/engine/default.py:1750) 10",
    f"{POOL};_connection_worker_thread (aiosqlite/core.py:63);_pysqlite_query_execute (cursor.c:896) 10",
    # the pool thread waiting on its queue: idle
    f"{POOL};_connection_worker_thread (aiosqlite/core.py:59);_queue_SimpleQueue_get_impl (_queuemodule.c:256);"
    "pthread_cond_timedwait (libc.so.6);0x7f28110a3f16 (libc.so.6) 90",
    # a collection during an import
    f"{MAIN};<module> (runtime/connections.py:3);_find_and_load (<frozen importlib._bootstrap>:1176);"
    "gc_collect_main (libpython3.11.so.1.0) 10",
]


def test_fold_sorts_idle_from_busy_and_shares_the_busy_time_out(tmp_path: Path) -> None:
    raw = tmp_path / "x.raw"
    raw.write_text("\n".join(LINES) + "\n")
    folded = profile.fold(raw)
    assert folded["samples"] == 50  # 20 + 10 + 10 + 10 busy; 140 idle
    assert folded["main_busy"] == pytest.approx(40 / 90)
    areas = dict(folded["areas"])
    assert areas == pytest.approx(
        {
            "socket I/O (kernel)": 0.4,
            "run store: SQLAlchemy": 0.2,
            "run store: sqlite3": 0.2,
            "garbage collector": 0.2,
        }
    )
    ours = dict(folded["ours"])
    assert ours["update_many (runtime/runs.py)"] == 0.2
    assert ours["<module> (runtime/connections.py)"] == 0.2


def test_native_code_goes_to_its_library_and_only_take_gil_is_a_gil_wait(tmp_path: Path) -> None:
    """SQLite's C (its statements, and the WAL writes it makes) is the run store's time even when the innermost
    Python frame is ours; an unresolved native frame (0x…) is not a GIL wait: only CPython's take_gil is."""
    upsert = f"{MAIN};run (asyncio/runners.py:118);_fast_upsert (runtime/store/runs.py:275)"
    lines = [
        f"{upsert};_pysqlite_query_execute (cursor.c:896);sqlite3VdbeExec (libsqlite3.so.0.8.6) 4",
        f"{upsert};sqlite3WalFrames (libsqlite3.so.0.8.6);0x7fe62e6dd356 (libsqlite3.so.0.8.6);pwrite64 (libc.so.6) 3",
        f"{MAIN};run (asyncio/runners.py:118);decode (runtime/queue/messages.py:40);0x7fe62f212904 (libc.so.6) 2",
        f"{MAIN};run (asyncio/runners.py:118);evalsha (redis/asyncio/client.py:9);take_gil (ceval_gil.h:283);"
        "pthread_cond_timedwait (libc.so.6) 1",
    ]
    raw = tmp_path / "x.raw"
    raw.write_text("\n".join(lines) + "\n")
    areas = dict(profile.fold(raw)["areas"])
    assert areas == pytest.approx({"run store: sqlite3": 0.7, "ours (runtime/)": 0.2, "waiting for the GIL": 0.1})


def test_fold_refuses_a_profile_with_no_busy_sample(tmp_path: Path) -> None:
    raw = tmp_path / "idle.raw"
    raw.write_text(LINES[0] + "\n")
    with pytest.raises(RuntimeError, match="no busy samples"):
        profile.fold(raw)


def test_a_profile_without_idle_samples_claims_no_busy_share(tmp_path: Path) -> None:
    """The start-up profiles sample Python frames only, and py-spy leaves idle samples out: how busy the
    loop thread was is then unknown, not 100%."""
    raw = tmp_path / "x.raw"
    raw.write_text(f"{MAIN};<module> (runtime/worker.py:3);_find_and_load (<frozen importlib._bootstrap>:1176) 7\n")
    folded = profile.fold(raw, idle=False)
    assert folded["samples"] == 7 and folded["main_busy"] is None
    assert dict(folded["areas"]) == {"imports (module loading and top-level code)": 1.0}
    python_only = profile._record(raw, native=False)
    assert "--native" not in python_only and "--idle" not in python_only
    assert {"--native", "--idle"} <= set(profile._record(raw))


SPIN = """
import time
def spin_here():
    end = time.time() + 3
    while time.time() < end:
        sum(range(2000))
spin_here()
"""


def test_a_real_process_sampled_by_py_spy_shows_its_busy_function(tmp_path: Path) -> None:
    why = profile.available()
    if why:
        pytest.skip(why)
    child = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        sampler = profile.Sampler(child.pid, tmp_path / "spin.raw")
        time.sleep(1.0)
        folded = sampler.stop()
    finally:
        child.kill()
        child.wait()
    assert folded["main_busy"] > 0.8
    top_function, share = folded["functions"][0]
    assert top_function.startswith("spin_here") and share > 0.5

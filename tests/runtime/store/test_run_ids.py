"""Run ids: time-ordered UUIDs (version 7) that only grow within a process, made for a whole enqueue at once;
their last 8 digits (the short id the dashboard and the logs show) are random."""

from __future__ import annotations

import itertools
import time
import uuid

from runtime.store.run_ids import new_run_ids


def test_run_ids_are_version_7_uuids_carrying_the_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    ids = new_run_ids(2000)
    after = time.time_ns() // 1_000_000
    for run_id in ids:
        parsed = uuid.UUID(run_id)
        assert (parsed.version, parsed.variant, parsed.hex) == (7, uuid.RFC_4122, run_id)
        # a full counter carries into the milliseconds: 2,000 ids may run ahead of the clock by one or two
        assert before <= int(run_id[:12], 16) <= after + 2


def test_run_ids_strictly_increase_within_a_call_and_across_calls() -> None:
    calls = [new_run_ids(n) for n in (3, 1, 1, 5000, 1, 2, 1) for _ in range(50)]  # many in one millisecond
    ids = [run_id for call in calls for run_id in call]
    assert all(a < b for a, b in itertools.pairwise(ids)), "an id not above the one made before it"
    assert len(set(ids)) == len(ids)


def test_the_last_8_digits_of_run_ids_are_random() -> None:
    ids = new_run_ids(2000) + [new_run_ids(1)[0] for _ in range(2000)]
    assert len({run_id[-8:] for run_id in ids}) > 3990

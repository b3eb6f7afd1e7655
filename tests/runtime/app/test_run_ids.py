"""Run ids: what `uuid.uuid4().hex` gives (the dashboard shows their first 8 digits, so those must be random),
made for a whole enqueue at once."""

from __future__ import annotations

import uuid

from runtime.app.run_ids import new_run_ids


def test_run_ids_are_random_version_4_uuids_that_never_repeat() -> None:
    ids = new_run_ids(2000)
    for run_id in ids:
        parsed = uuid.UUID(run_id)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, run_id)
    assert len(set(ids)) == 2000 and len({run_id[:8] for run_id in ids}) > 1990

"""The driver-level writes bind each value as SQLAlchemy would: the fast SQLite DateTimes (the enqueue insert's and
the worker upsert's) give SQLAlchemy's own text for every datetime we write, and anything else goes through
SQLAlchemy's processor (the rows as a whole: tests/runtime/store/test_worker_updates.py)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.dialects import sqlite

from runtime.store.sqlite_insert import datetime_or, sqlite_datetime


def test_the_fast_sqlite_datetime_writes_sqlalchemys_text() -> None:
    process = sqlite.DATETIME().bind_processor(sqlite.dialect())
    assert process is not None
    fast = datetime_or(process)
    rng = random.Random(25)
    moments = [datetime(1, 1, 1), datetime(999, 12, 31, 23, 59, 59), datetime(2026, 12, 7, 14, 0, 0, 0)]
    moments += [datetime(1970, 1, 1) + timedelta(microseconds=rng.randrange(2**62 // 1000)) for _ in range(2000)]
    for moment in moments:
        assert fast(moment) == process(moment) == sqlite_datetime(moment), moment
        aware = moment.replace(tzinfo=UTC)
        assert sqlite_datetime(aware) == process(aware)
    for other in (None, date(2026, 12, 7), datetime(2026, 12, 7, 1, 2, 3, 4, tzinfo=UTC)):
        assert fast(other) == process(other)

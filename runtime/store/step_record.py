"""A durable function's step as the run store keeps it: one row of the `steps` table (schema revision 0005) as a
plain dataclass. A worker saves and reads its steps with this and the driver alone (runtime/store/step_sql.py);
SQLAlchemy's `Step` class (runtime/store/models.py) describes the same table for the schema and the engine."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from runtime.store.values import iso


@dataclass(slots=True, kw_only=True)
class StepRecord:
    """A step saved once it has an outcome: its result as JSON text, or its final error. `name` carries its
    occurrence (`charge`, `charge#2`); `status` is succeeded | failed, or sleep | wait for a suspension."""

    run_id: str
    name: str
    status: str
    result: str | None = None  # JSON text, as the step returned it
    error_type: str | None = None
    error: str | None = None
    attempts: int = 1
    started_at: datetime
    finished_at: datetime

    def public(self) -> dict[str, Any]:
        """The step as `runtime runs show` and the API show it: its result decoded, times as `iso()`. A sleep's
        or a wait's `finished_at` is when it wakes, or when its wait ends at the latest."""
        return {
            "name": self.name,
            "status": self.status,
            "error_type": self.error_type,
            "error": self.error,
            "attempts": self.attempts,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "result": None if self.result is None else json.loads(self.result),
            "duration_ms": round((self.finished_at - self.started_at).total_seconds() * 1000, 2),
        }

    def as_dict(self) -> dict[str, Any]:
        """The row's values by column."""
        return {name: getattr(self, name) for name in COLUMNS}


# the table's columns in its order (runtime/store/models.py, Step; checked by tests/runtime/store/test_step_sql.py)
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(StepRecord))

"""Flow control as the manifest declares it, under a task's `task:` (and app-wide named limits under `limits:`).

Keys are dotted paths into the run's arguments (`customer.id`); without a key a limit is per function. What
each promises, and where it is held, is in runtime/flow/.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from runtime.app.durations import Duration, _Strict, parse_duration

KEY_PATH = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$"
LIMIT_NAME = r"^[a-z0-9][a-z0-9_-]{0,39}$"
MAX_COUNT = 1_000_000


def _key() -> Any:
    return Field(
        None, pattern=KEY_PATH, max_length=200, description="a dotted path into the arguments, e.g. customer.id"
    )


def _period(value: Any) -> Any:
    return parse_duration(value)


class Concurrency(_Strict):
    """At most `limit` runs running at once per value of `key` (no key: per function), across every worker."""

    limit: int = Field(ge=1, le=MAX_COUNT)
    key: str | None = _key()


class Throttle(_Strict):
    """Starts spread to at most `limit` per `period` (GCRA, `burst` more at once); excess starts later, in order."""

    limit: int = Field(ge=1, le=MAX_COUNT)
    period: Duration
    burst: int = Field(0, ge=0, le=MAX_COUNT, description="starts allowed at once above the steady rate")
    key: str | None = _key()

    _period = field_validator("period", mode="before")(lambda cls, v: _period(v))


class RateLimit(_Strict):
    """At most `limit` runs per `period` per key; the excess ends `skipped` with the reason (never run)."""

    limit: int = Field(ge=1, le=MAX_COUNT)
    period: Duration
    key: str | None = _key()

    _period = field_validator("period", mode="before")(lambda cls, v: _period(v))


class Debounce(_Strict):
    """Enqueues with the same key within `period` make one run with the last arguments, started `period` after
    the last enqueue and no later than `timeout` after the first."""

    period: Duration
    key: str | None = _key()
    timeout: Duration | None = Field(None, description="the longest a run waits for enqueues to stop")

    _periods = field_validator("period", "timeout", mode="before")(lambda cls, v: None if v is None else _period(v))

    @model_validator(mode="after")
    def _timeout_after_period(self) -> Debounce:
        if self.timeout is not None and self.timeout < self.period:
            raise ValueError("timeout must be at least the period (it bounds how long enqueues can push a run back)")
        return self


class Batch(_Strict):
    """Enqueues collected into one run of up to `size` items (fewer after `timeout`); per key when one is given."""

    size: int = Field(ge=1, le=10_000)
    timeout: Duration
    key: str | None = _key()

    _timeout = field_validator("timeout", mode="before")(lambda cls, v: _period(v))


class NamedLimit(_Strict):
    """An app-wide limit that functions share by naming it in `task: {limits: [name]}`."""

    concurrency: int = Field(ge=1, le=MAX_COUNT, description="runs of all its functions running at once")


def as_list(value: Any) -> Any:
    """`concurrency:` as one mapping or a list of up to two."""
    return [value] if isinstance(value, dict) else value

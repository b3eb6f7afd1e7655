"""Error types the runtime raises, each with a message that says how to fix it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


class SkipRetry(Exception):
    """Raise inside a task to fail the run at once, without retries."""


class StepFailed(Exception):
    """Raised inside a durable function when a step's retries are spent: catch it to compensate. A run that
    resumes gets the same StepFailed from that step again, without running it."""

    def __init__(self, step: str, error_type: str, message: str) -> None:
        super().__init__(f"step {step!r} failed: {error_type}: {message}")
        self.step = step
        self.error_type = error_type
        self.message = message


class StepLimitExceeded(SkipRetry):
    """A step whose result is not JSON or too big, or a run over its number or bytes of steps: the run fails
    at once (its next attempt would do the same)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where it is and what to do about it."""

    file: str
    function: str | None
    field: str | None
    message: str
    line: int | None = None  # in a Python file: the line that failed to import

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}, line {self.line}"
        if self.function:
            where += f": function '{_printable(self.function)}'"
        if self.field:
            where += f", field '{_printable(self.field)}'"
        return f"{where}: {self.message}"


def _printable(name: str, limit: int = 60) -> str:
    """A name from the manifest as one short line: hostile keys may hold newlines or megabytes."""
    if len(name) > limit:
        name = name[:limit] + "..."
    return name if name.isprintable() else repr(name)[1:-1]


class ManifestError(Exception):
    """A manifest, or the handlers it names, is invalid. Holds every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        if len(problems) == 1:  # one line, like every other error a command answers
            super().__init__(str(problems[0]))
            return
        lines = "\n".join(f"  - {p}" for p in problems)
        where = "the app" if any(p.line is not None for p in problems) else "the manifest"
        super().__init__(f"{len(problems)} problems in {where}:\n{lines}")


class ConfigError(Exception):
    """A setting is malformed or names a service that cannot be reached."""


class ArgumentsError(ValueError):
    """Task arguments do not match the function's type hints."""


class RuntimeNotStarted(RuntimeError):
    """`enqueue` was called in a process where no runtime is running."""


class TaskTimeout(Exception):
    """An attempt ran past its function's timeout and was stopped."""


class UnknownFunction(LookupError):
    """A message names a function that this app's manifest does not declare."""


class WorkerDied(Exception):
    """The worker running an attempt died (killed, crashed) before it finished: a failed attempt."""


class Unavailable(RuntimeError):
    """Redis or the database could not be reached: the request was fine; try again shortly (HTTP 503).
    `dependency` names what was unavailable ("Redis", "Redis and the database")."""

    def __init__(self, message: str, dependency: str = "Redis") -> None:
        super().__init__(message)
        self.dependency = dependency


class EnqueueFailed(RuntimeError):
    """Nothing was queued (the message never reached Redis and no record is left): safe to try again."""


class EnqueueUnavailable(EnqueueFailed, Unavailable):
    """Nothing was queued because what the enqueue needs was unreachable: Redis and the database both, or
    Redis for an enqueue only Redis can decide (a `unique` window, a `key`). Safe to try again shortly."""


class EnqueueUncertain(Unavailable):
    """Redis's answer was lost: the runs may or may not be queued. Holds their ids; a run whose record
    was saved is settled by the reconciler (queued again if its message is missing), so it will run."""

    def __init__(self, message: str, run_ids: list[str]) -> None:
        super().__init__(message)
        self.run_ids = run_ids


class DeadlineExceeded(Exception):
    """A run's deadline passed: the attempt is stopped and the run fails, without retry."""


MAX_RETRY_AFTER_SECONDS = 366 * 86400  # a year (and a day), as far as a durable sleep or an enqueue's delay


class RetryAfter(Exception):
    """Raise inside a task to run it again after `seconds` (a number or a timedelta), as an upstream's 429
    asks: the attempt is not counted as a failure and the run keeps its attempt number. Bounded by the run's
    deadline and by MAX_RETRY_AFTER times per run, past which the run fails with the reason."""

    def __init__(self, seconds: float | timedelta) -> None:
        value = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"RetryAfter takes seconds as a number or a timedelta, not {seconds!r:.40}")
        if not 0 < value <= MAX_RETRY_AFTER_SECONDS:  # NaN fails this too
            raise ValueError(
                f"RetryAfter takes more than 0 and at most {MAX_RETRY_AFTER_SECONDS} seconds (a year), "
                f"not {seconds!r:.40}"
            )
        self.seconds = float(value)
        super().__init__(f"retry after {self.seconds:g}s (not counted as a failure)")

    def __reduce__(self) -> tuple[type[RetryAfter], tuple[float]]:
        return RetryAfter, (self.seconds,)  # pickled by its seconds, not its message

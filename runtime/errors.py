"""Error types the runtime raises, each with a message that says how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


class SkipRetry(Exception):
    """Raise inside a task to fail the run at once, without retries."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where it is and what to do about it."""

    file: str
    function: str | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file
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
        count = len(problems)
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in the manifest:\n{lines}")


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


class EnqueueError(RuntimeError):
    """A run could not be queued; the message says whether anything may still run."""

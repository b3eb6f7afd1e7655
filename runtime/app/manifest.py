"""The manifest: a pydantic model of `manifest.yaml`, the one source of truth for an app.

It validates the file, documents it (`runtime schema` prints its JSON schema) and feeds the HTTP app,
the worker, the scheduler, the dashboard and the Kubernetes renderer. Reading the file safely and turning
its errors into problems is `manifest_file.py`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from starlette.convertors import CONVERTOR_TYPES

from runtime.app.durations import Duration, _short, _Strict, format_duration, parse_duration
from runtime.app.flow_specs import LIMIT_NAME, Batch, Concurrency, Debounce, NamedLimit, RateLimit, Throttle, as_list
from runtime.durable.events import EVENT_NAME

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
HANDLER_PATTERN = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$"
MAX_KEEP = 3650 * 86400.0  # retention and uniqueness windows: up to ten years
QUEUE_NAME = r"^[a-z0-9][a-z0-9_-]{0,39}$"
# Paths the runtime serves itself on the web process; a function there would never be reached.
RESERVED_PATHS = {
    "/health": "the readiness check",
    "/health/live": "the liveness check",
    "/metrics": "the Prometheus metrics",
    "/openapi.json": "the OpenAPI description",
    "/docs": "the API docs page",
}
_PATH_PARAM = re.compile(r"\{([^{}]*)\}")
_PARAM_BODY = re.compile(r"^[A-Za-z_]\w*(:[A-Za-z_]\w*)?$")


class Backoff(_Strict):
    """Retry delays: base * 2^(attempt-1), capped at max, each jittered to 50-100 %."""

    base: Duration = 1.0
    max: Duration = 300.0

    _durations = field_validator("base", "max", mode="before")(lambda cls, v: parse_duration(v))


class Defaults(_Strict):
    """Values every task gets unless it sets its own."""

    retries: int = Field(3, ge=0, le=100, description="retries after the first failed attempt")
    timeout: Duration = Field(300.0, description="per attempt")
    concurrency: int = Field(5, ge=1, le=1000, description="tasks one worker process runs at once")
    queue: str = Field("default", pattern=QUEUE_NAME, description="the queue a task goes to unless it says")
    retention: Duration = Field(86400.0, description="how long a succeeded run's record is kept")
    dead_retention: Duration = Field(90 * 86400.0, description="how long a failed run's record is kept")
    backoff: Backoff = Field(default_factory=lambda: Backoff(), description="retry delays, exponential with jitter")
    dead_letter_alert: int | None = Field(None, ge=1, description="warn when the dead-letter list passes this")

    _timeout = field_validator("timeout", mode="before")(lambda cls, v: parse_duration(v))
    _keep = field_validator("retention", "dead_retention", mode="before")(
        lambda cls, v: parse_duration(v, maximum=MAX_KEEP)
    )


class HttpSpec(_Strict):
    """An HTTP function's route."""

    path: str = Field(description="Starlette path, e.g. /briefings/{briefing_id:int}")
    methods: list[str] = Field(default_factory=lambda: ["GET"], min_length=1)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must start with '/'")
        if value in RESERVED_PATHS:
            raise ValueError(f"{value} is reserved for {RESERVED_PATHS[value]}; choose another path")
        names = []
        for param in _PATH_PARAM.findall(value):
            if not _PARAM_BODY.match(param):
                raise ValueError(f"{{{param}}} is not a path parameter: write {{name}} or {{name:int}}")
            name, _, convertor = param.partition(":")
            if convertor and convertor not in CONVERTOR_TYPES:
                raise ValueError(
                    f"{{{param}}}: unknown path convertor '{convertor}'; use one of {', '.join(CONVERTOR_TYPES)}"
                )
            if name in names:
                raise ValueError(f"path parameter '{name}' appears twice")
            names.append(name)
        if "{" in _PATH_PARAM.sub("", value) or "}" in _PATH_PARAM.sub("", value):
            raise ValueError(f"{value!r} has an unmatched '{{' or '}}'")
        return value

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            upper = list(dict.fromkeys(str(m).upper() for m in value))  # a repeated method is served once
            bad = [m if len(m) <= 20 else m[:20] + "..." for m in upper if m not in HTTP_METHODS]
            if bad:
                raise ValueError(f"unknown HTTP method {', '.join(bad)}; use {', '.join(HTTP_METHODS)}")
            return upper
        return value


class TaskSpec(_Strict):
    """A task's queue behaviour; unset values come from `defaults`."""

    retries: int | None = Field(None, ge=0, le=100)
    timeout: Duration | None = None
    schedule: str | None = Field(None, description="cron expression, UTC")
    queue: str | None = Field(None, pattern=QUEUE_NAME)
    unique: Duration | None = Field(
        None,
        description="a second enqueue with the same arguments while the first run is not finished, and for at "
        "most this long after it was enqueued, returns the first run's id and queues nothing",
    )
    retention: Duration | None = None
    backoff: Backoff | None = None
    dead_letter_alert: int | None = Field(None, ge=1)
    on: list[str] | None = Field(None, description="events that each start a run; the event's data are its arguments")
    concurrency: list[Concurrency] | None = Field(None, max_length=2, description="one mapping or a list of two")
    limits: list[Annotated[str, Field(pattern=LIMIT_NAME)]] | None = Field(
        None, description="app-wide named limits (declared under the top-level `limits:`) this task counts against"
    )
    throttle: Throttle | None = None
    rate_limit: RateLimit | None = None
    debounce: Debounce | None = None
    batch: Batch | None = None

    _concurrency = field_validator("concurrency", mode="before")(lambda cls, v: as_list(v))

    @model_validator(mode="after")
    def _flow(self) -> TaskSpec:
        if self.batch is not None and self.debounce is not None:
            raise ValueError("a task has 'batch:' or 'debounce:', not both")
        if self.unique is not None and (self.batch is not None or self.debounce is not None):
            raise ValueError("'unique:' does not combine with 'batch:' or 'debounce:' (they already merge enqueues)")
        return self

    def flow(self) -> bool:
        """Whether any flow control applies to this task."""
        fields = (self.concurrency, self.limits, self.throttle, self.rate_limit, self.debounce, self.batch)
        return any(value for value in fields)

    @field_validator("on")
    @classmethod
    def _on(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not EVENT_NAME.fullmatch(name) or len(name) > 200:
                raise ValueError(f"{name[:80]!r} is not an event name: dotted words of letters, digits, '_' and '-'")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @field_validator("unique", "retention", mode="before")
    @classmethod
    def _keep(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value, maximum=MAX_KEEP)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None:
            check_cron(value)
        return value


def check_cron(expression: str) -> None:
    """Raise ValueError unless `expression` is a 5-field cron (or @daily, ...) that fires at least once."""
    from croniter import croniter  # here: an app with no schedule, and its workers, never import it

    try:
        valid = croniter.is_valid(expression)
    except Exception:  # croniter raises on some malformed input instead of answering False
        valid = False
    if not valid:
        raise ValueError(f"{_short(expression)} is not a valid cron expression (e.g. '0 6 * * *', UTC)")
    fields = expression.split()
    if not expression.startswith("@") and len(fields) != 5:
        raise ValueError(
            f"{_short(expression)} has {len(fields)} fields; a schedule has 5: minute hour day month weekday "
            "(e.g. '0 6 * * *', UTC; seconds are not supported)"
        )
    start = datetime(2000, 1, 1, tzinfo=UTC)
    try:
        # both ways the scheduler may ask, each within 50 years
        croniter(expression, start, max_years_between_matches=50).get_next(datetime)
        croniter(expression, start + timedelta(days=366 * 50), max_years_between_matches=50).get_prev(datetime)
    except Exception:
        raise ValueError(f"{_short(expression)} never fires (no such date); check its day and month fields") from None


class FunctionSpec(_Strict):
    """One function: its handler and exactly one of `http` or `task`."""

    handler: str = Field(pattern=HANDLER_PATTERN, description="module:attribute")
    http: HttpSpec | None = None
    task: TaskSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> FunctionSpec:
        if (self.http is None) == (self.task is None):
            raise ValueError("a function has exactly one of 'http:' or 'task:'")
        return self

    @property
    def kind(self) -> Literal["http", "task"]:
        return "http" if self.http is not None else "task"


class Manifest(_Strict):
    """The whole of `manifest.yaml`."""

    app: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=40,
        description="DNS-1123 label: names Kubernetes objects and Redis keys",
    )
    defaults: Defaults = Field(default_factory=Defaults)
    queues: dict[Annotated[str, Field(pattern=QUEUE_NAME)], Annotated[int, Field(ge=1, le=1000)]] | None = Field(
        None, description="queue name -> weight; without it there is one queue, `default`"
    )
    priority: Literal["weighted", "strict"] = Field("weighted", description="strict: heavier queues first, always")
    limits: dict[Annotated[str, Field(pattern=LIMIT_NAME)], NamedLimit] | None = Field(
        None, description="app-wide named limits, shared by the tasks that name them: {openai: {concurrency: 20}}"
    )
    functions: dict[Annotated[str, Field(pattern=r"^[a-z0-9_]+$")], FunctionSpec]

    @model_validator(mode="after")
    def _declared_queues(self) -> Manifest:
        declared = self.queue_names()
        wanted = {"defaults.queue": self.defaults.queue} | {
            f"functions.{name}.task.queue": spec.task.queue
            for name, spec in self.functions.items()
            if spec.task is not None and spec.task.queue is not None
        }
        for where, queue in wanted.items():
            if queue not in declared:
                raise ValueError(f"{where}: queue {queue!r} is not declared under 'queues:' ({', '.join(declared)})")
        named = list(self.limits or {})
        for name, spec in self.functions.items():
            for limit in (spec.task.limits or []) if spec.task is not None else []:
                if limit not in named:
                    known = f"declared: {', '.join(named)}" if named else "none is declared"
                    raise ValueError(
                        f"functions.{name}.task.limits: {limit!r} is not declared under the top-level 'limits:' "
                        f"({known})"
                    )
        return self

    def queue_names(self) -> list[str]:
        """The declared queues, heaviest first (just `default` when none are declared)."""
        return sorted(self.queues, key=lambda q: -self.queues[q]) if self.queues else ["default"]  # type: ignore[index]

    def queue_weights(self) -> dict[str, int]:
        return dict(self.queues) if self.queues else {"default": 1}

    def _task(self, name: str) -> TaskSpec | None:
        return self.functions[name].task

    def queue(self, name: str) -> str:
        spec = self._task(name)
        return spec.queue if spec is not None and spec.queue is not None else self.defaults.queue

    def backoff(self, name: str) -> Backoff:
        spec = self._task(name)
        return spec.backoff if spec is not None and spec.backoff is not None else self.defaults.backoff

    def retention(self, name: str) -> float:
        spec = self._task(name)
        return spec.retention if spec is not None and spec.retention is not None else self.defaults.retention

    def unique(self, name: str) -> float | None:
        spec = self._task(name)
        return spec.unique if spec is not None else None

    def dead_letter_alert(self, name: str | None = None) -> int | None:
        spec = self._task(name) if name else None
        if spec is not None and spec.dead_letter_alert is not None:
            return spec.dead_letter_alert
        return self.defaults.dead_letter_alert

    def listeners(self, event: str) -> list[str]:
        """The tasks that start a run for each event of this name (`task: {on: [...]}`)."""
        return [name for name, spec in self.tasks().items() if spec.task is not None and event in (spec.task.on or [])]

    def retries(self, name: str) -> int:
        spec = self.functions[name].task
        return self.defaults.retries if spec is None or spec.retries is None else spec.retries

    def timeout(self, name: str) -> float:
        spec = self.functions[name].task
        return self.defaults.timeout if spec is None or spec.timeout is None else spec.timeout

    def tasks(self) -> dict[str, FunctionSpec]:
        return {name: f for name, f in self.functions.items() if f.task is not None}

    def routes(self) -> dict[str, FunctionSpec]:
        return {name: f for name, f in self.functions.items() if f.http is not None}

    def summary(self) -> list[dict[str, Any]]:
        """Each function's effective settings: what the dashboard and `runtime check` show."""
        rows: list[dict[str, Any]] = []
        for name, spec in self.functions.items():
            row: dict[str, Any] = {"name": name, "kind": spec.kind, "handler": spec.handler}
            if spec.http is not None:
                row |= {"route": spec.http.path, "methods": spec.http.methods}
            else:
                assert spec.task is not None
                row |= {
                    "retries": self.retries(name),
                    "timeout": format_duration(self.timeout(name)),
                    "timeout_seconds": self.timeout(name),
                    "schedule": spec.task.schedule,
                    "concurrency": self.defaults.concurrency,
                    "queue": self.queue(name),
                    "unique": None if self.unique(name) is None else format_duration(self.unique(name) or 0),
                    "retention": format_duration(self.retention(name)),
                    "flow": spec.task.model_dump(
                        include={"concurrency", "limits", "throttle", "rate_limit", "debounce", "batch"},
                        exclude_none=True,
                    ),
                }
            rows.append(row)
        return rows


def manifest_schema() -> dict[str, Any]:
    """The JSON schema editors can validate `manifest.yaml` against."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "manifest.yaml"
    return schema

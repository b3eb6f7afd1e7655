"""The manifest: a pydantic model of `manifest.yaml`, the one source of truth for an app.

It validates the file, documents it (`runtime schema` prints its JSON schema) and feeds the HTTP app,
the worker, the scheduler, the dashboard and the Kubernetes renderer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runtime.errors import ManifestError, Problem

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def parse_duration(value: Any) -> float:
    """Seconds from an int/float (seconds) or a string like "500ms", "30s", "5m", "1h"."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '5m', '1h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration: use seconds (30) or a string like '500ms', '30s', '5m', '1h'")
    if seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be greater than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact string for a duration: 300 -> '5m', 0.5 -> '500ms'."""
    for unit in ("h", "m", "s"):
        amount = seconds / _UNIT_SECONDS[unit]
        if amount >= 1 and amount == int(amount):
            return f"{int(amount)}{unit}"
    return f"{round(seconds * 1000)}ms"


Duration = Annotated[
    float,
    Field(json_schema_extra={"anyOf": [{"type": "number"}, {"type": "string", "pattern": _DURATION.pattern}]}),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Strict):
    """Values every task gets unless it sets its own."""

    retries: int = Field(3, ge=0, le=100, description="retries after the first failed attempt")
    timeout: Duration = Field(300.0, description="per attempt")
    concurrency: int = Field(5, ge=1, le=1000, description="tasks one worker process runs at once")

    _timeout = field_validator("timeout", mode="before")(lambda cls, v: parse_duration(v))


class HttpSpec(_Strict):
    """An HTTP function's route."""

    path: str = Field(description="Starlette path, e.g. /briefings/{briefing_id:int}")
    methods: list[str] = Field(default_factory=lambda: ["GET"], min_length=1)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must start with '/'")
        return value

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            upper = [str(m).upper() for m in value]
            bad = [m for m in upper if m not in HTTP_METHODS]
            if bad:
                raise ValueError(f"unknown HTTP method {', '.join(bad)}; use {', '.join(HTTP_METHODS)}")
            return upper
        return value


class TaskSpec(_Strict):
    """A task's queue behaviour; unset values come from `defaults`."""

    retries: int | None = Field(None, ge=0, le=100)
    timeout: Duration | None = None
    schedule: str | None = Field(None, description="cron expression, UTC")

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression (e.g. '0 6 * * *', UTC)")
        return value


class FunctionSpec(_Strict):
    """One function: its handler and exactly one of `http` or `task`."""

    handler: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="module:attribute")
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
    functions: dict[Annotated[str, Field(pattern=r"^[a-z0-9_]+$")], FunctionSpec]

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
                }
            rows.append(row)
        return rows


def _problem_from(error: Any, file: str) -> Problem:
    loc = [str(part) for part in error["loc"]]
    function = None
    if len(loc) >= 2 and loc[0] == "functions":
        function = loc[1]
        loc = loc[2:]
        # pydantic reports a bad dict key as ['functions', 'Bad-Name', '[key]']
        if loc == ["[key]"]:
            return Problem(file, function, None, "function names use only a-z, 0-9 and _")
    loc = [part for part in loc if part not in ("function-after", "[key]")]
    field = ".".join(loc) or None
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key; check its spelling against `runtime schema`"
    elif error["type"] == "missing":
        message = "required key is missing"
    return Problem(file, function, field, message)


def _route_problems(manifest: Manifest, file: str) -> list[Problem]:
    seen: dict[tuple[str, str], str] = {}
    problems = []
    for name, spec in manifest.routes().items():
        assert spec.http is not None
        for method in spec.http.methods:
            key = (re.sub(r"\{(\w+)(:\w+)?\}", "{}", spec.http.path), method)
            if key in seen:
                problems.append(
                    Problem(file, name, "http.path", f"{method} {spec.http.path} is also served by '{seen[key]}'")
                )
            else:
                seen[key] = name
    return problems


def parse_manifest(data: Any, file: str = "manifest.yaml") -> Manifest:
    """Validate already-loaded YAML data; raise ManifestError listing every problem."""
    if not isinstance(data, dict):
        raise ManifestError([Problem(file, None, None, "the manifest must be a mapping with 'app' and 'functions'")])
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError([_problem_from(e, file) for e in exc.errors()]) from None
    if problems := _route_problems(manifest, file):
        raise ManifestError(problems)
    return manifest


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError([Problem(str(path), None, None, f"cannot read it: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ManifestError([Problem(str(path), None, None, f"not valid YAML{where}: {exc}")]) from None
    return parse_manifest(data, str(path))


def manifest_schema() -> dict[str, Any]:
    """The JSON schema editors can validate `manifest.yaml` against."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "manifest.yaml"
    return schema

"""The manifest: a pydantic model of `manifest.yaml`, the one source of truth for an app.

It validates the file, documents it (`runtime schema` prints its JSON schema) and feeds the HTTP app,
the worker, the scheduler, the dashboard and the Kubernetes renderer.
"""

from __future__ import annotations

import codecs
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.convertors import CONVERTOR_TYPES

from runtime.errors import ManifestError, Problem

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
HANDLER_PATTERN = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$"
MAX_DURATION = 24 * 3600.0
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
# Hostile-input bounds: a real manifest is a few KB, a few levels deep, with a few hundred values.
MAX_MANIFEST_BYTES = 1_000_000
MAX_DEPTH = 32
MAX_VALUES = 100_000
_PATH_PARAM = re.compile(r"\{([^{}]*)\}")
_PARAM_BODY = re.compile(r"^[A-Za-z_]\w*(:[A-Za-z_]\w*)?$")


def parse_duration(value: Any, maximum: float = MAX_DURATION) -> float:
    """Seconds from an int/float (seconds) or a string like "500ms", "30s", "5m", "1h", "7d"."""
    shown = _short(repr(value), quote=False)
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '5m', '1h'")
    if isinstance(value, int) and abs(value) > maximum:
        seconds = math.inf if value > 0 else -math.inf  # float() of a huge int overflows
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"{shown} is not a duration: use seconds (30) or a string like '500ms', '30s', '5m', '1h'")
    if math.isnan(seconds):
        raise ValueError("nan is not a duration: use seconds (30) or a string like '500ms', '30s', '5m', '1h'")
    if seconds < 0.001:
        raise ValueError(f"{shown}: a duration must be at least 1ms")
    if seconds > maximum:
        limit = format_duration(maximum) if maximum > MAX_DURATION else f"{maximum / 3600:g}h"
        raise ValueError(f"{shown}: a duration must be at most {limit}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact string for a duration: 300 -> '5m', 0.5 -> '500ms'."""
    for unit in ("d", "h", "m", "s"):
        amount = seconds / _UNIT_SECONDS[unit]
        if amount >= 1 and amount == int(amount):
            return f"{int(amount)}{unit}"
    return f"{round(seconds * 1000)}ms"


Duration = Annotated[
    float,
    Field(json_schema_extra={"anyOf": [{"type": "number"}, {"type": "string", "pattern": _DURATION.pattern}]}),
]


class _Strict(BaseModel):
    # strict: `retries: "3"` or `concurrency: true` is a mistake to report, not a value to coerce
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


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
    unique: Duration | None = Field(None, description="a duplicate enqueue within this window returns the first id")
    retention: Duration | None = None
    backoff: Backoff | None = None
    dead_letter_alert: int | None = Field(None, ge=1)

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
                }
            rows.append(row)
        return rows


def _where(loc: list[str]) -> tuple[str | None, str | None]:
    """(function, field) for a location in the manifest, e.g. ['functions', 'a', 'task', 'retries']."""
    function = None
    if len(loc) >= 2 and loc[0] == "functions":
        function, loc = loc[1], loc[2:]
    return function, ".".join(loc) or None


def _kind_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"the string {_short(value)}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _short(value: str, limit: int = 40, quote: bool = True) -> str:
    value = value if len(value) <= limit else value[:limit] + "..."
    return repr(value) if quote else value


_EXPECTED = {
    "int_type": "a whole number",
    "float_type": "a number",
    "string_type": "a string",
    "dict_type": "a mapping",
    "list_type": "a list",
    "model_type": "a mapping",
    "bool_type": "true or false",
}


def _problem_from(error: Any, file: str) -> Problem:
    loc = [str(part) for part in error["loc"]]
    # pydantic reports a bad dict key as ['functions', 'Bad-Name', '[key]']
    if len(loc) == 3 and loc[0] == "functions" and loc[2] == "[key]":
        return Problem(file, loc[1], None, "function names use only a-z, 0-9 and _")
    function, field = _where([part for part in loc if part not in ("function-after", "[key]")])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key; check its spelling against `runtime schema`"
    elif error["type"] == "missing":
        message = "required key is missing"
    elif error["type"] in _EXPECTED:
        value = error.get("input")
        message = f"expected {_EXPECTED[error['type']]}, got {_kind_of(value)}"
        if isinstance(value, str) and error["type"] in ("int_type", "float_type"):
            message += "; write the number without quotes"
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
                if method == "GET":  # Starlette answers HEAD for every GET route
                    seen.setdefault((key[0], "HEAD"), name)
    return problems


def validate_manifest(data: Any, file: str = "manifest.yaml") -> tuple[Manifest | None, list[Problem]]:
    """Validate already-loaded YAML data: the manifest (None if invalid) and every problem found."""
    if not isinstance(data, dict):
        return None, [Problem(file, None, None, "the manifest must be a mapping with 'app' and 'functions'")]
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        return None, [_problem_from(e, file) for e in exc.errors()]
    if problems := _route_problems(manifest, file):
        return None, problems
    return manifest, []


def parse_manifest(data: Any, file: str = "manifest.yaml") -> Manifest:
    """Validate already-loaded YAML data; raise ManifestError listing every problem."""
    manifest, problems = validate_manifest(data, file)
    if manifest is None:
        raise ManifestError(problems)
    return manifest


def declared_handlers(data: Any) -> dict[str, tuple[str, Literal["http", "task"] | None]]:
    """Each function's handler and kind as written, even in an invalid manifest: what can be imported.

    Only handlers that are themselves well formed are listed; the kind is None unless exactly one of
    `http:` or `task:` is given.
    """
    functions = data.get("functions") if isinstance(data, dict) else None
    if not isinstance(functions, dict):
        return {}
    handlers: dict[str, tuple[str, Literal["http", "task"] | None]] = {}
    for name, spec in functions.items():
        if not isinstance(spec, dict):
            continue
        handler = spec.get("handler")
        if isinstance(handler, str) and re.match(HANDLER_PATTERN, handler) and len(handler) <= 200:
            kind: Literal["http", "task"] | None = None
            if ("http" in spec) != ("task" in spec):
                kind = "http" if "http" in spec else "task"
            handlers[str(name)] = (handler, kind)
    return handlers


class _ManifestLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a depth limit: its composer recurses once per nesting level."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested more than {MAX_DEPTH} levels deep",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _yaml_problem(file: str, exc: Exception) -> Problem:
    """One line for a YAML error (PyYAML's own message spans several lines with a snippet)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(part for part in (exc.context, exc.problem) if part)
    else:
        where, what = "", " ".join(str(exc).split())
    return Problem(file, None, None, f"not valid YAML{where}: {what}")


def _check_nodes(root: yaml.Node, file: str) -> list[Problem]:
    """The duplicate keys in the composed YAML (PyYAML keeps the last one silently).

    Raises ManifestError for an alias that loops or expands to more than MAX_VALUES values: the walk
    visits each node once and never follows an alias twice, so an alias bomb is measured, not built.
    """
    duplicates: list[Problem] = []
    size: dict[int, int] = {}  # node -> how many values it expands to
    ancestors: set[int] = set()  # the nodes being walked: meeting one again is a loop
    stack: list[tuple[yaml.Node, list[str], bool]] = [(root, [], False)]
    while stack:
        node, path, done = stack.pop()
        children: list[tuple[yaml.Node, list[str]]] = []
        if isinstance(node, yaml.SequenceNode):
            children = [(child, [*path, str(i)]) for i, child in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                label = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
                children += [(key, path), (value, [*path, label])]
        if done:
            ancestors.discard(id(node))
            size[id(node)] = min(1 + sum(size[id(child)] for child, _ in children), MAX_VALUES + 1)
            continue
        if id(node) in size:
            continue
        ancestors.add(id(node))
        stack.append((node, path, True))
        if isinstance(node, yaml.MappingNode):
            duplicates += _duplicate_keys(node, path, file)
        for child, child_path in reversed(children):
            if id(child) in ancestors:
                line = child.start_mark.line + 1
                message = f"the alias at line {line} refers to a value that contains it; aliases must not loop"
                raise ManifestError([Problem(file, None, None, message)])
            if id(child) not in size:
                stack.append((child, child_path, False))
    if size[id(root)] > MAX_VALUES:
        message = f"its aliases expand to more than {MAX_VALUES} values; write the values out instead"
        raise ManifestError([Problem(file, None, None, message)])
    return duplicates


def _duplicate_keys(node: yaml.MappingNode, path: list[str], file: str) -> list[Problem]:
    problems = []
    first: dict[tuple[str, str], yaml.Node] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue  # `<<` merges may repeat; non-scalar keys are refused when built
        earlier = first.setdefault((key.tag, key.value), key)
        if earlier is not key:
            function, field = _where([*path, str(key.value)])
            first_line, line = earlier.start_mark.line + 1, key.start_mark.line + 1
            where = f"on line {line}" if first_line == line else f"(lines {first_line} and {line})"
            problems.append(Problem(file, function, field, f"key given twice {where}; keep only one"))
    return problems


def read_manifest(path: str | Path, file: str | None = None) -> tuple[Any, list[Problem]]:
    """The YAML data in a manifest file and its duplicate keys; ManifestError if there is nothing to validate.

    Bounded for hostile files: size, nesting depth and alias expansion are capped before anything is built.
    """
    file = str(path) if file is None else file
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError([Problem(file, None, None, f"cannot read it: {exc.strerror}")]) from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError([Problem(file, None, None, f"it is larger than {MAX_MANIFEST_BYTES // 1000} KB")])
    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ManifestError([Problem(file, None, None, "it is UTF-16 or UTF-32 text; save it as UTF-8")])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        message = f"it is not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}); save it as UTF-8"
        raise ManifestError([Problem(file, None, None, message)]) from None
    if "\x00" in text:
        raise ManifestError([Problem(file, None, None, "it contains NUL characters; save it as UTF-8 text")])
    loader = None
    try:
        loader = _ManifestLoader(text)  # its reader refuses control characters already here
        node = loader.get_single_node()
        if node is None:
            return None, []
        duplicates = _check_nodes(node, file)
        # constructing can fail outside yaml.YAMLError too, e.g. ValueError for `2020-13-45`
        return loader.construct_document(node), duplicates
    except ManifestError:
        raise
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        message = f"not valid YAML at line {line}: the character U+{exc.character:04X} is not allowed; remove it"
        raise ManifestError([Problem(file, None, None, message)]) from None
    except Exception as exc:
        raise ManifestError([_yaml_problem(file, exc)]) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file; raise ManifestError listing every problem."""
    data, problems = read_manifest(path)
    manifest, more = validate_manifest(data, str(path))
    if problems or manifest is None:
        raise ManifestError(problems + more)
    return manifest


def manifest_schema() -> dict[str, Any]:
    """The JSON schema editors can validate `manifest.yaml` against."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "manifest.yaml"
    return schema

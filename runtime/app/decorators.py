"""`@http` and `@task`: mark plain functions; the manifest gives them their routes and queue settings."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, ParamSpec, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PydanticUserError, TypeAdapter, ValidationError, create_model

from runtime.app.context import Context
from runtime.app.current import running
from runtime.errors import ArgumentsError, RuntimeNotStarted

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Failure:
    """What a task's failure hook receives once a run has spent its retries."""

    run_id: str
    function: str
    arguments: dict[str, Any]
    error: str
    attempts: int


FailureHook = Callable[[Failure], Awaitable[None] | None]


class _Function(Generic[P, R]):
    kind = "function"

    def __init__(self, fn: Callable[P, R]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        self.name: str | None = None  # set from the manifest when the app loads

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    @property
    def ref(self) -> str:
        return f"{self.fn.__module__}:{self.fn.__qualname__}"

    def __repr__(self) -> str:
        return f"<@{self.kind} {self.ref}>"


class HttpFunction(_Function[P, R]):
    """An HTTP function: called with a Starlette Request (and typed path params / a body model)."""

    kind = "http"


@dataclass
class _Arguments:
    model: type[BaseModel]
    names: dict[str, str] = field(default_factory=dict)  # the parameter's name -> the model's field for it
    context: str | None = None  # the parameter typed Context, passed by the worker, not an argument


def _arguments_model(fn: Callable[..., Any]) -> _Arguments:
    """A pydantic model of the function's parameters, from its type hints."""
    signature = inspect.signature(fn)
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:  # unresolvable forward refs: fall back to no validation of those params
        hints = {}
    fields: dict[str, Any] = {}
    context = None
    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if hints.get(name) is Context:
            context = name
            continue
        default = ... if param.default is param.empty else param.default
        # The field is `a0`, `a1`, ... with the parameter's name as its alias: any identifier is a parameter's
        # name (`_token`, `model_config`, `model_dump`), but pydantic reserves some as field names.
        fields[name] = (hints.get(name, Any), Field(default, alias=name))
    config = ConfigDict(extra="forbid", strict=False, populate_by_name=False, protected_namespaces=())
    internal = {f"a{i}": spec for i, spec in enumerate(fields.values())}
    model = create_model(f"{fn.__name__}_arguments", __config__=config, **internal)
    return _Arguments(model=model, names=dict(zip(fields, internal, strict=True)), context=context)


def describe_validation_error(function: str, exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "arguments"
        message = "unexpected argument" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"{where}: {message}")
    return f"bad arguments for '{function}': " + "; ".join(parts)


INT64 = (-(2**63), 2**63 - 1)
MAX_DEPTH = 100  # JSON nesting a message may carry (orjson stops at 254; deep data is a bug upstream)


def json_problem(value: Any, path: str = "", *, python: bool = False) -> str | None:
    """Why a JSON-mode value cannot travel in a message and a JSON column unchanged (None when it can),
    prefixed by where it is: `items.3: integer out of range (must fit in 64 bits)`. With `python`, the
    value is the validated Python one (before pydantic turns NaN into null): only numbers are checked."""
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, path, depth = stack.pop()
        where = f"{path}: " if path else ""
        if depth > MAX_DEPTH:
            return f"{where}nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, int):
            if not INT64[0] <= item <= INT64[1]:
                return f"{where}integer out of range (must fit in 64 bits)"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{where}{item} is not a finite number (JSON has no NaN or Infinity)"
        elif isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return f"{where}text is not valid Unicode (lone surrogate)"
        elif isinstance(item, list | tuple | set | frozenset) and python:
            stack.extend((v, f"{path}.{i}" if path else str(i), depth + 1) for i, v in enumerate(item))
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{path}.{i}" if path else str(i), depth + 1) for i, v in enumerate(item))
        elif isinstance(item, dict):
            for key, v in item.items():
                if python:
                    stack.append((v, f"{path}.{key}" if path else str(key), depth + 1))
                    continue
                if not isinstance(key, str):
                    return f"{where}key {key!r} is not text"
                try:
                    key.encode()
                except UnicodeEncodeError:
                    return f"{where}key is not valid Unicode (lone surrogate)"
                stack.append((v, f"{path}.{key}" if path else key, depth + 1))
        elif not python:
            return f"{where}{type(item).__name__} cannot be sent as JSON"
    return None


def plainly_json(items: list[dict[str, Any]], *, python: bool = False) -> bool:
    """Whether `json_problem` would find nothing in any value of these dicts, told without building a path per
    value: True only when sure (False sends each value to the exact check, which names what is wrong)."""
    stack = [(value, 0) for item in items for value in item.values()]
    while stack:
        value, depth = stack.pop()
        kind = type(value)
        if kind is str:
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:
                    return False
        elif kind is int:
            if not INT64[0] <= value <= INT64[1]:
                return False
        elif kind is float:
            if not math.isfinite(value):
                return False
        elif value is None or kind is bool:
            continue
        elif depth >= MAX_DEPTH:  # a container this deep: the exact check counts
            return False
        elif kind is dict:
            if not python and not all(type(key) is str and key.isascii() for key in value):
                return False
            stack.extend((v, depth + 1) for v in value.values())
        elif kind is list or kind is tuple or (python and (kind is set or kind is frozenset)):
            stack.extend((v, depth + 1) for v in value)
        elif not python or isinstance(value, int | float | str | list | tuple | dict | set | frozenset):
            return False  # a subclass, or what JSON cannot hold: the exact check says
    return True


class TaskFunction(_Function[P, R]):
    """A task: run by a worker with retries and a timeout; `await fn.enqueue(**arguments)` queues a run, and
    `fn.with_options(queue=..., key=..., delay=..., at=..., deadline=...)` gives the same with options."""

    kind = "task"

    def __init__(self, fn: Callable[P, R]) -> None:
        super().__init__(fn)
        self._arguments = _arguments_model(fn)
        self.failure_hooks: list[FailureHook] = []
        self.context_param = self._arguments.context

    def validate(self, kwargs: dict[str, Any], *, for_json: bool = False) -> dict[str, Any]:
        """Arguments checked and coerced against the type hints; ArgumentsError names what is wrong.

        With `for_json`, the values come back as JSON-able data (to put in a message).
        """
        try:
            parsed = self._arguments.model.model_validate(kwargs)
        except ValidationError as exc:
            raise ArgumentsError(describe_validation_error(self.name or self.fn.__name__, exc)) from None
        if for_json:
            return self._jsonable(parsed)
        return {name: getattr(parsed, internal) for name, internal in self._arguments.names.items()}

    def validate_many(self, arguments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`validate(kwargs, for_json=True)` of each dict, the batch validated and dumped at once (a bulk enqueue
        paid per item for a validation, a dump per argument and a check per argument). If anything in the batch
        is wrong, each item is checked on its own, so the ArgumentsError names the first bad one as it would."""
        if len(arguments) > 1:
            try:
                parsed = self._batch.validate_python(arguments)
                dumped: list[dict[str, Any]] = self._batch.dump_python(parsed, mode="json", by_alias=True)
            except Exception:  # not valid, or not JSON-able: found and named below
                pass
            else:
                if plainly_json([item.__dict__ for item in parsed], python=True) and plainly_json(dumped):
                    return dumped
        return [self.validate(kwargs, for_json=True) for kwargs in arguments]

    @functools.cached_property
    def _batch(self) -> TypeAdapter[list[BaseModel]]:
        return TypeAdapter(list[self._arguments.model])  # type: ignore[name-defined]

    def arguments_schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments (from the type hints); a bare object schema for hints that
        have none (arbitrary classes)."""
        try:
            return self._arguments.model.model_json_schema()
        except PydanticUserError:  # PydanticInvalidForJsonSchema: a hint JSON schema cannot describe
            return {"type": "object"}

    def _jsonable(self, parsed: BaseModel) -> dict[str, Any]:
        """The arguments as JSON data, or an ArgumentsError naming the argument that cannot be one."""
        name = self.name or self.fn.__name__
        out: dict[str, Any] = {}
        for field_name, internal in self._arguments.names.items():
            try:
                value = parsed.model_dump(mode="json", include={internal})[internal]
            except Exception as exc:  # pydantic cannot serialize it (unknown type, bytes that are not UTF-8)
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ArgumentsError(
                    f"bad arguments for '{name}': {field_name}: cannot be sent as JSON: {reason}"
                ) from None
            problem = json_problem(getattr(parsed, internal), field_name, python=True) or json_problem(
                value, field_name
            )
            if problem is not None:
                raise ArgumentsError(f"bad arguments for '{name}': {problem}")
            out[field_name] = value
        return out

    def on_failure(self, hook: FailureHook) -> FailureHook:
        """Register a hook run once a run of this task has failed for good (decorator)."""
        self.failure_hooks.append(hook)
        return hook

    async def enqueue(self, /, **arguments: Any) -> str:
        """Queue a run with these arguments (the function's own, whatever their names) and return its id.
        Options go through `with_options`."""
        ids = await self.enqueue_many([arguments])
        return ids[0]

    async def enqueue_many(self, arguments: list[dict[str, Any]], /) -> list[str]:
        """Queue many runs, one per dict of arguments, in one round trip each to Redis and the database;
        returns their ids."""
        return await TaskWithOptions(self, {}).enqueue_many(arguments)

    def with_options(
        self,
        *,
        queue: str | None = None,
        key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        deadline: float | datetime | None = None,
    ) -> TaskWithOptions:
        """This task with enqueue options, for `.enqueue(**arguments)` and `.enqueue_many([...])`:
        `queue` sends the runs to another declared queue; `key` makes a second enqueue with the same key,
        while the first run is unfinished (or within `unique`), return the first run's id instead; `delay`
        (seconds) or `at` (a datetime, naive = UTC) postpones them; `deadline` (seconds or a datetime) fails
        a run, without retry, that has not finished by then."""
        return TaskWithOptions(self, {}).with_options(queue=queue, key=key, delay=delay, at=at, deadline=deadline)


class TaskWithOptions:
    """A task bound to enqueue options (`fn.with_options(...)`): its arguments and our options never share a
    namespace, so a task parameter may be called `key`, `queue` or `delay`."""

    def __init__(self, fn: TaskFunction[..., Any], options: dict[str, Any]) -> None:
        self.fn = fn
        self.options = options

    def with_options(
        self,
        *,
        queue: str | None = None,
        key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        deadline: float | datetime | None = None,
    ) -> TaskWithOptions:
        """These options and the given ones (a given one replaces the same option)."""
        given = {"queue": queue, "key": key, "delay": delay, "at": at, "deadline": deadline}
        return TaskWithOptions(self.fn, self.options | {k: v for k, v in given.items() if v is not None})

    async def enqueue(self, /, **arguments: Any) -> str:
        """Queue a run with these arguments and options; returns its id."""
        ids = await self.enqueue_many([arguments])
        return ids[0]

    async def enqueue_many(self, arguments: list[dict[str, Any]], /) -> list[str]:
        """Queue a run per dict of arguments, all with these options (unique keys are checked per item)."""
        runtime = running()
        if runtime is None:
            raise RuntimeNotStarted(
                f"cannot enqueue '{self.fn.name or self.fn.fn.__name__}': no runtime is running in this process; "
                "use `async with Runtime.from_manifest('manifest.yaml'):` in scripts"
            )
        ids: list[str] = await runtime.enqueue(self.fn, arguments, **self.options)
        return ids

    def __repr__(self) -> str:
        return f"<task {self.fn.name or self.fn.fn.__name__} with {self.options}>"


def http(fn: Callable[P, R]) -> HttpFunction[P, R]:
    """Mark a function as an HTTP function; its route comes from the manifest."""
    return HttpFunction(fn)


def task(fn: Callable[P, R]) -> TaskFunction[P, R]:
    """Mark a function as a task; its retries, timeout and schedule come from the manifest."""
    return TaskFunction(fn)

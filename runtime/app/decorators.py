"""`@http` and `@task`: mark plain functions; the manifest gives them their routes and queue settings."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, ParamSpec, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

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
    names: list[str] = field(default_factory=list)
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
        fields[name] = (hints.get(name, Any), default)
    model = create_model(f"{fn.__name__}_arguments", __config__=ConfigDict(extra="forbid", strict=False), **fields)
    return _Arguments(model=model, names=list(fields), context=context)


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


class TaskFunction(_Function[P, R]):
    """A task: run by a worker with retries and a timeout; `await fn.enqueue(**kwargs)` queues a run."""

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
        return {name: getattr(parsed, name) for name in self._arguments.names}

    def _jsonable(self, parsed: BaseModel) -> dict[str, Any]:
        """The arguments as JSON data, or an ArgumentsError naming the argument that cannot be one."""
        name = self.name or self.fn.__name__
        out: dict[str, Any] = {}
        for field_name in self._arguments.names:
            try:
                value = parsed.model_dump(mode="json", include={field_name})[field_name]
            except Exception as exc:  # pydantic cannot serialize it (unknown type, bytes that are not UTF-8)
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ArgumentsError(
                    f"bad arguments for '{name}': {field_name}: cannot be sent as JSON: {reason}"
                ) from None
            problem = json_problem(getattr(parsed, field_name), field_name, python=True) or json_problem(
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

    async def enqueue(
        self,
        *,
        delay: float | None = None,
        at: datetime | None = None,
        queue: str | None = None,
        deadline: float | datetime | None = None,
        key: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Queue a run and return its id. `delay` (seconds) or `at` (a datetime, naive = UTC) postpones it;
        `queue` sends it to another declared queue; `deadline` (seconds or a datetime) fails it, without
        retry, if it has not finished by then; `key` makes a second enqueue with the same key, while the
        first run is unfinished, return the first run's id instead."""
        options = {"delay": delay, "at": at, "queue": queue, "deadline": deadline, "key": key}
        ids = await self.enqueue_many([kwargs], **{k: v for k, v in options.items() if v is not None})
        return ids[0]

    async def enqueue_many(self, arguments: list[dict[str, Any]], **options: Any) -> list[str]:
        """Queue many runs in one round trip each to Redis and the database; returns their ids. Options
        as `enqueue`'s (unique keys are checked per item)."""
        runtime = running()
        if runtime is None:
            raise RuntimeNotStarted(
                f"cannot enqueue '{self.name or self.fn.__name__}': no runtime is running in this process; "
                "use `async with Runtime.from_manifest('manifest.yaml'):` in scripts"
            )
        ids: list[str] = await runtime.enqueue(self, arguments, **options)
        return ids


def http(fn: Callable[P, R]) -> HttpFunction[P, R]:
    """Mark a function as an HTTP function; its route comes from the manifest."""
    return HttpFunction(fn)


def task(fn: Callable[P, R]) -> TaskFunction[P, R]:
    """Mark a function as a task; its retries, timeout and schedule come from the manifest."""
    return TaskFunction(fn)

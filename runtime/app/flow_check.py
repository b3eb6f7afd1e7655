"""`runtime check` of flow control against the functions themselves: each key's path must exist in the
arguments (read from the function's type hints), and `batch` needs a function that takes one list."""

from __future__ import annotations

from typing import Any

from runtime.app.decorators import TaskFunction
from runtime.app.manifest import Manifest, TaskSpec
from runtime.errors import Problem

_SCALARS = {"string", "integer", "number"}


def flow_problems(manifest: Manifest, tasks: dict[str, TaskFunction[..., Any]], file: str) -> list[Problem]:
    problems = []
    for name, fn in tasks.items():
        spec = manifest.functions[name].task
        if spec is None or not spec.flow():
            continue
        schema = fn.arguments_schema()
        root: dict[str, Any] = schema
        if spec.batch is not None:
            params = list(schema.get("properties", {}).items())
            item = _items(schema, params[0][1]) if len(params) == 1 else None
            if item is None:
                found = ", ".join(p for p, _ in params) or "none"
                message = (
                    f"a batch task takes one parameter, a list of the items (like items: list[Item]); it has: {found}"
                )
                problems.append(Problem(file, name, "batch", message))
                continue
            root = {"properties": {"item": item}}
        for field, path in _keys(spec):
            where = path if spec.batch is None else f"item.{path}"
            if error := _missing(schema, root, where.split(".")):
                problems.append(Problem(file, name, field, f"{path}: {error}"))
    return problems


def _keys(spec: TaskSpec) -> list[tuple[str, str]]:
    """(the setting, its key path) of every keyed limit of a task."""
    keyed: list[tuple[str, Any]] = [(f"concurrency[{i}]", c) for i, c in enumerate(spec.concurrency or [])]
    keyed += [("throttle", spec.throttle), ("rate_limit", spec.rate_limit), ("debounce", spec.debounce)]
    keyed += [("batch", spec.batch)]
    return [(f"task.{field}.key", value.key) for field, value in keyed if value is not None and value.key is not None]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    """The shapes a JSON schema node may take ($ref followed; an optional's branches)."""
    if "$ref" in node:
        return _resolve(schema, schema.get("$defs", {}).get(node["$ref"].rsplit("/", 1)[-1], {}))
    for combined in ("anyOf", "oneOf", "allOf"):
        if combined in node:
            return [shape for branch in node[combined] for shape in _resolve(schema, branch)]
    return [node]


def _items(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any] | None:
    for shape in _resolve(schema, node):
        if shape.get("type") == "array":
            items: dict[str, Any] = shape.get("items", {})
            return items
    return None


def _missing(schema: dict[str, Any], root: dict[str, Any], parts: list[str]) -> str | None:
    """Why no argument has this path (None: one may), read from the arguments' JSON schema."""
    nodes = [root]
    for depth, part in enumerate(parts):
        found: list[dict[str, Any]] = []
        for node in nodes:
            for shape in _resolve(schema, node):
                props = shape.get("properties")
                if props is not None:
                    found += [props[part]] if part in props else []
                elif "type" not in shape or shape.get("type") == "object":
                    return None  # Any or a dict: any path may be there
        if not found:
            at = ".".join(parts[:depth])
            if not at:
                names = ", ".join(root.get("properties", {})) or "none"
                return f"the function has no parameter {part!r} (its parameters: {names})"
            return f"{at} has no field {part!r}"
        nodes = found
    shapes = [shape for node in nodes for shape in _resolve(schema, node)]
    if any("type" not in shape or shape["type"] in _SCALARS for shape in shapes):
        return None
    kinds = ", ".join(sorted({str(shape.get("type")) for shape in shapes}))
    return f"is {kinds}; a key must be a string or a number"

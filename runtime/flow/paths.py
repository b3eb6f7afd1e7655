"""Keys of flow control: dotted paths into a run's arguments (`customer.id`), read at enqueue and at start."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.errors import ArgumentsError

MAX_KEY_VALUE = 200  # characters of a key's value (it names Redis keys)


def key_value(arguments: Mapping[str, Any], path: str | None, where: str = "key") -> str:
    """The value at `path` in the arguments, as text ("" without a path: the limit is per function). Raises
    ArgumentsError, naming the setting (`where`) and the path, when the value is missing or not a string or
    a number."""
    if path is None:
        return ""
    node: Any = arguments
    for depth, part in enumerate(path.split(".")):
        if not isinstance(node, Mapping) or part not in node:
            at = ".".join(path.split(".")[:depth]) or "the arguments"
            raise ArgumentsError(f"{where}: {path} is missing (no {part!r} in {at}); every run needs a value there")
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, str | int | float):
        kind = "null" if node is None else type(node).__name__
        raise ArgumentsError(f"{where}: {path} is {kind}; a key's value must be a string or a number")
    text = str(node)
    if not text or len(text) > MAX_KEY_VALUE:
        raise ArgumentsError(f"{where}: {path} must be 1 to {MAX_KEY_VALUE} characters, not {len(text)}")
    return text


def batch_items(arguments: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """What a batch task's keys are read from: each item of its one list argument (an item that is not a mapping
    as `{"item": value}`); none when the arguments are not one list."""
    items = next(iter(arguments.values()), None) if len(arguments) == 1 else None
    if not isinstance(items, list):
        return []
    return [item if isinstance(item, Mapping) else {"item": item} for item in items]

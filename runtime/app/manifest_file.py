"""Reading and checking a manifest file: the YAML loaded safely (size, depth and alias limits, duplicate keys)
and every error turned into a problem that names the file, the function and the field.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from runtime.app.durations import _short
from runtime.app.manifest import HANDLER_PATTERN, Manifest
from runtime.errors import ManifestError, Problem

# Hostile-input bounds: a real manifest is a few KB, a few levels deep, with a few hundred values.
MAX_MANIFEST_BYTES = 1_000_000
MAX_DEPTH = 32
MAX_VALUES = 100_000


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
    """PyYAML's safe loader with a depth limit (its composer recurses once per nesting level), and YAML 1.2's
    booleans: only true and false. YAML 1.1 also reads on/off/yes/no (any case) as booleans, which would make
    `task: {on: [briefing.created]}` a key `True`."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

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


_ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


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

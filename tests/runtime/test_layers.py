"""The rooms of `runtime/` and their order: no import circle anywhere in `runtime/` or `emulator/`, and no room
imports one above it (`queue/` and `store/` know nothing of `worker/`, `web/` or `ops/`; nothing in `runtime/`
imports `emulator/`). Every import counts, those inside functions and under TYPE_CHECKING too: an arrow
back up that only a type needs is still a circle for a reader, and the next late import away from a real one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Each unit is a room (a package under runtime/) or a top-level module, with its rank: a unit imports only
# itself and units of a lower rank, so units of one rank never import each other. A new room or top-level
# module fails the test until it is given its place here.
RANKS = {
    "runtime.errors": 0,
    "runtime.redaction": 0,
    "runtime.gc_pause": 0,
    "runtime.lazy_imports": 0,  # installed by the package itself, before anything else is imported
    "runtime.tracing": 1,  # the run store reads whether it is on, so it sits below store/
    "runtime.queue": 2,
    "runtime.store": 2,
    "runtime.settings": 3,  # checks REDIS_URL with queue/redis_client's parser
    "runtime.logs": 4,
    "runtime.durable": 5,  # steps; the Context of app/ hands them to the task
    "runtime.flow": 5,  # limits held in Redis; enqueue (app/) and the worker use them
    "runtime.app": 6,
    "runtime.ops": 7,
    "runtime.web": 8,
    "runtime.worker": 8,
    "runtime.scheduler": 9,
    "runtime.dashboard": 10,
    "runtime.deploy": 10,
    "runtime.cli": 11,
    "runtime": 12,  # the public API (`from runtime import ...`): for users, never imported from inside
    "emulator": 13,
}


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of a package, by dotted name (a package by its own name, for its __init__)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The modules of `known` that the module `name` imports anywhere in its text, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _known(alias.name, known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                if f"{base}.{alias.name}" in known:  # `from runtime.ops import metrics`: the submodule
                    yield f"{base}.{alias.name}"
                else:
                    yield from _known(base, known)


def _known(dotted: str, known: dict[str, Path]) -> Iterator[str]:
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):  # `import a.b.c` names a.b.c (or the nearest package that exists)
        if ".".join(parts[:end]) in known:
            yield ".".join(parts[:end])
            return


def graph(root: Path, packages: list[str]) -> dict[str, set[str]]:
    known = {name: path for package in packages for name, path in modules(root, package).items()}
    return {name: set(imports(name, path, known)) - {name} for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan), each as the names in it, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def unit(module: str) -> str | None:
    """The room or top-level module a module belongs to (None for one that RANKS does not place)."""
    parts = module.split(".")
    name = ".".join(parts[:2]) if parts[0] == "runtime" else parts[0]
    return name if name in RANKS else None


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Each import of a unit that is not below the importer's, as 'importer -> imported'."""
    wrong = []
    for module, targets in sorted(edges.items()):
        mine = unit(module)
        for target in sorted(targets):
            theirs = unit(target)
            if mine is None or theirs is None:
                continue  # test_every_module_has_a_place names it
            if theirs != mine and RANKS[theirs] >= RANKS[mine]:
                wrong.append(f"{module} ({mine}, rank {RANKS[mine]}) -> {target} ({theirs}, rank {RANKS[theirs]})")
    return wrong


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph(ROOT, ["runtime", "emulator"])


def test_every_module_has_a_place(edges: dict[str, set[str]]) -> None:
    unplaced = sorted(module for module in edges if unit(module) is None)
    assert not unplaced, f"give these a room, or a rank in RANKS: {unplaced}"


def test_no_import_circle_between_modules(edges: dict[str, set[str]]) -> None:
    assert circles(edges) == []


def test_no_import_circle_between_rooms(edges: dict[str, set[str]]) -> None:
    rooms: dict[str, set[str]] = {}
    for module, targets in edges.items():
        rooms.setdefault(unit(module) or module, set()).update(unit(t) or t for t in targets)
    assert circles({room: targets - {room} for room, targets in rooms.items()}) == []


def test_no_room_imports_one_above_it(edges: dict[str, set[str]]) -> None:
    assert upward(edges) == []


LONGEST = 450  # lines; a module past it has two concepts in it (the longest today: app/connections.py, 447)


def test_no_module_is_long() -> None:
    """Each module reads in one sitting: one past LONGEST is split along its seams (Alembic's revisions aside)."""
    known = {name: path for package in ("runtime", "emulator") for name, path in modules(ROOT, package).items()}
    lengths = {name: len(path.read_text().splitlines()) for name, path in known.items() if ".versions." not in name}
    assert {name: n for name, n in lengths.items() if n > LONGEST} == {}


def test_a_circle_through_a_late_or_type_only_import_is_found(tmp_path: Path) -> None:
    """The walk itself: a circle closed by an import inside a function, or under TYPE_CHECKING, is reported,
    and so is a lower room importing a higher one."""
    package = tmp_path / "runtime"
    (package / "queue").mkdir(parents=True)
    (package / "worker").mkdir()
    for init in (package, package / "queue", package / "worker"):
        (init / "__init__.py").write_text("")
    (package / "queue" / "broker.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from runtime.worker.loop import Worker\n"
    )
    (package / "worker" / "loop.py").write_text("from runtime.queue import broker\n")
    (package / "queue" / "keys.py").write_text("def names():\n    from . import names\n")
    (package / "queue" / "names.py").write_text("import runtime.queue.keys\n")
    found = graph(tmp_path, ["runtime"])
    assert found["runtime.worker.loop"] == {"runtime.queue.broker"}
    assert found["runtime.queue.keys"] == {"runtime.queue.names"}
    assert sorted(circles(found)) == [
        ["runtime.queue.broker", "runtime.worker.loop"],
        ["runtime.queue.keys", "runtime.queue.names"],
    ]
    assert upward(found) == [
        "runtime.queue.broker (runtime.queue, rank 2) -> runtime.worker.loop (runtime.worker, rank 8)"
    ]

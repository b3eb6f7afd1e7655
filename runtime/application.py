"""An Application: a manifest with its handlers imported and checked against it."""

from __future__ import annotations

import importlib
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from runtime.decorators import HttpFunction, TaskFunction, _Function
from runtime.errors import ManifestError, Problem
from runtime.manifest import Manifest, load_manifest


@dataclass
class Application:
    """What every process serves: the manifest and its imported, decorated functions."""

    manifest: Manifest
    path: Path
    http: dict[str, HttpFunction[..., object]]
    tasks: dict[str, TaskFunction[..., object]]

    @property
    def name(self) -> str:
        return self.manifest.app


def _import(module_name: str) -> ModuleType:
    return importlib.import_module(module_name)


def load_application(manifest_path: str | Path = "manifest.yaml") -> Application:
    """Load the manifest and import every handler; raise ManifestError listing every problem."""
    path = Path(manifest_path).resolve()
    manifest = load_manifest(path)
    file = str(manifest_path)
    for folder in (str(path.parent), str(Path.cwd())):
        if folder not in sys.path:
            sys.path.insert(0, folder)

    problems: list[Problem] = []
    http_functions: dict[str, HttpFunction[..., object]] = {}
    tasks: dict[str, TaskFunction[..., object]] = {}
    modules: dict[str, ModuleType] = {}
    broken: dict[str, str] = {}  # module -> the import's traceback, reported once
    for name, spec in manifest.functions.items():
        module_name, attribute = spec.handler.split(":")
        if module_name in broken:
            problems.append(Problem(file, name, "handler", f"cannot import '{module_name}' (see above)"))
            continue
        if module_name not in modules:
            try:
                modules[module_name] = _import(module_name)
            except Exception as exc:
                broken[module_name] = "".join(traceback.format_exception(exc, limit=-4)).rstrip()
                problems.append(
                    Problem(file, name, "handler", f"cannot import '{module_name}':\n{broken[module_name]}")
                )
                continue
        target = getattr(modules[module_name], attribute, None)
        if target is None:
            problems.append(Problem(file, name, "handler", f"'{module_name}' has no attribute '{attribute}'"))
        elif not isinstance(target, _Function):
            problems.append(
                Problem(file, name, "handler", f"'{spec.handler}' is not decorated; add @{spec.kind} to it")
            )
        elif target.kind != spec.kind:
            problems.append(
                Problem(
                    file,
                    name,
                    spec.kind,
                    f"'{spec.handler}' is an @{target.kind} function but is declared as '{spec.kind}:'; "
                    f"declare it with '{target.kind}:' or decorate it with @{spec.kind}",
                )
            )
        elif target.name is not None and target.name != name:
            problems.append(Problem(file, name, "handler", f"'{spec.handler}' is already declared as '{target.name}'"))
        else:
            target.name = name
            if isinstance(target, HttpFunction):
                http_functions[name] = target
            else:
                tasks[name] = target  # type: ignore[assignment]

    declared = {spec.handler for spec in manifest.functions.values()}
    for module_name, module in modules.items():
        for attribute, value in vars(module).items():
            if (
                isinstance(value, _Function)
                and value.fn.__module__ == module_name
                and f"{module_name}:{attribute}" not in declared
            ):
                problems.append(
                    Problem(
                        file,
                        attribute,
                        None,
                        f"'{module_name}:{attribute}' is decorated with @{value.kind} but the manifest "
                        f"does not declare it; add it under 'functions:' or remove the decorator",
                    )
                )
    if problems:
        raise ManifestError(problems)
    return Application(manifest=manifest, path=path, http=http_functions, tasks=tasks)

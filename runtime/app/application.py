"""An Application: a manifest with its handlers imported and checked against it."""

from __future__ import annotations

import importlib
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from runtime.app.decorators import HttpFunction, TaskFunction, _Function
from runtime.app.manifest import Manifest
from runtime.app.manifest_file import declared_handlers, read_manifest, validate_manifest
from runtime.errors import ManifestError, Problem


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


def _import(module_name: str, file: str, function: str) -> ModuleType | Problem:
    """Import a handler's module, or say why it cannot be: user code may raise anything, even SystemExit."""
    try:
        return importlib.import_module(module_name)
    except KeyboardInterrupt:
        raise
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            return Problem(
                file,
                function,
                "handler",
                f"cannot import '{module_name}': no module named '{exc.name}'; the module path is relative to "
                "the folder of the manifest",
            )
        message = "".join(traceback.format_exception(exc, limit=-4)).rstrip()
    except SystemExit as exc:
        return Problem(
            file,
            function,
            "handler",
            f"importing '{module_name}' called sys.exit({exc.code!r}); a module must not exit when imported",
        )
    except BaseException as exc:
        message = "".join(traceback.format_exception(exc, limit=-4)).rstrip()
    return Problem(file, function, "handler", f"cannot import '{module_name}':\n{message}")


def load_application(manifest_path: str | Path = "manifest.yaml") -> Application:
    """Load the manifest and import every handler; raise ManifestError listing every problem.

    Handlers are imported even when other fields are invalid, so one `runtime check` lists every problem.
    """
    path = Path(manifest_path).resolve()
    file = str(manifest_path)
    data, problems = read_manifest(path, file)
    manifest, schema_problems = validate_manifest(data, file)
    problems += schema_problems
    for folder in (str(path.parent), str(Path.cwd())):
        if folder not in sys.path:
            sys.path.insert(0, folder)

    http_functions: dict[str, HttpFunction[..., object]] = {}
    tasks: dict[str, TaskFunction[..., object]] = {}
    modules: dict[str, ModuleType] = {}
    broken: set[str] = set()  # modules whose import failed: reported once
    handlers = declared_handlers(data)
    for name, (handler, kind) in handlers.items():
        module_name, attribute = handler.split(":")
        if module_name in broken:
            problems.append(Problem(file, name, "handler", f"cannot import '{module_name}' (see above)"))
            continue
        if module_name not in modules:
            imported = _import(module_name, file, name)
            if isinstance(imported, Problem):
                broken.add(module_name)
                problems.append(imported)
                continue
            modules[module_name] = imported
        try:
            target = getattr(modules[module_name], attribute, None)
        except Exception as exc:  # a module-level __getattr__ may raise anything
            problems.append(Problem(file, name, "handler", f"cannot read '{handler}': {exc!r}"))
            continue
        if target is None:
            problems.append(Problem(file, name, "handler", f"'{module_name}' has no attribute '{attribute}'"))
        elif not isinstance(target, _Function):
            decorator = f"@{kind}" if kind else "@http or @task"
            problems.append(Problem(file, name, "handler", f"'{handler}' is not decorated; add {decorator} to it"))
        elif kind is not None and target.kind != kind:
            problems.append(
                Problem(
                    file,
                    name,
                    kind,
                    f"'{handler}' is an @{target.kind} function but is declared as '{kind}:'; "
                    f"declare it with '{target.kind}:' or decorate it with @{kind}",
                )
            )
        elif target.name is not None and target.name != name:
            problems.append(Problem(file, name, "handler", f"'{handler}' is already declared as '{target.name}'"))
        else:
            target.name = name
            if isinstance(target, HttpFunction):
                http_functions[name] = target
            else:
                tasks[name] = target  # type: ignore[assignment]

    declared = {handler for handler, _ in handlers.values()}
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
    if problems or manifest is None:
        raise ManifestError(problems)
    return Application(manifest=manifest, path=path, http=http_functions, tasks=tasks)

"""An Application: a manifest with its handlers imported and checked against it."""

from __future__ import annotations

import importlib
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from runtime.app.decorators import HttpFunction, TaskFunction, _Function
from runtime.app.flow_check import flow_problems
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


def _where(path: str, root: Path) -> str:
    """A file as the user knows it: relative to the manifest's folder when it is inside it."""
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return path


def _is_own(path: str, root: Path) -> bool:
    """A file of the app: under the manifest's folder, not in a virtualenv or site-packages there."""
    resolved = Path(path).resolve()
    return resolved.is_relative_to(root) and not {"site-packages", ".venv", "venv"} & set(resolved.parts)


def _failed_import(module_name: str, exc: BaseException, root: Path) -> Problem:
    """One problem for a module that raised while imported, at the line that raised: the import machinery's own
    frames (`<frozen importlib._bootstrap>`, importlib/__init__.py) say nothing to the user and are left out."""
    frames = [  # the first frame is _import's own
        frame
        for frame in traceback.extract_tb(exc.__traceback__)[1:]
        if not frame.filename.startswith("<frozen ") and frame.filename != importlib.__file__
    ]
    if isinstance(exc, SyntaxError) and exc.filename:  # raised compiling the file: no frame of it ran
        text = (exc.text or "").strip()
        what = f"{type(exc).__name__}: {exc.msg}" + (f" in `{text}`" if text else "")
        file, line, callers = _where(exc.filename, root), exc.lineno, frames
    elif frames:
        if isinstance(exc, SystemExit):
            what = f"importing '{module_name}' called sys.exit({exc.code!r}); a module must not exit when imported"
        else:
            what = " ".join("".join(traceback.format_exception_only(exc)).split())
        # the line in the app's own code, when the error was raised inside a library it called
        own = [i for i, f in enumerate(frames) if _is_own(f.filename, root)]
        at = own[-1] if own else len(frames) - 1
        file, line, callers = _where(frames[at].filename, root), frames[at].lineno, frames[:at]
    else:
        return Problem(module_name, None, None, " ".join("".join(traceback.format_exception_only(exc)).split()))
    chain = ", ".join(f"{_where(f.filename, root)}, line {f.lineno}" for f in reversed(callers))
    return Problem(file, None, None, what + (f" (imported from {chain})" if chain else ""), line=line)


def _import(module_name: str, file: str, function: str, root: Path) -> ModuleType | Problem:
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
        return _failed_import(module_name, exc, root)
    except BaseException as exc:
        return _failed_import(module_name, exc, root)


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
        if module_name in broken:  # reported once, for the module, not again for each of its functions
            continue
        if module_name not in modules:
            imported = _import(module_name, file, name, path.parent)
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
    if manifest is not None:
        problems += flow_problems(manifest, tasks, file)
    if problems or manifest is None:
        raise ManifestError(problems)
    return Application(manifest=manifest, path=path, http=http_functions, tasks=tasks)


def load_declarations(manifest_path: str | Path = "manifest.yaml") -> Application:
    """The manifest alone, its handlers not imported: enough for what reads and manages runs and queues (the
    inspector), which must keep working while the app's code is broken. Raises ManifestError for an invalid
    manifest."""
    path = Path(manifest_path).resolve()
    data, problems = read_manifest(path, str(manifest_path))
    manifest, schema_problems = validate_manifest(data, str(manifest_path))
    if problems or schema_problems or manifest is None:
        raise ManifestError(problems + schema_problems)
    return Application(manifest=manifest, path=path, http={}, tasks={})

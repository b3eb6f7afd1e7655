"""`import taskiq` without aiohttp. taskiq's package imports its middlewares package, whose admin middleware (for
the taskiq-admin web UI, which we never use) imports aiohttp, and aiohttp builds two SSL contexts from the system's
certificates as it loads: a tenth of a worker's start before its first task. `install()` (called by
runtime/__init__.py, before anything imports taskiq) makes `taskiq.middlewares` load each middleware when it is
asked for: taskiq's own import asks for the other three, so the admin middleware and aiohttp load only if someone
uses them, and then as before."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

PACKAGE = "taskiq.middlewares"
# what taskiq/middlewares/__init__.py exports (taskiq 0.13), by the submodule that defines it; any other name
# runs the package's own __init__ (which imports them all) and is looked up there
HOMES = {
    "PrometheusMiddleware": "prometheus_middleware",
    "SimpleRetryMiddleware": "simple_retry_middleware",
    "SmartRetryMiddleware": "smart_retry_middleware",
    "TaskiqAdminMiddleware": "taskiq_admin_middleware",
}


class _LazyMiddlewares(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `taskiq.middlewares` (once) where taskiq keeps it, and loads it without running its __init__:
    its names are looked up on first use (PEP 562 `__getattr__`)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != PACKAGE:
            return None
        sys.meta_path.remove(self)  # one package, found once
        real = importlib.machinery.PathFinder.find_spec(fullname, path)
        if real is None or real.origin is None:
            return real
        return importlib.util.spec_from_file_location(
            fullname, real.origin, loader=self, submodule_search_locations=real.submodule_search_locations
        )

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module, with the spec's __file__ and __path__

    def exec_module(self, module: ModuleType) -> None:
        def __getattr__(name: str) -> Any:
            if name in HOMES:
                value = getattr(importlib.import_module(f"{PACKAGE}.{HOMES[name]}"), name)
            elif name.startswith("__") or module.__dict__.get("_ran_init"):
                raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")
            else:  # a name this list does not know (a newer taskiq): the package as taskiq wrote it
                module.__dict__["_ran_init"] = True
                assert module.__file__ is not None
                with open(module.__file__, encoding="utf-8") as source:
                    exec(compile(source.read(), module.__file__, "exec"), module.__dict__)
                return getattr(module, name)
            setattr(module, name, value)
            return value

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        module.__dict__["__all__"] = tuple(HOMES)


def install() -> None:
    """Load `taskiq.middlewares` lazily from now on (no-op once taskiq is imported)."""
    if "taskiq" in sys.modules or any(isinstance(finder, _LazyMiddlewares) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _LazyMiddlewares())

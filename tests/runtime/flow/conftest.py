"""What the flow-control tests share: each module declares its `app` fixture (its manifest and task module); these
give it a worker environment (2 s leases, a side-effect log) and the test's own runtime on the same Redis and
database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime import Runtime
from tests.runtime.workers import started_runtime, worker_env


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return worker_env(redis_url, tmp_path, LOG_LEVEL="info")


@pytest.fixture
async def rt(app: Path, env: dict[str, str]) -> AsyncIterator[Runtime]:
    async with started_runtime(app, env) as runtime:
        yield runtime

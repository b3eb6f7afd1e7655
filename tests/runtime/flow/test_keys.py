"""Keys of flow control: a dotted path into the arguments. `runtime check` names a path no parameter has; an enqueue
whose key value is missing, or is not a string or a number, fails there with a clear error (never a stuck run);
hostile values (fixed seed) get the same error and nothing is queued."""

from __future__ import annotations

import random
import subprocess
import uuid
from pathlib import Path

import pytest

from runtime import Runtime
from runtime.errors import ArgumentsError
from runtime.flow.paths import key_value
from runtime.settings import Settings
from tests.conftest import command, write_app

MODULE = f"keys_{uuid.uuid4().hex[:8]}"

SOURCE = """
from typing import Any
from pydantic import BaseModel
from runtime import task

class Customer(BaseModel):
    id: int | str
    tags: list[str] = []

@task
async def per_customer(customer: Customer, note: Any = None) -> None: ...

@task
async def per_tenant(payload: dict) -> None: ...
"""

MANIFEST = f"""
app: keys-test
functions:
  per_customer: {{handler: "{MODULE}:per_customer", task: {{concurrency: {{limit: 1, key: customer.id}}}}}}
  per_tenant: {{handler: "{MODULE}:per_tenant", task: {{throttle: {{limit: 1, period: 1s, key: payload.tenant}}}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("keys"), MANIFEST, {f"{MODULE}.py": SOURCE})


def test_key_value_reads_a_dotted_path_and_names_what_is_wrong() -> None:
    assert key_value({"customer": {"id": 7}}, "customer.id") == "7"
    assert key_value({"x": "a"}, None) == ""
    cases = {
        "concurrency[0].key: customer.id is missing (no 'id' in customer); every run needs a value there": {
            "customer": {}
        },
        "concurrency[0].key: customer.id is missing (no 'customer' in the arguments); every run needs a value there": (
            {}
        ),
        "concurrency[0].key: customer.id is null; a key's value must be a string or a number": {
            "customer": {"id": None}
        },
        "concurrency[0].key: customer.id is list; a key's value must be a string or a number": {
            "customer": {"id": [1]}
        },
        "concurrency[0].key: customer.id is bool; a key's value must be a string or a number": {
            "customer": {"id": True}
        },
        "concurrency[0].key: customer.id must be 1 to 200 characters, not 0": {"customer": {"id": ""}},
    }
    for message, arguments in cases.items():
        with pytest.raises(ArgumentsError) as caught:
            key_value(arguments, "customer.id", "concurrency[0].key")
        assert str(caught.value) == message


def test_runtime_check_names_the_function_and_a_path_no_parameter_has(tmp_path: Path) -> None:
    manifest = MANIFEST.replace("key: customer.id", "key: customer.name").replace("payload.tenant", "tenant")
    app = write_app(tmp_path, manifest, {f"{MODULE}.py": SOURCE})
    done = subprocess.run([command("runtime"), "check", "--manifest", str(app)], capture_output=True, text=True)
    assert done.returncode == 1, done
    assert (
        "function 'per_customer', field 'task.concurrency[0].key': customer.name: customer has no field" in done.stderr
    )
    assert (
        "function 'per_tenant', field 'task.throttle.key': tenant: the function has no parameter 'tenant'"
        in done.stderr
    )
    assert "Traceback" not in done.stderr


async def test_an_enqueue_without_a_usable_key_fails_clearly_and_queues_nothing(
    app: Path, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/runs.db")
    hostile = [None, [], {}, True, "", "x" * 201, {"tenant": None}, {"tenant": {"a": 1}}, {"tenant": [1]}]
    rng = random.Random(24)
    hostile += [{"tenant": rng.choice([None, [], {}, False, "", "y" * 500])} for _ in range(40)]
    async with Runtime.from_manifest(app, settings) as rt:
        fn = rt.app.tasks["per_tenant"]
        for payload in hostile:
            if not isinstance(payload, dict):
                payload = {"tenant": payload}
            with pytest.raises(ArgumentsError) as caught:
                await fn.enqueue(payload=payload)
            assert str(caught.value).startswith("throttle.key: payload.tenant "), caught.value
        assert await rt.store.list(limit=10) == []
        assert await rt.broker.redis.xlen(rt.keys.queue("default").stream) == 0
        ok = await fn.enqueue(payload={"tenant": "acme"})
        assert (await rt.store.get(ok)) is not None

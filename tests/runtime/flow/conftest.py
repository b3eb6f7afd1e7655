"""What the flow-control tests share with the durable ones: each module declares its `app` fixture (its manifest and
task module); `env` gives it a worker environment (2 s leases, a side-effect log) and `rt` the test's own runtime on
the same Redis and database."""

from tests.runtime.durable.conftest import env, rt

__all__ = ["env", "rt"]

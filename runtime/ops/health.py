"""Health: the state of Redis and the database, and a tiny HTTP server for the probes (and the metrics) of
processes with no web server of their own (the worker and the scheduler)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from runtime.errors import ConfigError

if TYPE_CHECKING:
    from runtime.app.connections import Runtime

logger = logging.getLogger("runtime.health")


async def _probe(check: Awaitable[Any], timeout: float) -> str:
    try:
        await asyncio.wait_for(check, timeout)
    except Exception as exc:
        return f"down: {type(exc).__name__}: {exc}".splitlines()[0][:200]
    return "ok"


async def dependencies(runtime: Runtime, timeout: float = 2.0) -> dict[str, str]:
    """{"redis": "ok" | "down: ...", "database": ...}, checked side by side."""
    redis, database = await asyncio.gather(
        _probe(runtime.broker.redis.ping(), timeout), _probe(runtime.store.ping(), timeout)
    )
    return {"redis": redis, "database": database}


Check = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


class HealthServer:
    """Serves GET /health (ready), /health/live (alive) and /metrics (Prometheus text) for a process with no
    web server of its own. The metrics include the queue depths of `runtime` (default: the running one)."""

    def __init__(
        self,
        ready: Check,
        live: Check,
        runtime: Runtime | None = None,
        metrics: Callable[[], Awaitable[tuple[bytes, str]]] | None = None,
    ) -> None:
        self.routes = {"/health": ready, "/health/ready": ready, "/health/live": live}
        self.runtime = runtime
        self.metrics = metrics  # instead of the runtime's (the `--processes` supervisor has none)
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        try:
            self.server = await asyncio.start_server(self._handle, host, port)
        except OSError as exc:  # a port in use is a setting to change, not a traceback
            raise ConfigError(
                f"cannot serve /health on {host}:{port} ({exc.strerror or exc}): set WORKER_HEALTH_PORT to a free "
                "port (each worker and scheduler on one machine needs its own), or 0 to turn it off"
            ) from None
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = request.split(b" ", 2)[1].decode().split("?")[0]
            content_type = "application/json"
            if path == "/metrics":
                status, (payload, content_type) = 200, await self._metrics()
            else:
                check = self.routes.get(path)
                status, body = await check() if check else (404, {"error": f"no route {path}"})
                payload = json.dumps(body).encode()
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(status, "")
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n"
                f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
        except Exception:
            pass
        finally:
            writer.close()

    async def _metrics(self) -> tuple[bytes, str]:
        if self.metrics is not None:
            return await self.metrics()
        from runtime.app.connections import current_runtime
        from runtime.ops.metrics import render

        return await render(self.runtime or current_runtime())

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class Heartbeat:
    """A loop's sign of life: `beat()` from the loop, `fresh()` from the probe."""

    def __init__(self, max_age: float = 30.0) -> None:
        self.max_age = max_age
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def fresh(self) -> bool:
        return time.monotonic() - self.last < self.max_age

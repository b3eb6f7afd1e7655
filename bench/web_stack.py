"""The app stack's own cost per request, without sockets or a server: `runtime web`'s ASGI app (create_web_app, the
bench manifest's JSON hello route) and bare Starlette's, each called in a loop with a scope like our protocol's
and a receive and send that do nothing; CPU time per request, alternating, the median of the rounds.

python -m bench.web_stack [--requests 100000] [--rounds 5] [--path /hello]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.systems import OURS_MANIFEST

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 50000),
    "scheme": "http",
    "root_path": "",
    "http_version": "1.1",
    "headers": [(b"host", b"127.0.0.1:8000")],
    "state": {},
    "method": "GET",
    "raw_path": b"/hello",
    "query_string": b"",
}
REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> dict[str, Any]:
    return REQUEST


async def send(message: dict[str, Any]) -> None:
    return None


async def per_request_us(app: Any, path: str, requests: int) -> float:
    scope = SCOPE | {"path": path, "raw_path": path.encode()}
    for _ in range(1000):  # warm caches (metrics children, header lists)
        await app(scope.copy(), receive, send)
    started = time.process_time()
    for _ in range(requests):
        await app(scope.copy(), receive, send)
    return (time.process_time() - started) / requests * 1e6


def ours(tmp: Path) -> Any:
    from runtime import Runtime
    from runtime.settings import Settings
    from runtime.web.app import create_web_app

    settings = Settings(redis_url="redis://127.0.0.1:1/0", database_url=f"sqlite:///{tmp}/runs.db")
    return create_web_app(Runtime.from_manifest(OURS_MANIFEST, settings))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--path", default="/hello")
    args = parser.parse_args()
    from bench.apps.starlette_app import app as bare

    with tempfile.TemporaryDirectory() as tmp:
        apps = {"runtime web": ours(Path(tmp)), "bare Starlette": bare}
        figures: dict[str, list[float]] = {name: [] for name in apps}
        for n in range(args.rounds):
            for name, app in apps.items():
                figures[name].append(asyncio.run(per_request_us(app, args.path, args.requests)))
                print(f"round {n + 1} {name}: {figures[name][-1]:.2f} us/request", flush=True)
    for name, values in figures.items():
        print(f"median {name}: {statistics.median(values):.2f} us/request")


if __name__ == "__main__":
    main()

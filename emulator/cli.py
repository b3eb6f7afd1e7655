"""`emulator`: run the whole app locally in one command, and invoke its functions."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulator.embedded_redis import EmbeddedRedis

STARTED = time.time()


def _state(manifest: str) -> dict[str, Any]:
    path = Path(manifest).resolve().parent / ".emulator" / "state.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        raise SystemExit(
            f"error: no running emulator found ({path} is missing); start one with `emulator up`"
        ) from None


def _boot_redis(manifest: Path) -> EmbeddedRedis | None:
    """Spawn the embedded Redis before importing the runtime, so that it boots on another core meanwhile (the
    supervisor waits for it to answer before anything uses it). None when REDIS_URL names a Redis, or when
    there is no manifest (`up` is about to say so, and should leave nothing behind)."""
    if os.environ.get("REDIS_URL") or not manifest.is_file():
        return None
    from emulator.data_dir import prepare_data_dir
    from emulator.embedded_redis import EmbeddedRedis

    redis = EmbeddedRedis(prepare_data_dir(manifest.resolve().parent) / "redis")
    redis.spawn()
    return redis


def up(args: argparse.Namespace) -> int:
    from runtime import gc_pause

    gc_pause.pause()  # back on once ready; a forked child turns its own on when it reports (child._report)
    redis = _boot_redis(Path(args.manifest))
    from emulator.supervisor import Emulator

    emulator = Emulator(
        Path(args.manifest), args.host, args.port, args.dashboard_port, not args.no_reload, STARTED, redis
    )
    return emulator.up()


def invoke(args: argparse.Namespace) -> int:
    import httpx

    state = _state(args.manifest)
    try:
        data = json.loads(args.data) if args.data else {}
    except ValueError as exc:
        print(f"error: --data is not valid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        with httpx.Client(timeout=30) as client:
            functions = {f["name"]: f for f in client.get(f"{state['dashboard']}/api/functions").json()}
            spec = functions.get(args.name)
            if spec is None:
                print(f"error: no function named {args.name!r}; functions: {', '.join(functions)}", file=sys.stderr)
                return 2
            if spec["kind"] == "http":
                return _invoke_http(client, state["web"], spec, data)
            response = client.post(f"{state['dashboard']}/api/functions/{args.name}/runs", json=data)
            if response.status_code != 202:
                print(f"error: {response.json().get('error', response.text)}", file=sys.stderr)
                return 1
            run = response.json()
            print(f"run {run['id']} {run['status']}")
            if not args.wait:
                return 0
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                run = client.get(f"{state['dashboard']}/api/runs/{run['id']}").json()
                if run["status"] in ("succeeded", "failed"):
                    break
                time.sleep(0.05)
            else:
                print(f"error: run {run['id']} is still {run['status']} after {args.timeout} s", file=sys.stderr)
                return 1
            if run["status"] == "succeeded":
                print(json.dumps(run["result"], indent=2))
                return 0
            print(f"failed after {run['attempts']} attempt(s): {run['last_error']}", file=sys.stderr)
            return 1
    except httpx.ConnectError:
        print(
            f"error: the emulator at {state['dashboard']} does not answer; is `emulator up` running?", file=sys.stderr
        )
        return 1


def _invoke_http(client: Any, web: str, spec: dict[str, Any], data: dict[str, Any]) -> int:
    import re

    path = spec["route"]
    for name in re.findall(r"\{(\w+)(?::\w+)?\}", path):
        if name not in data:
            print(f"error: --data needs '{name}' for the route {path}", file=sys.stderr)
            return 2
        path = re.sub(r"\{" + name + r"(?::\w+)?\}", str(data.pop(name)), path)
    methods = spec["methods"]
    method = "POST" if data and "POST" in methods else methods[0]
    response = client.request(
        method,
        web + path,
        json=data if method in ("POST", "PUT", "PATCH") else None,
        params=data if method not in ("POST", "PUT", "PATCH") else None,
    )
    print(f"{method} {path} -> {response.status_code}")
    print(response.text)
    return 0 if response.status_code < 400 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emulator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("up", help="run the HTTP functions, a worker, the scheduler and the dashboard")
    run.add_argument("--manifest", default="manifest.yaml")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--dashboard-port", type=int, default=8081)
    run.add_argument("--no-reload", action="store_true", help="do not reload on save")
    call = commands.add_parser("invoke", help="run a function against the running emulator")
    call.add_argument("name")
    call.add_argument("--data", default=None, help="JSON: the task's arguments, or the HTTP body / path params")
    call.add_argument("--wait", action="store_true", help="wait for a task's result and print it")
    call.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits (default 300)")
    call.add_argument("--manifest", default="manifest.yaml")
    args = parser.parse_args(argv)
    return up(args) if args.command == "up" else invoke(args)


if __name__ == "__main__":
    sys.exit(main())

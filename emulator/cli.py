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


class InvokeError(Exception):
    """What `emulator invoke` answers when it cannot do what was asked: one line, exit 1."""


def _state(manifest: str) -> dict[str, Any]:
    path = Path(manifest).resolve().parent / ".emulator" / "state.json"
    try:
        state = json.loads(path.read_text())
        return {"web": str(state["web"]), "dashboard": str(state["dashboard"])}
    except OSError:
        raise InvokeError(f"no running emulator found ({path} is missing); start one with `emulator up`") from None
    except (ValueError, KeyError, TypeError):
        raise InvokeError(f"{path} is not an emulator's state; start the emulator again with `emulator up`") from None


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
    from emulator.data_dir import running_emulator
    from runtime import gc_pause

    root = Path(args.manifest).resolve().parent
    if (other := running_emulator(root)) is not None:  # a second one would share its Redis data and state
        print(f"error: an emulator already runs in {root} ({other}); stop it first, or use that one", file=sys.stderr)
        return 1
    gc_pause.pause()  # back on once ready; a forked child turns its own on when it reports (child._report)
    redis = _boot_redis(Path(args.manifest))
    from emulator.supervisor import Emulator

    emulator = Emulator(
        Path(args.manifest), args.host, args.port, args.dashboard_port, not args.no_reload, STARTED, redis
    )
    return emulator.up()


def invoke(args: argparse.Namespace) -> int:
    import httpx

    try:
        state = _state(args.manifest)
        try:
            data = json.loads(args.data) if args.data else {}
        except ValueError as exc:
            raise InvokeError(f"--data is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvokeError('--data must be a JSON object of arguments, e.g. {"briefing_id": 1}')
        with httpx.Client(timeout=30) as client:
            return _invoke(client, state, args, data)
    except InvokeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except httpx.ConnectError:
        print(
            f"error: the emulator at {state['dashboard']} does not answer; is `emulator up` running?", file=sys.stderr
        )
        return 1
    except httpx.HTTPError as exc:
        print(f"error: the emulator at {state['dashboard']} did not answer: {type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _invoke(client: Any, state: dict[str, str], args: argparse.Namespace, data: dict[str, Any]) -> int:
    dashboard = state["dashboard"]
    functions = {f["name"]: f for f in _api(client, "GET", f"{dashboard}/api/functions")}
    spec = functions.get(args.name)
    if spec is None:
        raise InvokeError(f"no function named {args.name!r}; functions: {', '.join(functions)}")
    if spec["kind"] == "http":
        return _invoke_http(client, state["web"], spec, data)
    run = _api(client, "POST", f"{dashboard}/api/functions/{args.name}/runs", json=data)
    print(f"run {run['id']} {run['status']}")
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while run["status"] not in ("succeeded", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise InvokeError(f"run {run['id']} is still {run['status']} after {args.timeout} s")
        time.sleep(0.05)
        run = _api(client, "GET", f"{dashboard}/api/runs/{run['id']}")
    if run["status"] == "succeeded":
        print(json.dumps(run["result"], indent=2))
        return 0
    error = _first_line(run.get("last_error")) or run["status"]
    print(f"{run['status']} after {run['attempts']} attempt(s): {error}", file=sys.stderr)
    return 1


def _api(client: Any, method: str, url: str, **options: Any) -> Any:
    """The dashboard API's answer to a request; an InvokeError in one line when it is not a success (a 503
    while the app fails to load says why it fails)."""
    response = client.request(method, url, **options)
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and body is not None:
        return body
    if response.status_code == 503 and isinstance(body, dict) and body.get("detail"):
        lines = [line.strip().removeprefix("- ") for line in str(body["detail"]).splitlines() if line.strip()]
        more = f" (and {len(lines) - 2} more: `runtime check` lists them)" if len(lines) > 2 else ""
        reason = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[1]}{more}"
        raise InvokeError(f"the app failed to load; fix it and save: {reason}")
    error = body.get("error") if isinstance(body, dict) else None
    path = "/" + url.split("/", 3)[-1]
    raise InvokeError(_first_line(str(error)) if error else f"{method} {path} answered {response.status_code}")


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0]


def _invoke_http(client: Any, web: str, spec: dict[str, Any], data: dict[str, Any]) -> int:
    import re

    path = spec["route"]
    for name in re.findall(r"\{(\w+)(?::\w+)?\}", path):
        if name not in data:
            raise InvokeError(f"--data needs '{name}' for the route {path}")
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
    from runtime.cli.parser import Parser, port

    parser = Parser(prog="emulator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("up", help="run the HTTP functions, a worker, the scheduler and the dashboard")
    run.add_argument("--manifest", default="manifest.yaml")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=port, default=8000)
    run.add_argument("--dashboard-port", type=port, default=8081)
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

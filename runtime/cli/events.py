"""`runtime events send NAME [--data JSON] [--id ID]` and `runtime events list`: against production
(REDIS_URL/DATABASE_URL) or the `emulator up` running here, like the inspector."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

Common = Callable[[argparse.ArgumentParser, str], argparse.ArgumentParser]


def add_event_commands(commands: Any, common: Common) -> None:
    events = common(commands.add_parser("events", help="send events; list recent ones"), "events list")
    event_commands = events.add_subparsers(dest="events_command", metavar="COMMAND")
    send = common(event_commands.add_parser("send", help="send an event: it starts runs and ends waits"), "events send")
    send.add_argument("name", help="a dotted name, like briefing.approved")
    send.add_argument("--data", default="{}", help="its data, a JSON object (default: {})")
    send.add_argument(
        "--id", default=None, help="an id: the same id again within EVENT_DEDUPE_SECONDS (24 h) is ignored"
    )
    common(event_commands.add_parser("list", help="recent events, newest first"), "events list").add_argument(
        "--limit", type=int, default=50, help="default: %(default)s"
    )


async def events_send(runtime: Any, args: argparse.Namespace) -> int:
    from runtime.app.events import deliver

    try:
        data = json.loads(args.data)
    except ValueError as exc:
        raise ValueError(f"--data is not JSON: {exc}") from None
    sent = await deliver(runtime, args.name, data, args.id)
    if args.json:
        print(json.dumps(sent, indent=2))
    elif sent["duplicate"]:
        print(f"event {sent['id']} was sent within 24 h already: nothing done")
    else:
        print(f"sent {args.name} ({sent['id']}): started {len(sent['started'])} run(s), woke {len(sent['woke'])}")
        for run_id in sent["started"]:
            print(f"  started {run_id}")
        for run_id in sent["woke"]:
            print(f"  woke    {run_id}")
    return 0


async def events_list(runtime: Any, args: argparse.Namespace) -> int:
    from runtime.durable.events import Events

    limit = getattr(args, "limit", 50)
    if limit < 1:
        raise ValueError(f"--limit must be 1 or more, not {limit}")
    recent = await Events(runtime.broker.redis, runtime.keys).recent(limit)
    if args.json:
        print(json.dumps(recent, indent=2))
        return 0
    if not recent:
        print("no events yet")
        return 0
    for event in recent:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event["at"]))
        runs = f"started {len(event['started'])}, woke {len(event['woke'])}"
        print(f"{at}Z  {event['name']:<28} {event['id']:<34} {runs}  {json.dumps(event['data'])[:60]}")
    return 0


EVENT_COMMANDS = {"events send": events_send, "events list": events_list}

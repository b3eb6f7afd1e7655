"""The one-shot tools of `runtime`: check and schema (the manifest), k8s (its cluster objects), db upgrade (the run
store's schema)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from runtime.errors import ConfigError


def _check(args: argparse.Namespace) -> int:
    from runtime.app.application import load_application

    app = load_application(args.manifest)
    print(f"{args.manifest}: app '{app.name}' is valid: {len(app.http)} HTTP function(s), {len(app.tasks)} task(s)")
    print(parity_table(app.manifest))
    return 0


def _db(args: argparse.Namespace) -> int:
    from runtime.redaction import redact
    from runtime.settings import get_settings
    from runtime.store.migrations import upgrade
    from runtime.store.schema import SCHEMA_HEAD, SCHEMA_REVISIONS
    from runtime.store.values import database_errors

    url = get_settings().database_url
    try:
        before, after = asyncio.run(upgrade(url))
    except database_errors() as exc:
        raise ConfigError(
            f"cannot upgrade the database at DATABASE_URL={redact(url)}: {str(exc).splitlines()[0]}"
        ) from None
    where = f"the run store at {redact(url)}"
    if before is None:
        print(f"{where}: created at {after}")
    elif after not in SCHEMA_REVISIONS:
        print(f"{where}: at {after}, newer than this runtime's {SCHEMA_HEAD}; left as it is")
    elif before == after:
        print(f"{where}: already at {after}")
    else:
        print(f"{where}: upgraded from {before} to {after}")
    return 0


def flow_words(flow: dict[str, Any]) -> str:
    """A task's flow control in a few words: `2 per customer.id, openai, throttle 10/1m, rate 1/1h`."""
    from runtime.app.durations import format_duration

    def per(spec: dict[str, Any]) -> str:
        return f" per {spec['key']}" if spec.get("key") else ""

    words = [f"{c['limit']} at once{per(c)}" for c in flow.get("concurrency") or []]
    words += list(flow.get("limits") or [])
    for name, spec in (("throttle", flow.get("throttle")), ("rate", flow.get("rate_limit"))):
        if spec:
            words.append(f"{name} {spec['limit']}/{format_duration(spec['period'])}{per(spec)}")
    if debounce := flow.get("debounce"):
        words.append(f"debounce {format_duration(debounce['period'])}{per(debounce)}")
    if batch := flow.get("batch"):
        words.append(f"batch {batch['size']}/{format_duration(batch['timeout'])}{per(batch)}")
    return ", ".join(words)


def parity_table(manifest: Any) -> str:
    """Each function's effective settings: what the emulator, the dashboard and the cluster run."""
    rows = [("function", "kind", "route / schedule", "queue", "retries", "timeout", "concurrency", "flow control")]
    for row in manifest.summary():
        if row["kind"] == "http":
            rows.append((row["name"], "http", f"{','.join(row['methods'])} {row['route']}", "", "", "", "", ""))
        else:
            rows.append(
                (
                    row["name"],
                    "task",
                    row["schedule"] or "",
                    row["queue"],
                    str(row["retries"]),
                    row["timeout"],
                    str(row["concurrency"]),
                    flow_words(row["flow"]),
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _schema(args: argparse.Namespace) -> int:
    from runtime.app.manifest import manifest_schema

    print(json.dumps(manifest_schema(), indent=2))
    return 0


def _k8s(args: argparse.Namespace) -> int:
    from runtime.deploy.k8s import k8s_command

    return k8s_command(
        args.manifest,
        args.image,
        args.out,
        keda=args.keda,
        ingress_host=args.ingress_host,
        namespace=args.namespace,
        external_redis=args.external_redis,
        prometheus_operator=args.prometheus_operator,
    )

"""Kubernetes rendering: the objects that run an app in a cluster, derived from its manifest.

`runtime k8s` prints them as YAML or writes a kustomize folder. The manifest names the objects, decides
which processes run, and sets the workers' concurrency and autoscaling targets; `Settings` supplies every
environment name and default, so a deployed process reads exactly what was rendered for it.
The renderer is put together here from its parts: `renderer` (the shared pieces), `in_cluster_redis`,
`workloads` and `monitoring`; `output` turns the objects into text.
"""

from __future__ import annotations

import sys
from pathlib import Path

from runtime.app.manifest import Manifest
from runtime.app.manifest_file import load_manifest
from runtime.deploy.in_cluster_redis import _RedisObjects
from runtime.deploy.output import dump_yaml, write_kustomize
from runtime.deploy.renderer import Object, secret_name
from runtime.deploy.workloads import _Workloads
from runtime.errors import ManifestError


class _Renderer(_Workloads, _RedisObjects):
    """Builds the objects for one app; each method returns the objects of one component."""

    def render(self) -> list[Object]:
        return [
            *self.config(),
            *self.redis(),
            *self.web(),
            *self.worker(),
            *self.scheduler(),
            *self.dashboard(),
            *self.alert_rules(),
        ]


def render_kubernetes(
    manifest: Manifest,
    manifest_text: str,
    image: str,
    *,
    namespace: str | None = None,
    ingress_host: str | None = None,
    keda: bool = False,
    external_redis: str | None = None,
    prometheus_operator: bool = False,
) -> list[Object]:
    """Every object the app needs, in apply order. Raises ValueError for a bad option.

    `manifest_text` goes into a ConfigMap as it is. Credentials are only referenced: the pods read
    `redis-password` (or `redis-url` with `external_redis`), `database-url` and `dashboard-token` from a
    Secret named `{app}-secrets` that the cluster's operator creates. The in-cluster Redis requires that
    password and a NetworkPolicy admits only the app's pods to it. `external_redis` (host:port, reachable from
    the KEDA operator too) replaces the in-cluster Redis StatefulSet; `keda` replaces the worker's fixed
    replica count by a KEDA ScaledObject, and with the in-cluster Redis needs `namespace`. Every pod carries
    `prometheus.io/*` scrape annotations; `prometheus_operator` adds a ServiceMonitor per Service (and
    headless Services for the worker and the scheduler) and a PrometheusRule alerting on dead letters.
    """
    return _Renderer(
        manifest, manifest_text, image, namespace, ingress_host, keda, external_redis, prometheus_operator
    ).render()


def parity_table(manifest: Manifest) -> str:
    """What each function gets in the cluster: the same effective settings the emulator uses."""
    header = ("function", "kind", "route / schedule", "retries", "timeout", "concurrency")
    rows: list[tuple[str, ...]] = [header]
    for row in manifest.summary():
        if row["kind"] == "http":
            trigger = f"{' '.join(row['methods'])} {row['route']}"
            rows.append((row["name"], "http", trigger, "-", "-", "-"))
        else:
            trigger = f"cron {row['schedule']} (UTC)" if row["schedule"] else "queue"
            rows.append((row["name"], "task", trigger, str(row["retries"]), row["timeout"], str(row["concurrency"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines) + "\n"


def secret_hint(manifest: Manifest, external_redis: str | None, namespace: str | None = None) -> str:
    """How to create the Secret the rendered pods read (its values are never rendered)."""
    keys = ["database-url", "dashboard-token"] + (["redis-url"] if external_redis is not None else ["redis-password"])
    examples = {
        "redis-url": "redis://:PASSWORD@HOST:6379/0",
        "redis-password": "$(openssl rand -hex 32)",
        "database-url": "postgresql://USER:PASSWORD@HOST:5432/DB",
        "dashboard-token": "$(openssl rand -hex 32)",
    }
    literals = " ".join(f"--from-literal={key}={examples[key]}" for key in keys)
    where = f" --namespace {namespace}" if namespace else ""
    return f"kubectl create secret generic {secret_name(manifest)}{where} {literals}\n"


def k8s_command(
    manifest_path: str,
    image: str,
    out: str | None,
    *,
    namespace: str | None = None,
    ingress_host: str | None = None,
    keda: bool = False,
    external_redis: str | None = None,
    prometheus_operator: bool = False,
) -> int:
    """`runtime k8s`: YAML on stdout, or a kustomize folder at `out`. Returns the exit code."""
    try:
        manifest = load_manifest(manifest_path)
        objects = render_kubernetes(
            manifest,
            Path(manifest_path).read_text(),
            image,
            namespace=namespace,
            ingress_host=ingress_host,
            keda=keda,
            external_redis=external_redis,
            prometheus_operator=prometheus_operator,
        )
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    notes = parity_table(manifest) + "\nThe pods read credentials from a Secret you create:\n"
    notes += "  " + secret_hint(manifest, external_redis, namespace)
    if out is None:
        sys.stdout.write(dump_yaml(objects))
        sys.stderr.write(notes)
        return 0
    try:
        paths = write_kustomize(objects, Path(out))
    except OSError as exc:
        print(f"error: cannot write the kustomize folder {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    sys.stdout.write(notes + "\nWrote:\n" + "".join(f"  {path}\n" for path in paths))
    sys.stdout.write(f"Apply with: kubectl apply -k {out}\n")
    return 0

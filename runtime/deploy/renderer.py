"""The base of the Kubernetes renderer: the options checked once, and the pieces every component's objects
share (names, labels, settings and their ConfigMaps, secret references, containers, pod templates, probes).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import urlparse

from runtime.app.manifest import Manifest
from runtime.settings import Settings

Object = dict[str, Any]

REDIS_PORT = 6379
METRICS_PATH = "/metrics"
APP_UID = 10001  # the image's non-root user (see Dockerfile)
PRE_STOP_SECONDS = 5  # lets endpoints and ingress controllers drop a stopping pod before it stops accepting
MANAGED_BY = "first-sip-runtime"
MANIFEST_DIR = "/config"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


def _default(field: str) -> Any:
    """A setting's default, from the one Settings class (never the rendering machine's environment)."""
    return Settings.model_fields[field].default


def _env_name(field: str) -> str:
    if field not in Settings.model_fields:  # a typo here would render a variable nothing reads
        raise KeyError(f"{field!r} is not a field of runtime.settings.Settings")
    return field.upper()


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def secret_name(manifest: Manifest) -> str:
    """The Secret every pod reads its credentials from; the user creates it, it is never rendered."""
    return f"{manifest.app}-secrets"


# Secret key -> the setting it feeds.
SECRET_KEYS = {
    "redis-url": "redis_url",
    "redis-password": "redis_password",
    "database-url": "database_url",
    "dashboard-token": "dashboard_token",
}


def _redis_address(external_redis: str | None, app: str, namespace: str | None) -> tuple[str, str, str]:
    """(host:port for KEDA, in-cluster REDIS_URL or '', database index) for the app's Redis."""
    if external_redis is None:
        # KEDA connects from its own namespace, so it needs the Service's namespaced name.
        qualified = f"{app}-redis.{namespace}.svc:{REDIS_PORT}" if namespace else ""
        return qualified, f"redis://{app}-redis:{REDIS_PORT}/0", "0"
    if "://" in external_redis:
        url = urlparse(external_redis)
        if url.scheme not in ("redis", "rediss") or not url.hostname:
            raise ValueError(f"--external-redis {external_redis!r}: use host:port or redis://host:port/db")
        if url.password or url.username:
            raise ValueError(
                "--external-redis must not carry credentials (they would land in plain YAML): give host:port "
                "and put the full REDIS_URL in the Secret's 'redis-url' key"
            )
        db = url.path.strip("/") or "0"
        if not db.isdigit():
            raise ValueError(f"--external-redis {external_redis!r}: the database after '/' is a number")
        return f"{url.hostname}:{url.port or REDIS_PORT}", "", db
    if not _HOST_PORT.match(external_redis):
        raise ValueError(f"--external-redis {external_redis!r}: use host:port, e.g. redis.example.internal:6379")
    return external_redis, "", "0"


class _RendererBase:
    """The options of one app's rendering, checked, and the pieces its components build their objects from."""

    def __init__(
        self,
        manifest: Manifest,
        manifest_text: str,
        image: str,
        namespace: str | None,
        ingress_host: str | None,
        keda: bool,
        external_redis: str | None,
        prometheus_operator: bool = False,
    ) -> None:
        if not image.strip():
            raise ValueError("--image is required: the image built from this repository's Dockerfile")
        if namespace is not None and not (_DNS1123_LABEL.match(namespace) and len(namespace) <= 63):
            raise ValueError(f"--namespace {namespace!r} is not a DNS label (lower case letters, digits, '-')")
        if ingress_host is not None and not (_DNS1123_SUBDOMAIN.match(ingress_host) and len(ingress_host) <= 253):
            raise ValueError(f"--ingress-host {ingress_host!r} is not a host name, e.g. app.example.com")
        self.manifest = manifest
        self.app = manifest.app
        self.manifest_text = manifest_text
        self.image = image
        self.namespace = namespace
        self.ingress_host = ingress_host
        self.keda = keda
        self.prometheus_operator = prometheus_operator
        self.external_redis = external_redis
        self.redis_address, self.redis_url, self.redis_db = _redis_address(external_redis, self.app, namespace)
        if keda and manifest.tasks() and not self.redis_address:
            raise ValueError(
                "--keda with the in-cluster Redis needs --namespace: KEDA reaches Redis from its own "
                f"namespace, as {self.app}-redis.NAMESPACE.svc:{REDIS_PORT}"
            )
        self.shutdown_timeout = float(_default("shutdown_timeout"))
        self.health_port = int(_default("worker_health_port"))

    # -- shared pieces ---------------------------------------------------------------------------------

    def name(self, component: str) -> str:
        return f"{self.app}-{component}"

    def selector(self, component: str) -> dict[str, str]:
        """The immutable subset of labels a Deployment/Service selects on."""
        return {
            "app.kubernetes.io/name": self.app,
            "app.kubernetes.io/instance": self.app,
            "app.kubernetes.io/component": component,
        }

    def labels(self, component: str) -> dict[str, str]:
        return self.selector(component) | {
            "app.kubernetes.io/part-of": self.app,
            "app.kubernetes.io/managed-by": MANAGED_BY,
        }

    def metadata(self, name: str, component: str) -> Object:
        meta: Object = {"name": name}
        if self.namespace:
            meta["namespace"] = self.namespace
        meta["labels"] = self.labels(component)
        return meta

    def settings_data(self) -> dict[str, str]:
        """Non-secret settings, as environment variables."""
        data = {
            _env_name("env"): "production",
            _env_name("log_level"): str(_default("log_level")),
            _env_name("log_format"): "json",
            _env_name("shutdown_timeout"): _seconds(self.shutdown_timeout),
            _env_name("worker_health_port"): str(self.health_port),
        }
        if self.redis_url:  # in-cluster Redis: its password comes apart, from the Secret (REDIS_PASSWORD)
            data[_env_name("redis_url")] = self.redis_url
        return data

    def config_checksum(self) -> str:
        """Hash of everything the ConfigMaps carry: a change rolls every pod that reads them."""
        payload = json.dumps(
            {"manifest": self.manifest_text, "settings": self.settings_data()}, sort_keys=True
        ).encode()
        return hashlib.sha256(payload).hexdigest()

    def redis_secrets(self) -> list[str]:
        """The Secret keys a process needs to reach Redis: the whole URL, or the in-cluster one's password."""
        return ["redis-password"] if self.redis_url else ["redis-url"]

    def secret_env(self, *keys: str, optional: bool = False) -> list[Object]:
        return [
            {
                "name": _env_name(SECRET_KEYS[key]),
                "valueFrom": {"secretKeyRef": {"name": secret_name(self.manifest), "key": key, "optional": optional}},
            }
            for key in keys
        ]

    def container(
        self,
        component: str,
        args: list[str],
        ports: list[Object],
        probes: Object,
        resources: Object,
        secrets: list[str],
        pre_stop: bool = False,
    ) -> Object:
        container: Object = {"name": component, "image": self.image, "args": args}
        if ports:
            container["ports"] = ports
        container["envFrom"] = [{"configMapRef": {"name": self.name("settings")}}]
        container["env"] = self.secret_env(*secrets)
        container |= probes
        if pre_stop:
            # An exec sleep rather than the `sleep` action: that one needs Kubernetes 1.30+.
            container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SECONDS)]}}}
        container["resources"] = resources
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        container["volumeMounts"] = [
            {"name": "manifest", "mountPath": MANIFEST_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ]
        return container

    def pod_template(self, component: str, container: Object, grace_seconds: int, metrics_port: int) -> Object:
        return {
            "metadata": {
                "labels": self.labels(component),
                "annotations": {
                    "checksum/config": self.config_checksum(),
                    # for Prometheus's annotation-based pod discovery (runtime/ops/metrics.py serves them)
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(metrics_port),
                    "prometheus.io/path": METRICS_PATH,
                },
            },
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,  # keeps service-link variables out of the settings' environment
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": APP_UID,
                    "runAsGroup": APP_UID,
                    "fsGroup": APP_UID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "terminationGracePeriodSeconds": grace_seconds,
                "initContainers": [self.migrate_container()],
                "containers": [container],
                "volumes": [
                    {"name": "manifest", "configMap": {"name": self.name("manifest")}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                ],
            },
        }

    def migrate_container(self) -> Object:
        """`runtime db upgrade` before the process starts: a new release's pods bring the run store's schema up
        to date themselves (an advisory lock makes concurrent upgrades take turns; an up-to-date schema is a
        no-op), and a process never meets a schema older than it needs."""
        return self.container(
            "migrate",
            ["db", "upgrade"],
            [],
            {},
            {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
            ["database-url"],
        )

    def deployment(
        self, component: str, template: Object, replicas: int | None, strategy: Object | None = None
    ) -> Object:
        spec: Object = {}
        if replicas is not None:  # an autoscaler owns the count otherwise; a fixed one would fight it
            spec["replicas"] = replicas
        spec["revisionHistoryLimit"] = 5
        spec["selector"] = {"matchLabels": self.selector(component)}
        if strategy is not None:
            spec["strategy"] = strategy
        spec["template"] = template
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self.metadata(self.name(component), component),
            "spec": spec,
        }

    def service(
        self, component: str, port: int, target: str, name: str | None = None, headless: bool = False
    ) -> Object:
        spec: Object = {"type": "ClusterIP"}
        if headless:  # no virtual IP: only for discovering the pods (Prometheus scrapes each one)
            spec["clusterIP"] = "None"
        spec["selector"] = self.selector(component)
        spec["ports"] = [{"name": target, "port": port, "targetPort": target, "protocol": "TCP"}]
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self.metadata(name or self.name(component), component),
            "spec": spec,
        }

    def pdb(self, component: str) -> Object:
        return {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": self.metadata(self.name(component), component),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": self.selector(component)}},
        }

    def manifest_args(self, command: str) -> list[str]:
        return [command, "--manifest", f"{MANIFEST_DIR}/manifest.yaml"]

    def health_probes(self, port: str, ready: str, live: str, startup_seconds: int = 60) -> Object:
        def probe(path: str, period: int, failures: int) -> Object:
            return {
                "httpGet": {"path": path, "port": port},
                "periodSeconds": period,
                "timeoutSeconds": 3,
                "failureThreshold": failures,
            }

        return {
            "startupProbe": probe(ready, 2, startup_seconds // 2),
            "readinessProbe": probe(ready, 5, 2),
            "livenessProbe": probe(live, 10, 3),
        }

    # -- components ------------------------------------------------------------------------------------

    def config(self) -> list[Object]:
        manifest_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": self.metadata(self.name("manifest"), "config"),
            "data": {"manifest.yaml": self.manifest_text},
        }
        settings_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": self.metadata(self.name("settings"), "config"),
            "data": self.settings_data(),
        }
        return [manifest_map, settings_map]

"""Kubernetes rendering: the objects that run an app in a cluster, derived from its manifest.

`runtime k8s` prints them as YAML or writes a kustomize folder. The manifest names the objects, decides
which processes run, and sets the workers' concurrency and autoscaling targets; `Settings` supplies every
environment name and default, so a deployed process reads exactly what was rendered for it.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from runtime.app.manifest import Manifest
from runtime.app.manifest_file import load_manifest
from runtime.errors import ManifestError
from runtime.queue.keys import Keys
from runtime.settings import Settings
from runtime.worker.worker import PREFETCH_FACTOR

Object = dict[str, Any]

WEB_PORT = 8000
DASHBOARD_PORT = 8081
REDIS_PORT = 6379
METRICS_PATH = "/metrics"
METRICS_INTERVAL = "30s"
APP_UID = 10001  # the image's non-root user (see Dockerfile)
REDIS_UID = 999  # the `redis` user of the official redis image
PRE_STOP_SECONDS = 5  # lets endpoints and ingress controllers drop a stopping pod before it stops accepting
GRACE_MARGIN_SECONDS = 10  # room past the process's own shutdown before the kubelet kills it
MANAGED_BY = "first-sip-runtime"
MANIFEST_DIR = "/config"
# Zero is safe: the scheduler, which always runs, moves due delayed tasks (`delay=`, retry backoffs)
# onto the stream, where the lag trigger sees them and wakes a worker.
KEDA_MIN_WORKERS = 0
KEDA_MAX_WORKERS = 10

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
# Who may reach the in-cluster Redis besides the app's own pods: KEDA's operator, to read the stream's lag.
KEDA_OPERATOR_LABELS = {"app.kubernetes.io/name": "keda-operator"}


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


class _Renderer:
    """Builds the objects for one app; each method returns the objects of one component."""

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

    def service_monitor(self, component: str, port: str, authorization: Object | None = None) -> Object:
        """The Prometheus Operator's scrape config for the pods behind the component's Service."""
        endpoint: Object = {"port": port, "path": METRICS_PATH, "interval": METRICS_INTERVAL}
        if authorization is not None:
            endpoint["authorization"] = authorization
        return {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": self.metadata(self.name(component), component),
            "spec": {"selector": {"matchLabels": self.selector(component)}, "endpoints": [endpoint]},
        }

    def monitoring(self, component: str, port: str) -> list[Object]:
        """With --prometheus-operator: a headless Service on the health port (for a process that has no
        Service of its own), and its ServiceMonitor."""
        if not self.prometheus_operator:
            return []
        return [self.service(component, self.health_port, port, headless=True), self.service_monitor(component, port)]

    def alert_rules(self) -> list[Object]:
        """With --prometheus-operator: alert when runs are dead-lettered (they wait to be replayed)."""
        if not (self.prometheus_operator and self.manifest.tasks()):
            return []
        jobs = f'job=~"{self.app}-(web|worker|scheduler|dashboard)"'  # the Services' names
        threshold = f"max(firstsip_dead_letter_alert_threshold{{{jobs}}}) or vector(0)"
        return [
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": self.metadata(self.name("alerts"), "alerts"),
                "spec": {
                    "groups": [
                        {
                            "name": f"{self.app}.rules",
                            "rules": [
                                {
                                    "alert": "FirstSipDeadLetters",
                                    "expr": f"max(firstsip_dead_letters{{{jobs}}}) > ({threshold})",
                                    "for": "5m",
                                    "labels": {"severity": "warning"},
                                    "annotations": {
                                        "summary": f"{self.app}: runs spent their retries and were dead-lettered",
                                        "description": "{{ $value }} dead-lettered runs wait: see `runtime runs "
                                        "--status failed`, then replay or delete them.",
                                    },
                                }
                            ],
                        }
                    ]
                },
            }
        ]

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

    def redis(self) -> list[Object]:
        if self.external_redis is not None:
            return []
        # the password reaches redis-cli through REDISCLI_AUTH, never its command line
        ping = 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ping | grep -q PONG'
        probe = {"exec": {"command": ["sh", "-c", ping]}, "periodSeconds": 10, "timeoutSeconds": 3}
        container: Object = {
            "name": "redis",
            "image": "redis:7",
            # noeviction: a full Redis refuses writes rather than silently dropping queued tasks.
            # maxmemory stays under the limit so Redis reports "full" before the kernel kills it.
            "args": [
                "redis-server",
                "--appendonly",
                "yes",
                "--maxmemory",
                "400mb",
                "--maxmemory-policy",
                "noeviction",
                "--dir",
                "/data",
                "--requirepass",
                "$(REDIS_PASSWORD)",  # expanded by the kubelet from the env below
            ],
            "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
            "env": self.secret_env("redis-password"),
            "readinessProbe": probe | {"failureThreshold": 2},
            "livenessProbe": probe | {"failureThreshold": 6, "initialDelaySeconds": 10},
            "resources": {
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"cpu": "1", "memory": "512Mi"},
            },
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
        }
        statefulset = {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": self.metadata(self.name("redis"), "redis"),
            "spec": {
                "serviceName": self.name("redis"),
                "replicas": 1,
                "selector": {"matchLabels": self.selector("redis")},
                "template": {
                    "metadata": {"labels": self.labels("redis")},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "enableServiceLinks": False,
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": REDIS_UID,
                            "runAsGroup": REDIS_UID,
                            "fsGroup": REDIS_UID,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "terminationGracePeriodSeconds": 30,  # time to finish an AOF rewrite/fsync
                        "containers": [container],
                        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data", "labels": self.labels("redis")},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "1Gi"}},
                        },
                    }
                ],
            },
        }
        return [self.service("redis", REDIS_PORT, "redis"), statefulset, self.redis_network_policy()]

    def redis_network_policy(self) -> Object:
        """Only the app's own pods (and KEDA's operator, with --keda) may connect to its Redis."""
        app_pods = {"app.kubernetes.io/name": self.app, "app.kubernetes.io/instance": self.app}
        sources: list[Object] = [{"podSelector": {"matchLabels": app_pods}}]
        if self.keda:
            sources.append({"namespaceSelector": {}, "podSelector": {"matchLabels": KEDA_OPERATOR_LABELS}})
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": self.metadata(self.name("redis"), "redis"),
            "spec": {
                "podSelector": {"matchLabels": self.selector("redis")},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": sources, "ports": [{"protocol": "TCP", "port": REDIS_PORT}]}],
            },
        }

    def web(self) -> list[Object]:
        if not self.manifest.routes():
            return []
        # Uvicorn drains for SHUTDOWN_TIMEOUT after the preStop sleep; the kubelet must wait for both.
        grace = int(self.shutdown_timeout) + PRE_STOP_SECONDS + GRACE_MARGIN_SECONDS
        container = self.container(
            "web",
            [*self.manifest_args("web"), "--host", "0.0.0.0", "--port", str(WEB_PORT)],
            [{"name": "http", "containerPort": WEB_PORT, "protocol": "TCP"}],
            self.health_probes("http", "/health", "/health/live"),
            {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
            [*self.redis_secrets(), "database-url"],
            pre_stop=True,
        )
        deployment = self.deployment(
            "web",
            self.pod_template("web", container, grace, WEB_PORT),
            replicas=None,
            strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        )
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": self.metadata(self.name("web"), "web"),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": self.name("web")},
                "minReplicas": 2,
                "maxReplicas": 10,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70},
                        },
                    }
                ],
            },
        }
        objects = [deployment, self.service("web", 80, "http"), hpa, self.pdb("web")]
        if self.prometheus_operator:
            objects.append(self.service_monitor("web", "http"))
        if self.ingress_host:
            objects.append(self.ingress())
        return objects

    def ingress(self) -> Object:
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": self.metadata(self.name("web"), "web"),
            "spec": {
                "rules": [
                    {
                        "host": self.ingress_host,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": self.name("web"), "port": {"name": "http"}}},
                                }
                            ]
                        },
                    }
                ]
            },
        }

    def worker_container(self, command: str) -> Object:
        args = self.manifest_args(command)
        if command == "worker":
            args += ["--concurrency", str(self.manifest.defaults.concurrency)]
        return self.container(
            command,
            args,
            [{"name": "health", "containerPort": self.health_port, "protocol": "TCP"}],
            self.health_probes("health", "/health", "/health/live"),
            {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
            [*self.redis_secrets(), "database-url"],
        )

    def worker(self) -> list[Object]:
        if not self.manifest.tasks():
            return []
        # The worker lets running tasks finish for SHUTDOWN_TIMEOUT after SIGTERM; no preStop: no traffic.
        grace = int(self.shutdown_timeout) + GRACE_MARGIN_SECONDS
        deployment = self.deployment(
            "worker",
            self.pod_template("worker", self.worker_container("worker"), grace, self.health_port),
            replicas=None if self.keda else 2,
        )
        objects = [deployment, self.pdb("worker")]
        if self.keda:
            objects.append(self.scaled_object())
        return objects + self.monitoring("worker", "health")

    def scaled_object(self) -> Object:
        keys = Keys(self.app)
        concurrency = self.manifest.defaults.concurrency  # one worker process runs this many at once
        held = concurrency * PREFETCH_FACTOR  # what one worker holds at most: running + read ahead
        base = {"address": self.redis_address, "databaseIndex": self.redis_db, "consumerGroup": keys.group}
        if self.redis_url:  # the in-cluster Redis: KEDA reads its password from the worker's environment
            base["passwordFromEnv"] = _env_name("redis_password")
        triggers = []
        for queue in self.manifest.queue_names():  # one stream per queue: each can wake the workers
            connection = base | {"stream": keys.queue(queue).stream}
            triggers += [
                # Entries not yet delivered (Redis 7+): the backlog; the one metric that wakes from zero.
                {
                    "type": "redis-streams",
                    "name": f"lag-{queue}",
                    "metadata": connection | {"lagCount": str(concurrency), "activationLagCount": "0"},
                },
                # Delivered, not acknowledged: a worker stays while tasks run or wait to be reclaimed.
                {
                    "type": "redis-streams",
                    "name": f"pending-{queue}",
                    "metadata": connection | {"pendingEntriesCount": str(held)},
                },
            ]
        return {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": self.metadata(self.name("worker"), "worker"),
            "spec": {
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": self.name("worker"),
                },
                "minReplicaCount": KEDA_MIN_WORKERS,
                "maxReplicaCount": KEDA_MAX_WORKERS,
                "pollingInterval": 10,
                "cooldownPeriod": 300,
                "triggers": triggers,
            },
        }

    def scheduler(self) -> list[Object]:
        if not self.manifest.tasks():
            return []
        grace = int(self.shutdown_timeout) + GRACE_MARGIN_SECONDS
        # One scheduler at a time: Recreate stops the old pod before the new one starts.
        return [
            self.deployment(
                "scheduler",
                self.pod_template("scheduler", self.worker_container("scheduler"), grace, self.health_port),
                replicas=1,
                strategy={"type": "Recreate"},
            ),
            *self.monitoring("scheduler", "health"),
        ]

    def dashboard(self) -> list[Object]:
        probes = self.health_probes("http", "/health", "/health")
        # The dashboard's /health reflects Redis; a Redis outage must not restart it, so liveness is TCP.
        probes["livenessProbe"] = {"tcpSocket": {"port": "http"}, "periodSeconds": 10, "failureThreshold": 3}
        container = self.container(
            "dashboard",
            [*self.manifest_args("dashboard"), "--host", "0.0.0.0", "--port", str(DASHBOARD_PORT)],
            [{"name": "http", "containerPort": DASHBOARD_PORT, "protocol": "TCP"}],
            probes,
            {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
            [*self.redis_secrets(), "database-url", "dashboard-token"],
        )
        grace = int(self.shutdown_timeout) + GRACE_MARGIN_SECONDS
        objects = [
            self.deployment("dashboard", self.pod_template("dashboard", container, grace, DASHBOARD_PORT), replicas=1),
            self.service("dashboard", DASHBOARD_PORT, "http"),
        ]
        if self.prometheus_operator:  # the dashboard's /metrics needs its token, like its API
            token = {"name": secret_name(self.manifest), "key": "dashboard-token"}
            objects.append(self.service_monitor("dashboard", "http", {"type": "Bearer", "credentials": token}))
        return objects

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


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so the manifest in its ConfigMap reads like the file."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump_one(obj: Object) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def dump_yaml(objects: list[Object]) -> str:
    """A multi-document YAML stream; the same objects always give the same text."""
    return "".join(f"---\n{_dump_one(obj)}" for obj in objects)


def file_name(obj: Object) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def write_kustomize(objects: list[Object], out_dir: Path) -> list[Path]:
    """One file per object plus `kustomization.yaml` listing them in apply order; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for obj in objects:
        path = out_dir / file_name(obj)
        path.write_text(_dump_one(obj))
        paths.append(path)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [path.name for path in paths],
    }
    index = out_dir / "kustomization.yaml"
    index.write_text(_dump_one(kustomization))
    return [*paths, index]


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
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"runtime k8s: {exc}", file=sys.stderr)
        return 1
    notes = parity_table(manifest) + "\nThe pods read credentials from a Secret you create:\n"
    notes += "  " + secret_hint(manifest, external_redis, namespace)
    if out is None:
        sys.stdout.write(dump_yaml(objects))
        sys.stderr.write(notes)
        return 0
    paths = write_kustomize(objects, Path(out))
    sys.stdout.write(notes + "\nWrote:\n" + "".join(f"  {path}\n" for path in paths))
    sys.stdout.write(f"Apply with: kubectl apply -k {out}\n")
    return 0

"""The app's processes: web (with its autoscaler and Ingress), worker (with its KEDA ScaledObject), scheduler
and dashboard, each a Deployment of the one image."""

from __future__ import annotations

from runtime.deploy.monitoring import _Monitoring
from runtime.deploy.renderer import PRE_STOP_SECONDS, Object, _env_name, secret_name
from runtime.queue.keys import Keys
from runtime.worker.worker import PREFETCH_FACTOR

WEB_PORT = 8000
DASHBOARD_PORT = 8081
GRACE_MARGIN_SECONDS = 10  # room past the process's own shutdown before the kubelet kills it
# Zero is safe: the scheduler, which always runs, moves due delayed tasks (`delay=`, retry backoffs)
# onto the stream, where the lag trigger sees them and wakes a worker.
KEDA_MIN_WORKERS = 0
KEDA_MAX_WORKERS = 10


class _Workloads(_Monitoring):
    """The objects of the processes the manifest asks for: web for routes, worker and scheduler for tasks."""

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

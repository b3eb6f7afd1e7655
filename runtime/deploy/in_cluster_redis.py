"""The in-cluster Redis (unless --external-redis): its Service, its StatefulSet, and the NetworkPolicy that
admits only the app's pods (and KEDA's operator) to it."""

from __future__ import annotations

from runtime.deploy.renderer import REDIS_PORT, Object, _RendererBase

REDIS_UID = 999  # the `redis` user of the official redis image
# Who may reach the in-cluster Redis besides the app's own pods: KEDA's operator, to read the stream's lag.
KEDA_OPERATOR_LABELS = {"app.kubernetes.io/name": "keda-operator"}


class _RedisObjects(_RendererBase):
    """The objects of the app's own Redis."""

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

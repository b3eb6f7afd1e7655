"""Monitoring with the Prometheus Operator: ServiceMonitors that scrape the pods, and the dead-letter alert."""

from __future__ import annotations

from runtime.deploy.renderer import METRICS_PATH, Object, _RendererBase

METRICS_INTERVAL = "30s"


class _Monitoring(_RendererBase):
    """The Prometheus Operator's objects (with --prometheus-operator; nothing without it)."""

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

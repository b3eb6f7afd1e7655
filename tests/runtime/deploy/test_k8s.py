"""The rendered Kubernetes objects: valid for real API schemas, and right where the schemas can't tell."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.version import Version

from runtime.app.manifest_file import load_manifest, parse_manifest
from runtime.deploy.k8s import k8s_command, parity_table, render_kubernetes, secret_hint
from runtime.deploy.output import dump_yaml, write_kustomize
from runtime.deploy.renderer import PRE_STOP_SECONDS
from runtime.queue.keys import Keys
from runtime.settings import Settings
from runtime.worker.worker import PREFETCH_FACTOR

FIXTURES = Path(__file__).parents[2] / "k8s"
MANIFEST = FIXTURES / "manifest.yaml"
IMAGE = "ghcr.io/acme/first-sip:1.0.0"
SHUTDOWN_TIMEOUT = Settings.model_fields["shutdown_timeout"].default
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
SECRET_SETTINGS = {"REDIS_URL", "DATABASE_URL", "DASHBOARD_TOKEN"}
# Every Kubernetes minor version the installed kubernetes-validate carries schemas for (1.25-1.37 in 1.37.0).
K8S_VERSIONS = [v for v in kubernetes_validate.utils.all_versions() if Version(v) >= Version("1.25")]

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "keda+ingress+namespace": {"keda": True, "ingress_host": "briefings.example.com", "namespace": "prod"},
    "external-redis+keda": {"keda": True, "external_redis": "redis.prod.internal:6380"},
    "prometheus-operator": {"prometheus_operator": True, "namespace": "prod"},
}
CRDS = ("keda.sh/", "monitoring.coreos.com/")  # checked against their own schemas or shapes below

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
QUANTITY = re.compile(r"^(?P<number>[0-9]+(\.[0-9]+)?)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
SUFFIX = {
    None: Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
    "P": Decimal(10**15), "E": Decimal(10**18), "Ki": Decimal(2**10), "Mi": Decimal(2**20),
    "Gi": Decimal(2**30), "Ti": Decimal(2**40), "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}  # fmt: skip


def render(text: str | None = None, **options: Any) -> list[dict[str, Any]]:
    """Render the fixture manifest, or the given manifest text, with `render_kubernetes` options."""
    text = MANIFEST.read_text() if text is None else text
    return render_kubernetes(parse_manifest(yaml.safe_load(text)), text, IMAGE, **options)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def containers(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every container of every workload, init containers included."""
    pods = [(w, w["spec"]["template"]["spec"]) for w in workloads(objects)]
    return [(w, c) for w, pod in pods for c in pod.get("initContainers", []) + pod["containers"]]


def quantity(value: str | int) -> Decimal:
    match = QUANTITY.match(str(value))
    assert match, f"{value!r} is not a Kubernetes quantity"
    return Decimal(match["number"]) * SUFFIX[match["suffix"]]


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(**VARIANTS[request.param])


# -- against the real schemas --------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_builtin_object_validates_strictly_against_kubernetes(version: str, variant: str) -> None:
    for obj in render(**VARIANTS[variant]):
        if obj["apiVersion"].startswith(CRDS):
            continue  # a CRD: checked against KEDA's schema, or its shape, below
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {path}: {exc.message} (k8s {version})")


def test_the_oldest_and_newest_supported_versions_are_covered() -> None:
    assert "1.25.0" in K8S_VERSIONS and "1.37.0" in K8S_VERSIONS


def test_the_repositorys_own_manifest_renders_valid_objects() -> None:
    repo_manifest = Path(__file__).parents[3] / "manifest.yaml"
    if not repo_manifest.exists():
        pytest.skip("no manifest.yaml at the repository root")
    text = repo_manifest.read_text()
    manifest = load_manifest(repo_manifest)
    for obj in render_kubernetes(manifest, text, IMAGE, keda=True, ingress_host="app.example.com", namespace="apps"):
        if not obj["apiVersion"].startswith("keda.sh/"):
            kubernetes_validate.validate(obj, K8S_VERSIONS[-1], strict=True)


def test_scaled_object_validates_against_keda_schema() -> None:
    schema = json.loads((FIXTURES / "keda-scaledobject.schema.json").read_text())
    for variant in ("keda+ingress+namespace", "external-redis+keda"):
        (scaled,) = by_kind(render(**VARIANTS[variant]), "ScaledObject")
        jsonschema.Draft202012Validator(schema).validate(scaled)


def test_keda_schema_rejects_a_redis_url_as_address() -> None:
    schema = json.loads((FIXTURES / "keda-scaledobject.schema.json").read_text())
    (scaled,) = by_kind(render(keda=True, namespace="prod"), "ScaledObject")
    scaled["spec"]["triggers"][0]["metadata"]["address"] = "redis://first-sip-redis:6379/0"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(scaled)


# -- what the schemas miss -----------------------------------------------------------------------------


def test_selectors_match_their_pod_template_labels(objects: list[dict[str, Any]]) -> None:
    for workload in workloads(objects):
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]
    templates = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(objects)]
    for obj in by_kind(objects, "Service") + by_kind(objects, "PodDisruptionBudget"):
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        matched = [labels for labels in templates if selector.items() <= labels.items()]
        assert len(matched) == 1, f"{obj['kind']}/{obj['metadata']['name']} selects {len(matched)} workloads"


def test_services_target_a_named_port_their_pods_declare(objects: list[dict[str, Any]]) -> None:
    for service in by_kind(objects, "Service"):
        (workload,) = [
            w
            for w in workloads(objects)
            if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        declared = {p["name"] for c in workload["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert isinstance(port["targetPort"], str), "target a named port, not a number"
            assert port["targetPort"] in declared, service["metadata"]["name"]


def test_probes_use_declared_ports(objects: list[dict[str, Any]]) -> None:
    for _, container in containers(objects):
        names = {p["name"] for p in container.get("ports", [])}
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if probe is None or "exec" in probe:
                continue
            action = probe.get("httpGet") or probe["tcpSocket"]
            assert action["port"] in names, f"{container['name']} {kind}"


def test_web_is_ready_on_health_and_alive_on_health_live() -> None:
    web = one(render(), "Deployment", "first-sip-web")["spec"]["template"]["spec"]["containers"][0]
    assert web["startupProbe"]["httpGet"]["path"] == "/health"
    assert web["readinessProbe"]["httpGet"]["path"] == "/health"
    # Liveness must not fail on a Redis outage, or a Redis blip would restart every web pod.
    assert web["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert web["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRE_STOP_SECONDS)]


@pytest.mark.parametrize("component", ["worker", "scheduler"])
def test_worker_and_scheduler_probe_their_health_port(component: str) -> None:
    container = one(render(), "Deployment", f"first-sip-{component}")["spec"]["template"]["spec"]["containers"][0]
    (port,) = container["ports"]
    assert port["containerPort"] == Settings.model_fields["worker_health_port"].default == 8001
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": port["name"]}


def test_autoscaled_deployments_have_no_replica_count() -> None:
    plain = render()
    assert "replicas" not in one(plain, "Deployment", "first-sip-web")["spec"]  # the HPA owns it
    assert one(plain, "Deployment", "first-sip-worker")["spec"]["replicas"] >= 1
    assert one(plain, "HorizontalPodAutoscaler", "first-sip-web")["spec"]["scaleTargetRef"]["name"] == ("first-sip-web")
    with_keda = render(keda=True, namespace="prod")
    assert "replicas" not in one(with_keda, "Deployment", "first-sip-worker")["spec"]  # KEDA owns it
    scaled = one(with_keda, "ScaledObject", "first-sip-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "first-sip-worker"
    assert not by_kind(plain, "ScaledObject")


def test_scheduler_runs_alone() -> None:
    spec = one(render(keda=True, namespace="prod"), "Deployment", "first-sip-scheduler")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}


def test_grace_periods_exceed_shutdown_timeouts(objects: list[dict[str, Any]]) -> None:
    for workload in workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        if workload["metadata"]["name"].endswith("-redis"):
            continue
        pre_stop = 0
        for container in pod["containers"]:
            command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
            if command:
                pre_stop = int(command[-1])
        assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_TIMEOUT + pre_stop, workload["metadata"]["name"]


def test_every_container_has_requests_within_limits(objects: list[dict[str, Any]]) -> None:
    for workload, container in containers(objects):
        resources = container["resources"]
        for resource in ("cpu", "memory"):
            request = quantity(resources["requests"][resource])
            limit = quantity(resources["limits"][resource])
            assert 0 < request <= limit, f"{workload['metadata']['name']} {resource}"
    for statefulset in by_kind(objects, "StatefulSet"):
        for claim in statefulset["spec"]["volumeClaimTemplates"]:
            assert quantity(claim["spec"]["resources"]["requests"]["storage"]) > 0
    for workload in workloads(objects):
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "emptyDir" in volume:
                quantity(volume["emptyDir"]["sizeLimit"])


def test_quantity_parser_rejects_nonsense() -> None:
    assert quantity("512Mi") == 512 * 2**20 and quantity("100m") == Decimal("0.1")
    with pytest.raises(AssertionError):
        quantity("512MB")


def test_names_are_dns1123(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        name = obj["metadata"]["name"]
        assert DNS1123_LABEL.match(name) and len(name) <= 63, name
        for value in obj["metadata"]["labels"].values():
            assert len(value) <= 63
    for _, container in containers(objects):
        assert DNS1123_LABEL.match(container["name"])
        for port in container.get("ports", []):
            assert IANA_SVC_NAME.match(port["name"]) and len(port["name"]) <= 15, port["name"]


def test_every_object_carries_the_recommended_labels(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "first-sip"
        assert labels["app.kubernetes.io/instance"] == "first-sip"
        assert labels["app.kubernetes.io/part-of"] == "first-sip"
        assert labels["app.kubernetes.io/managed-by"]
        assert labels["app.kubernetes.io/component"]


def test_pods_run_as_non_root_with_a_read_only_root(objects: list[dict[str, Any]]) -> None:
    for workload in workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] > 0 and "fsGroup" in security
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        tmp = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp


def test_app_image_user_matches_the_pod_user() -> None:
    dockerfile = (Path(__file__).parents[3] / "Dockerfile").read_text()
    user = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)[-1]
    web = one(render(), "Deployment", "first-sip-web")["spec"]["template"]["spec"]
    assert user.split(":")[0] == str(web["securityContext"]["runAsUser"])


def test_env_names_are_settings_fields(objects: list[dict[str, Any]]) -> None:
    for configmap in by_kind(objects, "ConfigMap"):
        if configmap["metadata"]["name"].endswith("-settings"):
            assert set(configmap["data"]) <= SETTINGS_ENV
    for _, container in containers(objects):
        for env in container.get("env", []):
            assert env["name"] in SETTINGS_ENV, env["name"]


def test_secrets_are_referenced_never_rendered(objects: list[dict[str, Any]]) -> None:
    assert not by_kind(objects, "Secret")
    for configmap in by_kind(objects, "ConfigMap"):
        for key, value in configmap["data"].items():
            assert key not in {"DATABASE_URL", "DASHBOARD_TOKEN"}
            assert "password" not in value.lower() and not re.search(r"://[^/@\s]*:[^/@\s]*@", value)
    for _, container in containers(objects):
        for env in container.get("env", []):
            assert "value" not in env, f"{env['name']} has a literal value"
            ref = env["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "first-sip-secrets"
            assert ref["key"] in {"redis-url", "redis-password", "database-url", "dashboard-token"}


def secret_keys(objects: list[dict[str, Any]], component: str) -> set[str]:
    container = one(objects, "Deployment", f"first-sip-{component}")["spec"]["template"]["spec"]["containers"][0]
    return {e["valueFrom"]["secretKeyRef"]["key"] for e in container.get("env", [])}


def test_in_cluster_redis_url_is_a_setting_and_external_one_a_secret() -> None:
    inside = render()
    settings = one(inside, "ConfigMap", "first-sip-settings")["data"]
    assert settings["REDIS_URL"] == "redis://first-sip-redis:6379/0"  # its password comes from the Secret
    assert secret_keys(inside, "worker") == {"redis-password", "database-url"}
    assert secret_keys(inside, "dashboard") == {"redis-password", "database-url", "dashboard-token"}

    outside = render(external_redis="redis.prod.internal:6380")
    assert "REDIS_URL" not in one(outside, "ConfigMap", "first-sip-settings")["data"]
    assert secret_keys(outside, "web") == {"redis-url", "database-url"}
    assert not by_kind(outside, "StatefulSet")
    assert not [o for o in outside if o["metadata"]["name"] == "first-sip-redis"]


def test_external_redis_with_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="credentials"):
        render(external_redis="redis://:hunter2@redis.prod.internal:6379/0")
    with pytest.raises(ValueError, match="host:port"):
        render(external_redis="redis.prod.internal")


def test_keda_scales_on_the_task_stream_of_the_redis_it_uses() -> None:
    keys = Keys("first-sip")
    concurrency = str(load_manifest(MANIFEST).defaults.concurrency)
    (scaled,) = by_kind(render(keda=True, namespace="prod"), "ScaledObject")
    lag, pending = scaled["spec"]["triggers"]
    for trigger in (lag, pending):
        assert trigger["type"] == "redis-streams"
        assert trigger["metadata"]["stream"] == keys.queue("default").stream == "{first-sip:default}:tasks"
        assert trigger["metadata"]["consumerGroup"] == keys.group == "workers"
        # host:port, not a URL; namespaced, since KEDA's operator resolves it from its own namespace.
        assert trigger["metadata"]["address"] == "first-sip-redis.prod.svc:6379"
    assert lag["metadata"]["lagCount"] == concurrency
    assert lag["metadata"]["activationLagCount"] == "0"  # one waiting task wakes a worker
    # A worker holds up to PREFETCH_FACTOR x concurrency entries (running + read ahead): one busy worker
    # is not a backlog.
    assert pending["metadata"]["pendingEntriesCount"] == str(int(concurrency) * PREFETCH_FACTOR)
    # Scale to zero only works because the always-on scheduler moves due delayed tasks onto the stream.
    assert scaled["spec"]["minReplicaCount"] == 0
    assert one(render(keda=True, namespace="prod"), "Deployment", "first-sip-scheduler")["spec"]["replicas"] == 1

    (external,) = by_kind(render(keda=True, external_redis="redis://cache.internal:6380/2"), "ScaledObject")
    assert external["spec"]["triggers"][0]["metadata"]["address"] == "cache.internal:6380"
    assert external["spec"]["triggers"][0]["metadata"]["databaseIndex"] == "2"


def test_keda_with_in_cluster_redis_needs_a_namespace() -> None:
    with pytest.raises(ValueError, match="--namespace"):
        render(keda=True)


def test_redis_keeps_every_task() -> None:
    objects = render()
    statefulset = one(objects, "StatefulSet", "first-sip-redis")
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert statefulset["spec"]["template"]["spec"]["containers"][0]["image"].startswith("redis:7")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in mounts
    assert statefulset["spec"]["serviceName"] == one(objects, "Service", "first-sip-redis")["metadata"]["name"]


def test_ingress_only_with_a_host() -> None:
    assert not by_kind(render(), "Ingress")
    (ingress,) = by_kind(render(ingress_host="briefings.example.com"), "Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "briefings.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "first-sip-web", "port": {"name": "http"}}


def test_namespace_is_set_on_every_object() -> None:
    assert {o["metadata"].get("namespace") for o in render(namespace="prod")} == {"prod"}
    assert {o["metadata"].get("namespace") for o in render()} == {None}


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="image"):
        render_kubernetes(load_manifest(MANIFEST), MANIFEST.read_text(), " ")
    with pytest.raises(ValueError, match="--namespace"):
        render(namespace="Prod_1")
    with pytest.raises(ValueError, match="--ingress-host"):
        render(ingress_host="https://briefings.example.com")


def test_processes_run_the_rendered_manifest() -> None:
    objects = render()
    manifest_map = one(objects, "ConfigMap", "first-sip-manifest")
    assert manifest_map["data"]["manifest.yaml"] == MANIFEST.read_text()
    for component in ("web", "worker", "scheduler", "dashboard"):
        pod = one(objects, "Deployment", f"first-sip-{component}")["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == IMAGE
        assert container["args"][0] == component
        if component == "worker":
            assert container["args"][-2:] == ["--concurrency", "5"]
        manifest_path = Path(container["args"][container["args"].index("--manifest") + 1])
        mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(manifest_path.parent))
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        assert volume["configMap"]["name"] == "first-sip-manifest" and manifest_path.name == "manifest.yaml"
        assert container["envFrom"] == [{"configMapRef": {"name": "first-sip-settings"}}]
    settings = one(objects, "ConfigMap", "first-sip-settings")["data"]
    assert settings["ENV"] == "production" and float(settings["SHUTDOWN_TIMEOUT"]) == SHUTDOWN_TIMEOUT


def test_every_app_pod_upgrades_the_run_store_before_it_starts(objects: list[dict[str, Any]]) -> None:
    for workload in workloads(objects):
        pod = workload["spec"]["template"]["spec"]
        if workload["metadata"]["name"].endswith("-redis"):
            assert "initContainers" not in pod
            continue
        (init,) = pod["initContainers"]
        assert init["args"] == ["db", "upgrade"] and init["image"] == IMAGE
        assert init["envFrom"] == pod["containers"][0]["envFrom"]
        assert {e["valueFrom"]["secretKeyRef"]["key"] for e in init["env"]} == {"database-url"}
        assert not {"ports", "startupProbe", "readinessProbe", "livenessProbe"} & set(init)


def checksums(objects: list[dict[str, Any]]) -> set[str]:
    return {d["spec"]["template"]["metadata"]["annotations"]["checksum/config"] for d in by_kind(objects, "Deployment")}


def test_a_changed_manifest_rolls_the_pods() -> None:
    text = MANIFEST.read_text()
    before = checksums(render(text))
    assert len(before) == 1  # every Deployment reads the same config
    assert checksums(render(text)) == before
    after = checksums(render(text.replace("task: {timeout: 30s}", "task: {timeout: 45s}")))
    assert len(after) == 1 and after != before


def test_output_is_deterministic() -> None:
    options = VARIANTS["keda+ingress+namespace"]
    first = dump_yaml(render(**options))
    assert first == dump_yaml(render(**options))
    assert list(yaml.safe_load_all(first)) == render(**options)
    # Another interpreter with another hash seed renders the same bytes.
    code = (
        "import sys; from runtime.deploy.k8s import k8s_command; "
        f"sys.exit(k8s_command({str(MANIFEST)!r}, {IMAGE!r}, None, keda=True, "
        "ingress_host='briefings.example.com', namespace='prod'))"
    )
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            cwd=Path(__file__).parents[3],
            check=True,
        )
        assert result.stdout == first


def test_manifest_shape_decides_which_processes_run() -> None:
    tasks_only = "app: crunch\nfunctions:\n  nightly:\n    handler: jobs:nightly\n    task: {schedule: '0 1 * * *'}\n"
    names = {o["metadata"]["name"] for o in render(tasks_only)}
    assert {"crunch-worker", "crunch-scheduler", "crunch-dashboard", "crunch-redis"} <= names
    assert "crunch-web" not in names

    http_only = "app: site\nfunctions:\n  home:\n    handler: site:home\n    http: {path: /}\n"
    names = {o["metadata"]["name"] for o in render(http_only, keda=True)}
    assert "site-web" in names and "site-worker" not in names and "site-scheduler" not in names


def test_parity_table_shows_each_functions_effective_settings() -> None:
    table = parity_table(load_manifest(MANIFEST))
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
    assert set(rows) == {
        "create_briefing",
        "get_briefing",
        "generate_briefing",
        "update_status",
        "daily_briefings",
    }
    assert rows["create_briefing"][1:4] == ["http", "POST", "/briefings"]
    assert rows["update_status"][-3:] == ["3", "30s", "5"]  # retries from defaults, its own timeout
    assert rows["generate_briefing"][-3:] == ["3", "5m", "5"]
    assert "cron 0 6 * * * (UTC)" in next(line for line in table.splitlines() if line.startswith("daily"))


# -- the folder and the command ------------------------------------------------------------------------


def test_k8s_command_writes_a_kustomize_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k8s"
    assert k8s_command(str(MANIFEST), IMAGE, str(out), keda=True, namespace="prod") == 0
    printed = capsys.readouterr().out
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    files = sorted(p.name for p in out.iterdir() if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    rendered = render(keda=True, namespace="prod")
    assert [yaml.safe_load((out / name).read_text()) for name in kustomization["resources"]] == rendered
    assert "generate_briefing" in printed and "kustomization.yaml" in printed
    assert "kubectl create secret generic first-sip-secrets" in printed


def test_k8s_command_prints_yaml_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert k8s_command(str(MANIFEST), IMAGE, None) == 0
    captured = capsys.readouterr()
    assert list(yaml.safe_load_all(captured.out)) == render()
    assert "update_status" in captured.err  # the parity table goes to stderr, keeping stdout pure YAML


def test_k8s_command_reports_manifest_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "manifest.yaml"
    bad.write_text("app: Bad_Name\nfunctions:\n  f:\n    handler: m:f\n    task: {timeout: soon}\n")
    assert k8s_command(str(bad), IMAGE, str(tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "timeout" in err and "app" in err
    assert not (tmp_path / "out").exists()


def test_k8s_command_reports_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert k8s_command(str(MANIFEST), IMAGE, None, external_redis="redis://:pw@host:6379") == 1
    assert "credentials" in capsys.readouterr().err


def test_write_kustomize_names_files_after_their_objects(tmp_path: Path) -> None:
    objects = render()
    paths = write_kustomize(objects, tmp_path)
    assert paths[-1].name == "kustomization.yaml"
    assert [p.name for p in paths[:-1]] == [f"{o['kind'].lower()}-{o['metadata']['name']}.yaml" for o in objects]
    assert len(set(paths)) == len(paths)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_the_folder(tmp_path: Path) -> None:
    objects = render(keda=True, ingress_host="briefings.example.com", namespace="prod")
    write_kustomize(objects, tmp_path)
    result = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    built = list(yaml.safe_load_all(result.stdout))
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(built, key=key) == sorted(objects, key=key)


# -- the in-cluster Redis: a password and a NetworkPolicy ----------------------------------------------


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {env["name"]: env for env in container.get("env", [])}


def test_in_cluster_redis_requires_the_password_from_the_secret() -> None:
    objects = render()
    redis = one(objects, "StatefulSet", "first-sip-redis")["spec"]["template"]["spec"]["containers"][0]
    password = env_of(redis)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert password == {"name": "first-sip-secrets", "key": "redis-password", "optional": False}
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"  # the kubelet expands it
    for probe in ("readinessProbe", "livenessProbe"):
        command = redis[probe]["exec"]["command"]
        script = command[-1]
        assert command[:2] == ["sh", "-c"] and "REDISCLI_AUTH=" in script and "-a" not in script.split()
        assert "PONG" in script  # a NOAUTH answer is not healthy
    # every app process gets the same password, which Settings joins to REDIS_URL
    for component in ("web", "worker", "scheduler", "dashboard"):
        container = one(objects, "Deployment", f"first-sip-{component}")["spec"]["template"]["spec"]["containers"][0]
        assert env_of(container)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "redis-password"
    assert Settings(redis_url="redis://first-sip-redis:6379/0", redis_password="s3cr/t").redis_url == (
        "redis://:s3cr%2Ft@first-sip-redis:6379/0"
    )
    assert "redis-password" in secret_hint(load_manifest(MANIFEST), None)
    assert "redis-password" not in secret_hint(load_manifest(MANIFEST), "redis.prod.internal:6380")


def test_only_the_apps_pods_reach_its_redis() -> None:
    objects = render()
    policy = one(objects, "NetworkPolicy", "first-sip-redis")
    redis = one(objects, "StatefulSet", "first-sip-redis")
    assert policy["spec"]["podSelector"]["matchLabels"] == redis["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    (source,) = rule["from"]
    for workload in workloads(objects):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert source["podSelector"]["matchLabels"].items() <= labels.items(), workload["metadata"]["name"]
    other_app = render(MANIFEST.read_text().replace("app: first-sip", "app: other-app"))
    for workload in workloads(other_app):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert not source["podSelector"]["matchLabels"].items() <= labels.items()
    # with an external Redis there is nothing of ours to protect
    assert not by_kind(render(external_redis="redis.prod.internal:6380"), "NetworkPolicy")


def test_keda_reads_the_in_cluster_redis_password_from_the_workers_environment() -> None:
    objects = render(keda=True, namespace="prod")
    (scaled,) = by_kind(objects, "ScaledObject")
    worker = one(objects, "Deployment", "first-sip-worker")["spec"]["template"]["spec"]["containers"][0]
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["metadata"]["passwordFromEnv"] in env_of(worker)
    # and KEDA's operator, in its own namespace, may reach Redis
    (rule,) = one(objects, "NetworkPolicy", "first-sip-redis")["spec"]["ingress"]
    assert {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "keda-operator"}}} in (
        rule["from"]
    )
    (external,) = by_kind(render(keda=True, external_redis="redis.prod.internal:6380"), "ScaledObject")
    assert "passwordFromEnv" not in external["spec"]["triggers"][0]["metadata"]  # its URL is in the Secret


# -- metrics -------------------------------------------------------------------------------------------


def test_every_pod_is_annotated_for_scraping_on_a_port_it_declares(objects: list[dict[str, Any]]) -> None:
    scraped = set()
    for workload in workloads(objects):
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        if component == "redis":
            assert "prometheus.io/scrape" not in annotations  # serves no /metrics
            continue
        scraped.add(component)
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        ports = [p["containerPort"] for c in workload["spec"]["template"]["spec"]["containers"] for p in c["ports"]]
        assert int(annotations["prometheus.io/port"]) in ports, component
    assert scraped == {"web", "worker", "scheduler", "dashboard"}


def test_no_monitoring_objects_without_the_flag() -> None:
    for variant in ("defaults", "keda+ingress+namespace"):
        objects = render(**VARIANTS[variant])
        assert not [o for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")]
        assert not [s for s in by_kind(objects, "Service") if s["spec"].get("clusterIP") == "None"]


def service_monitor_shape_errors(monitor: dict[str, Any]) -> list[str]:
    """What the Prometheus Operator's CRD (monitoring.coreos.com/v1 ServiceMonitor) requires of the fields
    we render: a label selector, and endpoints naming a port, a path and a duration."""
    errors = []
    spec = monitor.get("spec", {})
    if set(spec) - {"selector", "endpoints", "namespaceSelector", "jobLabel"}:
        errors.append(f"unknown spec fields {set(spec) - {'selector', 'endpoints'}}")
    labels = spec.get("selector", {}).get("matchLabels")
    if not (isinstance(labels, dict) and labels and all(isinstance(v, str) for v in labels.values())):
        errors.append("spec.selector.matchLabels must be a non-empty map of strings")
    endpoints = spec.get("endpoints")
    if not (isinstance(endpoints, list) and endpoints):
        return [*errors, "spec.endpoints must be a non-empty list"]
    for endpoint in endpoints:
        if set(endpoint) - {"port", "path", "interval", "authorization"}:
            errors.append(f"unknown endpoint fields {set(endpoint)}")
        if not (isinstance(endpoint.get("port"), str) and IANA_SVC_NAME.match(endpoint["port"])):
            errors.append("endpoint.port must be a port name")
        if not str(endpoint.get("path", "")).startswith("/"):
            errors.append("endpoint.path must be absolute")
        if not re.match(
            r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?)$",
            str(endpoint.get("interval", "-")),
        ):
            errors.append("endpoint.interval must be a Prometheus duration")
        auth = endpoint.get("authorization")
        if auth is not None and not (auth.get("type") == "Bearer" and set(auth["credentials"]) == {"name", "key"}):
            errors.append("endpoint.authorization must be a Bearer secret key reference")
    return errors


def test_prometheus_operator_monitors_every_service_that_serves_metrics() -> None:
    objects = render(**VARIANTS["prometheus-operator"])
    monitors = by_kind(objects, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {
        f"first-sip-{c}" for c in ("web", "worker", "scheduler", "dashboard")
    }
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert service_monitor_shape_errors(monitor) == []
        assert monitor["metadata"]["namespace"] == "prod"
        # it selects exactly one Service, whose named port it scrapes, and that port serves /metrics
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [s for s in by_kind(objects, "Service") if selector.items() <= s["metadata"]["labels"].items()]
        (endpoint,) = monitor["spec"]["endpoints"]
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        (workload,) = [
            w
            for w in workloads(objects)
            if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        declared = {
            p["name"]: p["containerPort"]
            for c in workload["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        assert declared[port["targetPort"]] == int(annotations["prometheus.io/port"])
    # workers and the scheduler get headless Services on their health port, only for this
    headless = {s["metadata"]["name"] for s in by_kind(objects, "Service") if s["spec"].get("clusterIP") == "None"}
    assert headless == {"first-sip-worker", "first-sip-scheduler"}
    # the dashboard's /metrics needs its token: Prometheus sends it from the app's Secret
    dashboard = one(objects, "ServiceMonitor", "first-sip-dashboard")["spec"]["endpoints"][0]
    assert dashboard["authorization"]["credentials"] == {"name": "first-sip-secrets", "key": "dashboard-token"}
    assert service_monitor_shape_errors({"spec": {"selector": {}, "endpoints": [{"port": 8000}]}})


def test_prometheus_operator_alerts_on_dead_letters() -> None:
    (rule,) = by_kind(render(**VARIANTS["prometheus-operator"]), "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    (alert,) = group["rules"]
    assert alert["alert"] == "FirstSipDeadLetters"
    assert "max(firstsip_dead_letters{" in alert["expr"] and "firstsip_dead_letter_alert_threshold" in alert["expr"]
    assert 'job=~"first-sip-(web|worker|scheduler|dashboard)"' in alert["expr"]
    assert re.match(r"^\d+[smh]$", alert["for"])


def test_k8s_command_takes_the_prometheus_operator_flag() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime.cli",
            "k8s",
            "--manifest",
            str(MANIFEST),
            "--image",
            IMAGE,
            "--prometheus-operator",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout)]
    assert kinds.count("ServiceMonitor") == 4 and kinds.count("PrometheusRule") == 1

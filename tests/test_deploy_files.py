"""Dockerfile, .dockerignore and docker-compose.yml: they start what the runtime provides, the way it expects.

Docker can't run here, so these read the files as Docker would and check them against the runtime's own
CLI and settings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.settings import Settings

ROOT = Path(__file__).parent.parent
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}
SHUTDOWN_TIMEOUT = Settings.model_fields["shutdown_timeout"].default
APP_SERVICES = ("web", "worker", "scheduler", "dashboard")


# -- the runtime CLI -----------------------------------------------------------------------------------


def runtime_subcommands() -> set[str]:
    """The subcommands `runtime --help` lists (the CLI is the source of truth, not a copy of it)."""
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "runtime"), "--help"], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        pytest.fail(f"`runtime --help` failed: {result.stderr}")
    # argparse lists subcommands indented by four spaces under the positional arguments.
    return set(re.findall(r"^ {4}([a-z][a-z0-9-]*)", result.stdout, re.MULTILINE))


@pytest.fixture(scope="module")
def subcommands() -> set[str]:
    found = runtime_subcommands()
    assert {"web", "worker", "scheduler", "dashboard"} <= found, found
    return found


# -- Dockerfile ----------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuations joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    stages: list[list[tuple[str, str]]] = [[]]
    for line in lines:
        instruction, _, arguments = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def args_of(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [arguments for name, arguments in stage if name == instruction]


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    stages = dockerfile_stages()
    preamble = dict(a.split("=", 1) for a in args_of(stages[0], "ARG") if "=" in a)
    froms = [args_of(stage, "FROM")[0] for stage in stages[1:]]
    assert len(froms) >= 2
    for image in froms:
        base = image.split()[0]
        base = preamble.get(base.strip("${}"), base)
        assert base == "python:3.11-slim", image
    build_name = froms[0].split()[-1]
    copies = args_of(final_stage(), "COPY")
    assert any(f"--from={build_name}" in c and "/opt/venv" in c for c in copies), "final stage copies the venv"


def test_final_stage_runs_as_a_non_root_user() -> None:
    users = args_of(final_stage(), "USER")
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric uid lets Kubernetes' runAsNonRoot verify it"


def test_final_stage_has_no_build_tools() -> None:
    text = " ".join(arguments for _, arguments in final_stage())
    for tool in ("gcc", "build-essential", "g++", "make ", "apt-get install", "-dev "):
        assert tool not in text, f"{tool.strip()} in the final stage"


def test_image_runs_the_runtime_command_with_web_by_default(subcommands: set[str]) -> None:
    stage = final_stage()
    assert json.loads(args_of(stage, "ENTRYPOINT")[-1]) == ["runtime"]
    cmd = json.loads(args_of(stage, "CMD")[-1])
    assert cmd[0] in subcommands and cmd[0] == "web"
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"  # reachable from outside the container
    assert set(" ".join(args_of(stage, "EXPOSE")).split()) >= {"8000", "8001", "8081"}
    assert args_of(stage, "WORKDIR")[-1] == "/app"


def test_image_carries_the_app() -> None:
    copied = " ".join(args_of(final_stage(), "COPY"))
    assert "manifest.yaml" in copied and "functions/" in copied


def test_every_copied_source_exists() -> None:
    for stage in dockerfile_stages():
        for arguments in args_of(stage, "COPY"):
            parts = [p for p in arguments.split() if not p.startswith("--")]
            if "--from" in arguments:
                continue
            for source in parts[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".emulator", ".git", ".env"} <= ignored
    copied = " ".join(a for stage in dockerfile_stages() for a in args_of(stage, "COPY") if "--from" not in a)
    for pattern in ignored - {""}:
        if not pattern.startswith("#"):
            assert pattern.rstrip("/") not in copied.split(), f"{pattern} is ignored but the Dockerfile copies it"


# -- docker-compose.yml --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))
    assert total > 0, duration
    return total


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"redis", "postgres", "migrate", *APP_SERVICES}


def test_compose_upgrades_the_run_store_before_any_process_starts(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert migrate["command"] == ["db", "upgrade"] and migrate["build"] == "."
    assert migrate["restart"] == "no"  # it runs once and exits
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert migrate["environment"]["DATABASE_URL"] == compose["services"]["worker"]["environment"]["DATABASE_URL"]


def test_redis_persists_tasks_on_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")  # lag-based scaling and XAUTOCLAIM need 7
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    volume, _, target = redis["volumes"][0].partition(":")
    assert target == "/data" and volume in compose["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_postgres_is_checked_with_pg_isready(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:16")
    volume, _, target = postgres["volumes"][0].partition(":")
    assert target == "/var/lib/postgresql/data" and volume in compose["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_run_a_runtime_subcommand(compose: dict[str, Any], subcommands: set[str], name: str) -> None:
    service = compose["services"][name]
    assert service["build"] == "."  # one image for every process
    assert service["command"][0] == name and name in subcommands


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_healthy_dependencies(compose: dict[str, Any], name: str) -> None:
    depends = compose["services"][name]["depends_on"]
    assert depends == {
        "redis": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_use_settings_the_runtime_reads(compose: dict[str, Any], name: str) -> None:
    env = compose["services"][name]["environment"]
    assert set(env) <= SETTINGS_ENV, set(env) - SETTINGS_ENV
    assert env["ENV"] == "production"
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    database = env["DATABASE_URL"]
    assert database.startswith("postgresql://") and "@postgres:5432/" in database
    pg = compose["services"]["postgres"]["environment"]
    assert database == (
        f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
    )
    Settings(redis_url=env["REDIS_URL"], database_url=database)  # both parse as the runtime parses them


@pytest.mark.parametrize("name", APP_SERVICES)
def test_stop_grace_period_exceeds_shutdown_timeout(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    shutdown = float(service["environment"].get("SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT))
    assert seconds(service["stop_grace_period"]) > shutdown


def test_dashboard_token_comes_from_the_environment_with_no_default(compose: dict[str, Any]) -> None:
    """The dashboard listens on every interface: compose must refuse to start it with a known token."""
    token = compose["services"]["dashboard"]["environment"]["DASHBOARD_TOKEN"]
    match = re.fullmatch(r"\$\{DASHBOARD_TOKEN:\?(?P<message>[^}]+)\}", token)
    assert match, f"DASHBOARD_TOKEN must be required, with no default: {token}"
    assert "DASHBOARD_TOKEN" in match["message"] and "16" in match["message"]
    assert "$" not in match["message"]  # compose would read it as another variable


@pytest.mark.parametrize(("name", "port"), [("web", 8000), ("dashboard", 8081)])
def test_servers_listen_on_their_published_ports(compose: dict[str, Any], name: str, port: int) -> None:
    service = compose["services"][name]
    command = service["command"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert int(command[command.index("--port") + 1]) == port
    assert f"{port}:{port}" in service["ports"]
    assert f"127.0.0.1:{port}/health" in " ".join(service["healthcheck"]["test"])


@pytest.mark.parametrize("name", ["worker", "scheduler"])
def test_background_processes_are_checked_on_their_health_port(compose: dict[str, Any], name: str) -> None:
    port = Settings.model_fields["worker_health_port"].default
    assert f"127.0.0.1:{port}/health" in " ".join(compose["services"][name]["healthcheck"]["test"])
    assert "ports" not in compose["services"][name]


def _compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.skipif(_compose_cli() is None, reason="no docker compose CLI (Debian: apt-get install docker-compose)")
def test_docker_compose_accepts_the_file():
    cli = _compose_cli()
    assert cli is not None
    compose = Path(__file__).resolve().parents[1] / "docker-compose.yml"
    env = {k: v for k, v in os.environ.items() if k != "DASHBOARD_TOKEN"}
    token = {"DASHBOARD_TOKEN": "a-random-string-of-32-characters"}
    result = subprocess.run(
        [*cli, "-f", str(compose), "config", "-q"], capture_output=True, text=True, timeout=60, env=env | token
    )
    assert result.returncode == 0, result.stderr

    # without a token, compose refuses to start, saying what to set
    result = subprocess.run(
        [*cli, "-f", str(compose), "config", "-q"], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode != 0
    assert "set DASHBOARD_TOKEN" in result.stderr, result.stderr

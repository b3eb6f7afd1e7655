"""The manifest: every error reported at once, naming the file, the function and the field."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from runtime.app.application import load_application
from runtime.app.durations import format_duration, parse_duration
from runtime.app.manifest_file import parse_manifest
from runtime.errors import ManifestError
from tests.conftest import command, write_app


@pytest.mark.parametrize(
    ("text", "seconds"), [(30, 30.0), ("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    "bad", ["5x", "", "-1s", 0, True, "m5", float("inf"), float("nan"), 1e-9, "25h", pytest.param(10**400, id="huge")]
)
def test_bad_durations_are_refused(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(yaml.safe_load(text), "m.yaml")
    return [str(p) for p in info.value.problems]


def test_every_problem_is_reported_at_once_with_file_function_and_field():
    found = problems("""
app: Bad_App
defaults: {timeout: 5x, concurency: 3}
functions:
  a: {handler: m:a, http: {path: x, methods: [FETCH]}}
  b: {handler: m:b, task: {schedule: "nope"}}
  c: {handler: m:c, task: {timeout: 30s}, http: {path: /c}}
  d: {handler: "not a handler", task: {}}
  e: {handler: m:e, task: {retries: -1, color: red}}
""")
    assert "m.yaml, field 'app': String should match pattern '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'" in found
    assert any(p.startswith("m.yaml, field 'defaults.timeout': '5x' is not a duration") for p in found)
    assert "m.yaml, field 'defaults.concurency': unknown key; check its spelling against `runtime schema`" in found
    assert "m.yaml: function 'a', field 'http.path': 'x' must start with '/'" in found
    assert any(p.startswith("m.yaml: function 'a', field 'http.methods': unknown HTTP method FETCH") for p in found)
    assert any(p.startswith("m.yaml: function 'b', field 'task.schedule': 'nope' is not a valid cron") for p in found)
    assert "m.yaml: function 'c': a function has exactly one of 'http:' or 'task:'" in found
    assert any(p.startswith("m.yaml: function 'd', field 'handler'") for p in found)
    assert any(p.startswith("m.yaml: function 'e', field 'task.retries'") for p in found)
    assert "m.yaml: function 'e', field 'task.color': unknown key; check its spelling against `runtime schema`" in found
    assert len(found) == 10


def test_duplicate_routes_are_an_error():
    found = problems("""
app: x
functions:
  a: {handler: m:a, http: {path: "/items/{id:int}", methods: [GET, POST]}}
  b: {handler: m:b, http: {path: "/items/{item}", methods: [get]}}
""")
    assert found == ["m.yaml: function 'b', field 'http.path': GET /items/{item} is also served by 'a'"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/a/{x}/{x}", "path parameter 'x' appears twice"),
        ("/a/{x", "'/a/{x' has an unmatched '{' or '}'"),
        ("/a/x}", "'/a/x}' has an unmatched '{' or '}'"),
        ("/a/{x-y}", "{x-y} is not a path parameter: write {name} or {name:int}"),
        ("/a/{x:foo}", "{x:foo}: unknown path convertor 'foo'; use one of str, path, int, float, uuid"),
        ("/docs", "/docs is reserved for the API docs page; choose another path"),
    ],
)
def test_paths_starlette_cannot_serve_are_refused(path, message):
    found = problems(f"app: x\nfunctions:\n  a: {{handler: m:a, http: {{path: '{path}'}}}}\n")
    assert found == [f"m.yaml: function 'a', field 'http.path': {message}"]


def test_paths_starlette_serves_are_accepted():
    manifest = parse_manifest(
        yaml.safe_load("""
app: x
functions:
  a: {handler: m:a, http: {path: "/a/{id:int}/{rest:path}"}}
  b: {handler: m:b, http: {path: "/b/{u:uuid}/{f:float}/{s:str}/{plain}"}}
  c: {handler: m:c, http: {path: "/health/deep", methods: [GET, get, POST]}}
""")
    )
    assert manifest.functions["c"].http is not None and manifest.functions["c"].http.methods == ["GET", "POST"]


@pytest.mark.parametrize("schedule", ["0 6 * * *", "@daily", "0 0 29 2 *", "0 6 31 2 mon", "*/5 * * * *"])
def test_crons_that_fire_are_accepted(schedule):
    parse_manifest({"app": "x", "functions": {"a": {"handler": "m:a", "task": {"schedule": schedule}}}})


def test_a_head_route_behind_a_get_route_is_a_duplicate():
    found = problems("""
app: x
functions:
  a: {handler: m:a, http: {path: /x}}
  b: {handler: m:b, http: {path: /x, methods: [HEAD]}}
""")
    assert found == ["m.yaml: function 'b', field 'http.path': HEAD /x is also served by 'a'"]


def test_effective_settings_fall_back_to_defaults():
    manifest = parse_manifest(
        yaml.safe_load("""
app: x
defaults: {retries: 5, timeout: 10s}
functions:
  a: {handler: m:a, task: {}}
  b: {handler: m:b, task: {retries: 0, timeout: 500ms}}
""")
    )
    assert (manifest.retries("a"), manifest.timeout("a")) == (5, 10.0)
    assert (manifest.retries("b"), manifest.timeout("b")) == (0, 0.5)
    assert manifest.summary()[1]["timeout"] == "500ms"


def broken_app(tmp_path: Path) -> tuple[Path, str]:
    good, bad, raw = (f"mod_{uuid.uuid4().hex[:8]}" for _ in range(3))
    manifest = write_app(
        tmp_path,
        f"""
app: broken
functions:
  page: {{handler: "{good}:page", task: {{}}}}
  job: {{handler: "{good}:job", http: {{path: /job}}}}
  gone: {{handler: "{bad}:thing", task: {{}}}}
  missing: {{handler: "{good}:nothing", task: {{}}}}
  plain: {{handler: "{raw}:plain", task: {{}}}}
""",
        {
            f"{good}.py": """
            from runtime import http, task

            @http
            async def page(request): return {}

            @task
            async def job() -> None: ...

            @task
            async def forgotten() -> None: ...
        """,
            f"{bad}.py": "import does_not_exist_anywhere\n",
            f"{raw}.py": "def plain(): ...\n",
        },
    )
    return manifest, good


def test_handlers_are_checked_against_the_manifest(tmp_path):
    manifest, good = broken_app(tmp_path)
    with pytest.raises(ManifestError) as info:
        load_application(manifest)
    found = [str(p) for p in info.value.problems]
    assert found[0] == (
        f"{manifest}: function 'page', field 'task': '{good}:page' is an @http function but is declared as "
        "'task:'; declare it with 'http:' or decorate it with @task"
    )
    assert "is an @task function but is declared as 'http:'" in found[1]
    assert (
        found[2] == f"{bad_module(manifest)}.py, line 1: ModuleNotFoundError: No module named 'does_not_exist_anywhere'"
    )
    assert f"'{good}' has no attribute 'nothing'" in found[3]
    assert "is not decorated; add @task to it" in found[4]
    assert f"'{good}:forgotten' is decorated with @task but the manifest does not declare it" in found[5]
    assert len(found) == 6


def bad_module(manifest: Path) -> str:
    return re.search(r"gone: \{handler: \"(\w+):thing", manifest.read_text()).group(1)


SIX_HANDLERS = "".join(f"  f{i}: {{handler: 'handlers:f{i}', task: {{}}}}\n" for i in range(6))


def test_a_syntax_error_is_one_problem_naming_the_file_and_the_line(tmp_path):
    """Not one problem per function of the module, and none of the import machinery's frames."""
    tasks = "from runtime import task\n\n" + "".join(f"@task\nasync def f{i}() -> None: ...\n" for i in range(6))
    write_app(tmp_path, "app: x\nfunctions:\n" + SIX_HANDLERS, {"handlers.py": tasks + "def broken(:\n"})
    result = subprocess.run([command("runtime"), "check"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 1
    assert result.stderr == ("error: handlers.py, line 15: SyntaxError: invalid syntax in `def broken(:`\n"), (
        result.stderr
    )


def test_an_error_raised_while_importing_names_the_line_that_raised_and_who_imported_it(tmp_path):
    handlers, helper = (f"mod_{uuid.uuid4().hex[:8]}" for _ in range(2))  # fresh names: this imports in-process
    tasks = f"import {helper}\nfrom runtime import task\n\n"
    tasks += "".join(f"@task\nasync def f{i}() -> None: ...\n" for i in range(6))
    manifest = "app: x\nfunctions:\n" + SIX_HANDLERS.replace("handlers:", f"{handlers}:")
    write_app(tmp_path, manifest, {f"{handlers}.py": tasks, f"{helper}.py": "x = 1\ny = x / 0\n"})
    with pytest.raises(ManifestError) as info:
        load_application(tmp_path / "manifest.yaml")
    assert [str(p) for p in info.value.problems] == [
        f"{helper}.py, line 2: ZeroDivisionError: division by zero (imported from {handlers}.py, line 1)"
    ]


def test_an_error_raised_in_a_library_names_the_apps_line_that_called_it(tmp_path):
    module = f"mod_{uuid.uuid4().hex[:8]}"
    source = "import json\nfrom runtime import task\n\nSETTINGS = json.loads('{not json')\n"
    write_app(tmp_path, f"app: x\nfunctions:\n  f: {{handler: '{module}:f', task: {{}}}}\n", {f"{module}.py": source})
    with pytest.raises(ManifestError) as info:
        load_application(tmp_path / "manifest.yaml")
    [problem] = [str(p) for p in info.value.problems]
    assert problem.startswith(f"{module}.py, line 4: json.decoder.JSONDecodeError: Expecting property name"), problem


def test_runtime_check_lists_every_error_and_exits_1(tmp_path):
    manifest, _ = broken_app(tmp_path)
    result = subprocess.run(
        [command("runtime"), "check", "--manifest", str(manifest)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: 6 problems in the app:")
    for name in ("page", "job", "missing", "plain", "forgotten"):
        assert f"function '{name}'" in result.stderr
    assert f"{bad_module(manifest)}.py, line 1: ModuleNotFoundError" in result.stderr  # the handler of 'gone'


def test_runtime_check_on_the_example_prints_the_effective_settings():
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run([command("runtime"), "check"], capture_output=True, text=True, cwd=root, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "app 'first-sip' is valid: 4 HTTP function(s), 4 task(s)" in result.stdout
    assert re.search(
        r"generate_briefing +task +default +3 +5m +5 +briefing_source\n", result.stdout
    )  # its flow control
    assert re.search(r"update_status +task +critical +3 +30s +5\n", result.stdout)
    assert "daily_briefings    task  0 6 * * *" in result.stdout


def test_a_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "manifest.yaml"
    path.write_text("app: x\nfunctions:\n  a: {handler: m:a\n")
    result = subprocess.run(
        [command("runtime"), "check", "--manifest", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "not valid YAML at line" in result.stderr


def test_the_json_schema_is_published():
    result = subprocess.run([command("runtime"), "schema"], capture_output=True, text=True, timeout=60)
    schema = json.loads(result.stdout)
    assert schema["title"] == "manifest.yaml" and "functions" in schema["properties"]
    assert schema["additionalProperties"] is False

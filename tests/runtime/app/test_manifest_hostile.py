"""Hostile manifests, each a real `runtime check`: exit 1, one line per problem, no traceback, bounded time
and memory. Each case here once gave a traceback, a hang, a silent exit or a wrong acceptance."""

from __future__ import annotations

import resource
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import command

MEMORY_LIMIT = 2 * 1024**3  # address space; the alias bomb once grew past 8 GB


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def check(path: Path) -> list[str]:
    """Run `runtime check` on `path`; assert it fails cleanly and return its problem lines."""
    result = subprocess.run(
        [command("runtime"), "check", "--manifest", str(path)],
        capture_output=True,
        text=True,
        cwd=path.parent,
        timeout=20,
        preexec_fn=_limit_memory,
    )
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    head, *lines = result.stderr.rstrip("\n").split("\n")
    if not lines:  # one problem is one line
        assert head.startswith("error: "), result.stderr
        head, lines = "error: 1 problem in the manifest:", ["  - " + head.removeprefix("error: ")]
    count = len(lines)
    # a module that does not import is a problem of the app (named by its file and line), not of the manifest
    where = "the app" if any(".py, line " in line for line in lines) else "the manifest"
    assert count == 1 or head == f"error: {count} problems in {where}:", result.stderr
    assert all(line.startswith("  - ") for line in lines), result.stderr
    return [line.removeprefix(f"  - {path}").removeprefix("  - ") for line in lines]


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "manifest.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


MODULE_TAIL = """
from runtime import task

@task
async def job() -> None: ...
"""


def test_schema_errors_and_a_handler_that_does_not_import_are_reported_together(tmp_path):
    module = f"mod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("raise SystemExit('no')\n")
    path = write(
        tmp_path,
        f"app: x\nfunctions:\n  a: {{handler: '{module}:job', task: {{retries: -1}}}}\n"
        "  b: {handler: nowhere_to_be_found:job, task: {}, colour: red}\n",
    )
    assert check(path) == [
        ": function 'a', field 'task.retries': Input should be greater than or equal to 0",
        ": function 'b', field 'colour': unknown key; check its spelling against `runtime schema`",
        f"{module}.py, line 1: importing '{module}' called sys.exit('no'); a module must not exit when imported",
        ": function 'b', field 'handler': cannot import 'nowhere_to_be_found': no module named "
        "'nowhere_to_be_found'; the module path is relative to the folder of the manifest",
    ]


def test_a_handler_module_calling_sys_exit_is_a_problem_not_a_silent_exit(tmp_path):
    module = f"mod_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("import sys\nsys.exit(3)\n" + MODULE_TAIL)
    path = write(tmp_path, f"app: x\nfunctions:\n  job: {{handler: '{module}:job', task: {{}}}}\n")
    assert check(path) == [
        f"{module}.py, line 2: importing '{module}' called sys.exit(3); a module must not exit when imported"
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("app: caf\xe9\n".encode("latin-1"), ": it is not UTF-8 text (byte 0xe9 at line 1); save it as UTF-8"),
        ("app: x\nfunctions: {}\n".encode("utf-16"), ": it is UTF-16 or UTF-32 text; save it as UTF-8"),
        ("app: x\n".encode("utf-16-le"), ": it contains NUL characters; save it as UTF-8 text"),
        (b"a: " + b"[" * 100_000, ": not valid YAML at line 1, column 35: nested more than 32 levels deep"),
        (b"- " * 5000 + b"x\n", ": not valid YAML at line 1, column 65: nested more than 32 levels deep"),
        (b"app: x\n" + b"#" * 2_000_000, ": it is larger than 1000 KB"),
        (b"app: 2020-13-45\n", ": not valid YAML: month must be in 1..12"),
        (b"a: &a [*a]\n", ": the alias at line 1 refers to a value that contains it; aliases must not loop"),
    ],
    ids=["latin-1", "utf-16", "utf-16-no-bom", "deep-flow", "deep-block", "huge", "bad-date", "alias-loop"],
)
def test_unreadable_files_are_one_clear_line(tmp_path, content, message):
    assert check(write(tmp_path, content)) == [message]


def test_a_yaml_alias_bomb_is_refused_in_bounded_time_and_memory(tmp_path):
    levels = ["a0: &a0 [GET, GET, GET, GET, GET, GET, GET, GET, GET]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = "\n".join(levels) + "\napp: x\nfunctions:\n  f: {handler: m:f, http: {path: /f, methods: *a9}}\n"
    assert check(write(tmp_path, bomb)) == [
        ": its aliases expand to more than 100000 values; write the values out instead"
    ]


def test_a_yaml_merge_bomb_is_refused_too(tmp_path):
    levels = ["m0: &m0 {k: v}"]
    levels += [f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 9)}]}}" for i in range(1, 10)]
    assert check(write(tmp_path, "\n".join(levels) + "\n")) == [
        ": its aliases expand to more than 100000 values; write the values out instead"
    ]


def test_accepted_but_wrong_values_are_each_an_error(tmp_path):
    path = write(
        tmp_path,
        """
app: x
app: y
defaults: {retries: "3", concurrency: true, timeout: .inf}
functions:
  convertor: {handler: m:a, http: {path: "/h1/{x:foo}"}}
  health: {handler: m:a, http: {path: /health}}
  live: {handler: m:a, http: {path: /health/live}}
  metrics: {handler: m:a, http: {path: /metrics, methods: [POST]}}
  openapi: {handler: m:a, http: {path: /openapi.json}}
  docs: {handler: m:a, http: {path: /docs}}
  feb31: {handler: m:a, task: {schedule: "0 6 31 2 *"}}
  seconds: {handler: m:a, task: {schedule: "0 0 6 * * *"}}
  years: {handler: m:a, task: {schedule: "0 0 6 * * * 2030"}}
  twice: {handler: m:a, task: {retries: 1, retries: 2}}
  never: {handler: m:a, task: {timeout: 1.0e+400}}
""",
    )
    found = [line for line in check(path) if "field 'handler'" not in line]  # module m is not there
    assert found[:3] == [
        ", field 'app': key given twice (lines 2 and 3); keep only one",
        ": function 'twice', field 'task.retries': key given twice on line 15; keep only one",
        ", field 'defaults.retries': expected a whole number, got the string '3'; write the number without quotes",
    ]
    assert set(found[3:]) == {
        ", field 'defaults.timeout': inf: a duration must be at most 24h",
        ", field 'defaults.concurrency': expected a whole number, got true (a boolean)",
        ": function 'convertor', field 'http.path': {x:foo}: unknown path convertor 'foo'; "
        "use one of str, path, int, float, uuid",
        ": function 'health', field 'http.path': /health is reserved for the readiness check; choose another path",
        ": function 'live', field 'http.path': /health/live is reserved for the liveness check; choose another path",
        ": function 'metrics', field 'http.path': /metrics is reserved for the Prometheus metrics; choose another path",
        ": function 'openapi', field 'http.path': /openapi.json is reserved for the OpenAPI description; "
        "choose another path",
        ": function 'docs', field 'http.path': /docs is reserved for the API docs page; choose another path",
        ": function 'feb31', field 'task.schedule': '0 6 31 2 *' never fires (no such date); "
        "check its day and month fields",
        ": function 'seconds', field 'task.schedule': '0 0 6 * * *' has 6 fields; a schedule has 5: "
        "minute hour day month weekday (e.g. '0 6 * * *', UTC; seconds are not supported)",
        ": function 'years', field 'task.schedule': '0 0 6 * * * 2030' has 7 fields; a schedule has 5: "
        "minute hour day month weekday (e.g. '0 6 * * *', UTC; seconds are not supported)",
        ": function 'never', field 'task.timeout': inf: a duration must be at most 24h",
    }

"""Issue 25's server choice, measured: `runtime web` (uvicorn running our protocol, runtime/web/protocol.py) against
the same app on granian (bench/apps/ours_granian.py) and bare Starlette on uvicorn and on granian, one worker process
each, the JSON hello route under wrk -t2 -c64, alternating; req/s and the server's CPU per request.

python -m bench.server_choice [--seconds 5] [--rounds 3] [--before DIR]

--before DIR adds `runtime web` run from another version's runtime package, for an A/B of a change in the same rounds:
`mkdir DIR && git archive COMMIT runtime | tar -x -C DIR`. (PYTHONPATH cannot do it: bench/procs.child_env puts this
checkout ahead of it.)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
from pathlib import Path

from bench import web
from bench.redis_server import redis_server
from bench.systems import OURS_MANIFEST, WEB_SYSTEMS, WebSystem

UVICORN = next(s for s in WEB_SYSTEMS if s.key == "ours")
GRANIAN = dataclasses.replace(
    UVICORN,
    key="ours-granian",
    label="our app on granian (embedded, not production)",
    argv=lambda port: [sys.executable, "-m", "bench.apps.ours_granian", *serving(port)],
)


def serving(port: int) -> list[str]:
    """The bench app's manifest, served on loopback at `port`."""
    return ["--manifest", str(OURS_MANIFEST), "--host", "127.0.0.1", "--port", str(port)]


def before(path: Path) -> WebSystem:
    """`runtime web` with the runtime package found in `path` first on its sys.path."""
    code = f"import sys; sys.path.insert(0, {str(path.resolve())!r}); from runtime.cli import main; main()"
    return dataclasses.replace(
        UVICORN,
        key="ours-before",
        label=f"runtime web from {path}",
        argv=lambda port: [sys.executable, "-c", code, "web", *serving(port)],
    )


def measure(seconds: float, rounds: int, earlier: Path | None = None) -> dict[str, list[float]]:
    web.THREADS, web.CONNECTIONS = 2, 64
    systems: list[WebSystem] = [UVICORN, GRANIAN, *(s for s in WEB_SYSTEMS if s.key != "ours")]
    if earlier is not None:
        systems.insert(1, before(earlier))
    rps: dict[str, list[float]] = {s.key: [] for s in systems}
    cpu: dict[str, list[float]] = {s.key: [] for s in systems}
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis:
        for n in range(rounds):
            for system in systems:
                result = web.http_run(system, redis, seconds, Path(tmp), f"{system.key}-{n}")
                rps[system.key].append(result["rps"])
                cpu[system.key].append(result["cpu_us"])
                print(
                    f"round {n + 1} {system.label}: {result['rps']:,.0f} req/s, {result['cpu_us']:.1f} us CPU/request, "
                    f"p99 {result['p99_ms']:.1f} ms, "
                    f"{result['errors']} errors",
                    flush=True,
                )
    return {**rps, **{f"{key} cpu": values for key, values in cpu.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="a directory holding another version's runtime package")
    args = parser.parse_args()
    figures = measure(args.seconds, args.rounds, args.before)
    ours, ours_cpu = statistics.median(figures[UVICORN.key]), statistics.median(figures[f"{UVICORN.key} cpu"])
    for key in figures:
        if key.endswith(" cpu") or key == UVICORN.key:
            continue
        rps, cpu = statistics.median(figures[key]), statistics.median(figures[f"{key} cpu"])
        print(
            f"median {key}: {rps:,.0f} req/s, {cpu:.1f} us CPU/request; "
            f"ours ({ours:,.0f} req/s, {ours_cpu:.1f} us) is {ours / rps:.2f}x its req/s, {ours_cpu / cpu:.2f}x its CPU"
        )


if __name__ == "__main__":
    main()

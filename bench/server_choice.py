"""Issue 25's server choice, measured: `runtime web` on uvicorn (production) against the same app on granian
(bench/apps/ours_granian.py), one worker process each, the JSON hello route under wrk -t2 -c64, alternating.

python -m bench.server_choice [--seconds 5] [--rounds 3]
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
    argv=lambda port: [
        sys.executable,
        "-m",
        "bench.apps.ours_granian",
        "--manifest",
        str(OURS_MANIFEST),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ],
)


def measure(seconds: float, rounds: int) -> dict[str, list[float]]:
    web.THREADS, web.CONNECTIONS = 2, 64
    systems: list[WebSystem] = [UVICORN, GRANIAN]
    rps: dict[str, list[float]] = {s.key: [] for s in systems}
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis:
        for n in range(rounds):
            for system in systems:
                result = web.http_run(system, redis, seconds, Path(tmp), f"{system.key}-{n}")
                rps[system.key].append(result["rps"])
                print(
                    f"round {n + 1} {system.label}: {result['rps']:,.0f} req/s, p99 {result['p99_ms']:.1f} ms, "
                    f"{result['errors']} errors",
                    flush=True,
                )
    return rps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rps = measure(args.seconds, args.rounds)
    uvicorn, granian = statistics.median(rps[UVICORN.key]), statistics.median(rps[GRANIAN.key])
    ratio = granian / uvicorn
    print(f"median: uvicorn {uvicorn:,.0f} req/s, granian {granian:,.0f} req/s, granian / uvicorn {ratio:.2f}x")


if __name__ == "__main__":
    main()

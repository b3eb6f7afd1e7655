"""HTTP benchmark: `wrk` (a second process, loopback) against each server's JSON hello route."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import procs
from bench.redis_server import RedisServer
from bench.systems import WebSystem

WRK = shutil.which("wrk") or "/usr/bin/wrk"
THREADS = 1
CONNECTIONS = 50
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return int(resp.status), bytes(resp.read())


def wait_http_ok(url: str, proc: subprocess.Popen[bytes], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log and log.exists() else ""
            raise RuntimeError(f"server exited {proc.returncode} before serving: {tail}")
        try:
            if get(url, timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{url} not 200 within {timeout:.0f}s")


def parse_wrk(out: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not rps or not p99 or not p50:
        raise RuntimeError(f"could not read wrk's output: {out[-800:]}")
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": float(p50.group(1)) * _UNITS[p50.group(2)],
        "p99_ms": float(p99.group(1)) * _UNITS[p99.group(2)],
        "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0),
        "requests": int(total.group(1)) if total else 0,
    }


def wrk(url: str, seconds: float) -> dict[str, Any]:
    cmd = [WRK, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    return parse_wrk(out)


def http_run(system: WebSystem, redis: RedisServer, seconds: float, tmpdir: Path, tag: str) -> dict[str, Any]:
    """Start the server, warm it up for a second, then one timed wrk run."""
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}/hello"
    log = tmpdir / f"web-{system.key}-{tag}.log"
    proc = procs.spawn(system.argv(port), env=system.env(redis.url, tmpdir), cwd=system.cwd, log=log)
    with procs.running(proc, sig=2), procs.PeakRss(proc.pid) as rss:
        wait_http_ok(url, proc, timeout=30, log=log)
        _status, body = get(url)
        wrk(url, 1)
        cpu = procs.cpu_seconds(proc.pid)
        result = wrk(url, seconds)
        # the server's CPU per request (user + system, all its threads and children): steadier than req/s when
        # other work shares the machine's cores
        result["cpu_us"] = (procs.cpu_seconds(proc.pid) - cpu) / max(result["requests"], 1) * 1e6
        result["body"] = body.decode(errors="replace")
        result["peak_rss_mb"] = rss.peak / 2**20
    return result

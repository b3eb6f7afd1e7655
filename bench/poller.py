"""Polls one URL as fast as it can until told to stop; prints a JSON line per change it sees.

    python -m bench.poller URL MAX_SECONDS

Lines: {"t": time, "body": ...} when the 200 body changes; {"t": ..., "error": ...} for a failed
request (connection error, timeout or non-200); a final {"requests": n, "failures": f} on SIGTERM
or after MAX_SECONDS. A fresh connection per request, so a restarted server is seen at once.
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
import time
from urllib.parse import urlsplit

POLL_GAP_S = 0.003  # between requests: fine resolution without starving the server of CPU


def main() -> None:
    url, max_seconds = sys.argv[1], float(sys.argv[2])
    parts = urlsplit(url)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    requests = failures = 0
    last_body: str | None = None
    deadline = time.monotonic() + max_seconds
    while not stop[0] and time.monotonic() < deadline:
        requests += 1
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        try:
            conn.request("GET", parts.path)
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {body[:200]}")
            if body != last_body:
                last_body = body
                print(json.dumps({"t": time.time(), "body": body}), flush=True)
            time.sleep(POLL_GAP_S)
        except Exception as exc:
            failures += 1
            print(json.dumps({"t": time.time(), "error": f"{type(exc).__name__}: {exc}"[:300]}), flush=True)
            time.sleep(POLL_GAP_S)
        finally:
            conn.close()
    print(json.dumps({"requests": requests, "failures": failures}), flush=True)


if __name__ == "__main__":
    main()

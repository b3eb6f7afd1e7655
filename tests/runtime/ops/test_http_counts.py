"""The HTTP series (runtime/ops/metrics.py's HttpCounts): requests are counted in plain numbers and moved into the
prometheus series as the registry is collected; a scrape shows exactly what observing each request would have."""

from __future__ import annotations

import uuid

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runtime.ops.metrics import HTTP_BUCKETS, PREFIX, metrics

DURATIONS = [0.0, 0.0004, 0.001, 0.0010001, 0.005, 0.2, 2.5, 31.0, 1e-9, 0.05]  # on bounds, between, beyond +Inf


def samples(text: bytes, route: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if s.labels.get("route") == route and not s.name.endswith("_created")
    }


def test_a_scrape_shows_every_request_as_prometheus_would_have_counted_it():
    route = f"/r/{uuid.uuid4().hex}"  # this process's registry is shared: a route of its own
    reference = CollectorRegistry()
    requests = Counter("http_requests", "", ["route", "method", "status"], namespace=PREFIX, registry=reference)
    duration = Histogram(
        "http_request_duration_seconds",
        "",
        ["route", "method"],
        namespace=PREFIX,
        registry=reference,
        buckets=HTTP_BUCKETS,
    )
    counts = metrics().http_counts
    for n, seconds in enumerate(DURATIONS):
        method, status = ("GET", 200) if n % 3 else ("BREW", 500)
        counts.add(route, method, status, seconds)
        label = "other" if method == "BREW" else method
        requests.labels(route, label, str(status)).inc()
        duration.labels(route, label).observe(seconds)
    expected = samples(generate_latest(reference), route)
    assert len(expected) > 2 * len(HTTP_BUCKETS)  # both label sets: buckets, counts, sums
    assert samples(generate_latest(metrics().registry), route) == expected  # the first scrape already has them
    counts.add(route, "GET", 200, 0.003)
    requests.labels(route, "GET", "200").inc()
    duration.labels(route, "GET").observe(0.003)
    assert samples(generate_latest(metrics().registry), route) == samples(generate_latest(reference), route)

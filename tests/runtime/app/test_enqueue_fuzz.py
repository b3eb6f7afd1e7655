"""Fuzz of the enqueue door: random arguments and delays either queue a run (record and message) or
raise an ArgumentsError naming the argument; never another error, never a half-written run."""

from __future__ import annotations

import random

from runtime.app.application import load_application
from runtime.app.connections import Runtime
from runtime.errors import ArgumentsError
from runtime.settings import Settings
from tests.runtime.app.test_enqueue import make_app


def random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(12 if depth < 3 else 8)
    return [
        lambda: rng.randint(-(2**70), 2**70),
        lambda: rng.choice([0.5, float("inf"), float("-inf"), float("nan"), 1e308, -0.0]),
        lambda: "".join(chr(rng.choice([65, 0, 0xD800, 0x1F600, 0xFFFF])) for _ in range(rng.randrange(5))),
        lambda: rng.randbytes(rng.randrange(4)),
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: "x" * rng.choice([0, 10, 200_000]),
        lambda: object(),
        lambda: [random_value(rng, depth + 1) for _ in range(rng.randrange(4))],
        lambda: {str(rng.randrange(9)): random_value(rng, depth + 1) for _ in range(rng.randrange(4))},
        lambda: {rng.randrange(9): random_value(rng, depth + 1)},
        lambda: {random_value(rng, depth + 1) for _ in range(0)},
    ][kind]()


async def test_random_enqueues_are_runs_or_named_errors(tmp_path, redis_url):  # type: ignore[no-untyped-def]
    rng = random.Random(20260101)
    settings = Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/r.db", max_arguments_size=100_000)
    async with Runtime.from_manifest(make_app(tmp_path), settings) as rt:
        accepted = []
        for _ in range(300):
            function = rng.choice(["generate", "anything"])
            names = ["briefing_id"] if function == "generate" else ["value", "number"]
            kwargs = {name: random_value(rng) for name in names if rng.random() < 0.9}
            if rng.random() < 0.1:
                kwargs["unexpected"] = 1
            delay = rng.choice([None, 0, 1.5, -1, "10", float("inf"), 1e12, 10**30, True])
            try:
                run_id = await rt.app.tasks[function].with_options(delay=delay).enqueue(**kwargs)
            except ArgumentsError as exc:
                assert any(f"{name}" in str(exc) for name in [*names, *kwargs, "delay"]), exc
                continue
            accepted.append((run_id, delay))
        runs = {run.id: run for run in await rt.store.list(limit=1000)}
        assert set(runs) == {run_id for run_id, _ in accepted}  # no half-written rejected run
        delayed = await rt.broker.redis.zcard(rt.keys.queue("default").delayed)
        queued = await rt.broker.redis.xlen(rt.keys.queue("default").stream)
        assert delayed == sum(1 for _, d in accepted if d) and queued + delayed == len(accepted)
        assert 5 <= len(accepted) < 295  # both doors exercised


def test_a_batch_validates_to_what_each_item_gives_or_fails_as_its_first_bad_item(tmp_path):  # type: ignore[no-untyped-def]
    """`validate_many` (a bulk enqueue's one validation and dump of the batch) gives, for random batches, the
    values item-by-item validation gives, or the ArgumentsError the first bad item raises alone."""
    rng = random.Random(20261207)
    tasks = load_application(make_app(tmp_path)).tasks
    outcomes = {"valid": 0, "invalid": 0}
    for _ in range(300):
        function = rng.choice(["generate", "anything"])
        names = ["briefing_id"] if function == "generate" else ["value", "number"]
        fn = tasks[function]
        batch = []
        for _ in range(rng.randrange(2, 6)):
            batch.append({name: random_value(rng) if rng.random() < 0.3 else rng.randint(0, 9) for name in names})
        expected: list[object] | str
        try:
            expected = [fn.validate(kwargs, for_json=True) for kwargs in batch]
        except ArgumentsError as exc:
            expected = str(exc)
        try:
            got: list[object] | str = fn.validate_many(batch)
        except ArgumentsError as exc:
            got = str(exc)
        assert got == expected, batch
        outcomes["invalid" if isinstance(expected, str) else "valid"] += 1
    assert min(outcomes.values()) >= 30, outcomes  # both outcomes exercised

"""The per-task path resolves what it can once (issue 25 point 1): a middleware's hooks are plain calls, each known
at start to be awaited or not, and a metric's series is looked up once, not on every task."""

from __future__ import annotations

from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from runtime.queue.messages import built, decode
from runtime.worker.attempts import overriding
from runtime.worker.middleware.metrics import MetricsMiddleware


class Mixed(TaskiqMiddleware):
    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        return message

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        return None


def test_hooks_are_resolved_once_with_whether_to_await_them() -> None:
    mixed = Mixed()
    assert overriding([mixed], "pre_execute") == [(mixed.pre_execute, False)]
    assert overriding([mixed], "post_execute") == [(mixed.post_execute, True)]
    assert overriding([mixed], "on_error") == []  # the base class's no-op is skipped


def test_a_metric_series_is_looked_up_once() -> None:
    middleware = MetricsMiddleware()
    finished = middleware.metrics.runs_finished
    calls: list[tuple[str, ...]] = []
    original = finished.labels

    def counting(*values: str) -> Any:
        calls.append(values)
        return original(*values)

    finished.labels = counting  # type: ignore[method-assign]
    try:
        message = TaskiqMessage(task_id="r1", task_name="hot_path_fn", labels={"queue": "q"}, args=[], kwargs={})
        result: TaskiqResult[None] = TaskiqResult(is_err=False, return_value=None, execution_time=0.001)
        before = finished.labels("hot_path_fn", "q", "succeeded")._value.get()
        calls.clear()
        for _ in range(3):
            middleware.post_execute(message, result)
    finally:
        del finished.labels
    assert calls == [("hot_path_fn", "q", "succeeded")]
    assert finished.labels("hot_path_fn", "q", "succeeded")._value.get() == before + 3


def test_a_message_and_a_result_are_built_as_model_construct_builds_them() -> None:
    """`built` skips model_construct's per-field lookups, so it must be given every field: a taskiq that adds one
    (or a private attribute) fails here rather than leaving the new field unset in every message."""
    message = decode(b'{"task_id": "r1", "task_name": "noop", "labels": {"attempt": 2}, "kwargs": {"n": 1}}')
    fields = {"task_id": "r1", "task_name": "noop", "labels": {"attempt": 2}, "labels_types": None}
    assert message == TaskiqMessage.model_construct(**fields, args=[], kwargs={"n": 1})
    assert message.model_dump() == TaskiqMessage(**fields, args=[], kwargs={"n": 1}).model_dump()
    outcome = {"is_err": False, "log": None, "return_value": 3, "execution_time": 0.5, "labels": {}, "error": None}
    result = built(TaskiqResult, dict(outcome))
    assert result == TaskiqResult.model_construct(**outcome) and result.model_fields_set == set(outcome)
    for model, names in ((TaskiqMessage, {*fields, "args", "kwargs"}), (TaskiqResult, set(outcome))):
        assert set(model.model_fields) == names and not model.__private_attributes__

"""The tests' own helper for side-effect logs, which many guarantees are counted from."""

from __future__ import annotations

from pathlib import Path

from tests.runtime.workers import marked_lines


def test_a_line_still_being_written_is_not_read(tmp_path: Path) -> None:
    # A fresh-clone CI failed a weighted-queues test on `{"fn": "work", ..., "t": 17965942`: a task's write of its
    # line was read half done.
    log = tmp_path / "events.jsonl"
    log.write_text('{"fn": "work", "n": 1}\n{"fn": "work", "n": 2, "t": 17965942')
    assert marked_lines(log) == [{"fn": "work", "n": 1}]
    with log.open("a") as f:
        f.write("}\n")
    assert [r["n"] for r in marked_lines(log, "work")] == [1, 2]
    assert marked_lines(tmp_path / "none.jsonl") == []

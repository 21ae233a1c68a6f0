"""The paper-table queue driver (pipelines.queue) without running DVC: its commands and its
reading of `dvc queue status`."""

from __future__ import annotations

from pathlib import Path

import pipelines.queue as queue

STATUS = """Task     Name                 Created    Status
a1b2c3   table3-wo-ml-soft    10:00 AM   Failed
d4e5f6   table3-full-soft     10:01 AM   Success
0a0b0c   table3-wo-ml-soft-x  09:00 AM   Failed
778899   table4-add           Yesterday  Failed
"""


def test_only_this_runs_failures_count():
    assert queue.failed_lines(STATUS, ["table3-wo-ml-soft", "table3-full-soft"]) == [
        "a1b2c3   table3-wo-ml-soft    10:00 AM   Failed"]
    assert queue.failed_lines(STATUS, ["table3-full-soft"]) == []  # table4's old failure is not this run's


def test_queue_table_commands(monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(queue, "run_dvc", lambda args, cwd: calls.append(list(args)))
    names = queue.queue_table("table4", [0, 1], ["train.epochs=1"], Path("."), force=True)
    assert names == [f"table4-{v}" for v in queue.TABLES["table4"]]
    for name, args in zip(names, calls):
        assert args[:6] == ["exp", "run", "--queue", "-n", name, "--force"]
        assert "train.seeds=[0, 1]" in args and "train.epochs=1" in args
    calls.clear()
    queue.queue_table("table4", [0], [], Path("."))
    assert all("--force" not in args for args in calls)

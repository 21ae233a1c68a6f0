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


def test_parallel_runs_share_the_cores_and_user_settings_win():
    from pipelines._dvc import thread_share

    assert thread_share(1, environ={}, cores=16) == {}
    assert thread_share(2, environ={}, cores=2) == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert thread_share(3, environ={}, cores=16) == {"OMP_NUM_THREADS": "5", "MKL_NUM_THREADS": "5"}
    assert thread_share(4, environ={}, cores=2) == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert thread_share(2, environ={"OMP_NUM_THREADS": "2"}, cores=2) == {"MKL_NUM_THREADS": "1"}


def test_queue_workers_start_with_their_share_of_the_cores(monkeypatch, tmp_path):
    calls: list[tuple[list[str], dict]] = []
    monkeypatch.setattr(queue, "queue_table", lambda *a, **k: ["table3-full-soft"])
    monkeypatch.setattr(queue, "run_dvc", lambda args, cwd, env=None: calls.append((list(args), env)))
    monkeypatch.setattr(queue, "thread_share", lambda jobs: {"OMP_NUM_THREADS": str(8 // jobs)})
    monkeypatch.chdir(tmp_path)
    assert queue.main(["table3", "--jobs", "4", "--no-wait"]) == 0
    assert calls == [(["queue", "start", "-j", "4"], {"OMP_NUM_THREADS": "2"})]


RUNNING = "Task  Name  Created  Status\na1  table3-x  10:00 AM  Running\nb2  table3-y  10:00 AM  Queued\n\nWorker status: 1 active, 0 idle\n"
STALLED = "Task  Name  Created  Status\nb2  table3-y  10:00 AM  Queued\nc3  table3-x  10:00 AM  Success\n\nWorker status: 0 active, 0 idle\n"
DONE = "Task  Name  Created  Status\nb2  table3-y  10:00 AM  Success\n\nWorker status: 0 active, 0 idle\n"


def test_a_queue_whose_workers_died_is_restarted_not_waited_on_forever(monkeypatch):
    assert queue.stalled(STALLED) and not queue.stalled(RUNNING) and not queue.stalled(DONE)
    statuses = iter([RUNNING, STALLED, STALLED, STALLED, RUNNING, DONE])
    starts: list[tuple[list[str], dict | None]] = []
    monkeypatch.setattr(queue, "capture", lambda args, cwd: next(statuses))
    monkeypatch.setattr(queue, "run_dvc", lambda args, cwd, env=None: starts.append((list(args), env)))
    assert queue.wait_for_queue(Path("."), jobs=2, env={"OMP_NUM_THREADS": "1"}, poll_s=0) is True
    assert starts == [(["queue", "start", "-j", "2"], {"OMP_NUM_THREADS": "1"})]  # once, after 3 stalled polls


def test_workers_that_keep_dying_end_the_wait(monkeypatch):
    monkeypatch.setattr(queue, "capture", lambda args, cwd: STALLED)
    starts: list[list[str]] = []
    monkeypatch.setattr(queue, "run_dvc", lambda args, cwd, env=None: starts.append(list(args)))
    assert queue.wait_for_queue(Path("."), jobs=1, poll_s=0, restarts=2) is False
    assert len(starts) == 2

"""The paper-table queue driver (pipelines.queue) without running DVC: its commands and its
reading of `dvc queue status`."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

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
    monkeypatch.setattr(queue, "start_workers", lambda cwd, jobs, env=None: calls.append((jobs, env)))
    monkeypatch.setattr(queue, "thread_share", lambda jobs: {"OMP_NUM_THREADS": str(8 // jobs)})
    monkeypatch.chdir(tmp_path)
    assert queue.main(["table3", "--jobs", "4", "--no-wait"]) == 0
    assert calls == [(4, {"OMP_NUM_THREADS": "2"})]


RUNNING = "Task  Name  Created  Status\na1  table3-x  10:00 AM  Running\nb2  table3-y  10:00 AM  Queued\n\nWorker status: 1 active, 0 idle\n"
STALLED = "Task  Name  Created  Status\nb2  table3-y  10:00 AM  Queued\nc3  table3-x  10:00 AM  Success\n\nWorker status: 0 active, 0 idle\n"
DONE = "Task  Name  Created  Status\nb2  table3-y  10:00 AM  Success\n\nWorker status: 0 active, 0 idle\n"


def test_a_queue_whose_workers_died_is_restarted_not_waited_on_forever(monkeypatch):
    assert queue.stalled(STALLED) and not queue.stalled(RUNNING) and not queue.stalled(DONE)
    statuses = iter([RUNNING, STALLED, STALLED, STALLED, RUNNING, DONE])
    starts: list[tuple[int, dict | None]] = []
    monkeypatch.setattr(queue, "capture", lambda args, cwd: next(statuses))
    monkeypatch.setattr(queue, "start_workers", lambda cwd, jobs, env=None: starts.append((jobs, env)))
    assert queue.wait_for_queue(Path("."), jobs=2, env={"OMP_NUM_THREADS": "1"}, poll_s=0) is True
    assert starts == [(2, {"OMP_NUM_THREADS": "1"})]  # once, after 3 stalled polls


def test_workers_that_keep_dying_end_the_wait(monkeypatch):
    monkeypatch.setattr(queue, "capture", lambda args, cwd: STALLED)
    starts: list[int] = []
    monkeypatch.setattr(queue, "start_workers", lambda cwd, jobs, env=None: starts.append(jobs))
    assert queue.wait_for_queue(Path("."), jobs=1, poll_s=0, restarts=2) is False
    assert len(starts) == 2


FAKE_DVC = """#!/bin/sh
# A stand-in for dvc: `queue start` leaves a worker holding its output and stays alive itself,
# as the real one was seen to; `queue status` reports the queue drained after the first poll.
case "$1 $2" in
  "exp run") exit 0 ;;
  "queue start")
    echo "Started '$4' new experiment task queue workers."
    sleep 300 &
    echo $! > worker.pid
    echo $$ > start.pid
    exec sleep 300 ;;
  "queue status")
    if [ -f polled ]; then printf 'Task  Name  Created  Status\\na1  table3-full-soft  10:00 AM  Success\\n\\nWorker status: 0 active, 0 idle\\n'
    else touch polled; printf 'Task  Name  Created  Status\\na1  table3-full-soft  10:00 AM  Running\\n\\nWorker status: 1 active, 0 idle\\n'; fi ;;
esac
"""


def test_the_table_command_ends_when_the_queue_has_drained_even_if_queue_start_lingers(monkeypatch, tmp_path):
    """`dvc queue start` that never exits, with a worker holding its output open: the command
    follows `dvc queue status`, gathers the results and ends, and leaves no `queue start` behind."""
    import os
    import signal
    import time

    fake = tmp_path / "dvc"
    fake.write_text(FAKE_DVC)
    fake.chmod(0o755)
    gathered: list[list[str]] = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(queue, "dvc_executable", lambda: str(fake))
    monkeypatch.setattr(queue, "queue_table", lambda *a, **k: ["table3-full-soft"])
    monkeypatch.setattr(queue, "run_command", lambda args, cwd: gathered.append(list(args)))
    monkeypatch.setattr(queue, "START_WAIT_S", 1.0)
    monkeypatch.setattr(queue.time, "sleep", lambda s: None)
    started = time.monotonic()
    try:
        assert queue.main(["table3", "--seeds", "0"]) == 0
        assert time.monotonic() - started < 20
        assert gathered and gathered[0][-2:] == ["stages.collect", "--all-commits"]
        log = (tmp_path / queue.START_LOG).read_text()
        assert "Started '1' new experiment task queue workers." in log
        import psutil

        start_pid = int((tmp_path / "start.pid").read_text())
        assert not psutil.pid_exists(start_pid), "the lingering `dvc queue start` was left running"
    finally:
        pid = (tmp_path / "worker.pid")
        if pid.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid.read_text()), signal.SIGTERM)


def test_a_failing_queue_start_is_one_error_with_its_output(monkeypatch, tmp_path):
    fake = tmp_path / "dvc"
    fake.write_text("#!/bin/sh\necho 'ERROR: unexpected error - broker is down' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(queue, "dvc_executable", lambda: str(fake))
    with pytest.raises(queue.DvcError) as err:
        queue.start_workers(tmp_path, 2)
    assert "broker is down" in str(err.value)

"""The paper's tables as DVC queued experiments, with DVC alone (no Prefect server).

``python -m pipelines.queue table3 --seeds 0 1 2 --jobs 2`` queues one ``dvc exp run
--queue -n <table>-<variant> -S ...`` per variant of the grid (:mod:`pipelines.grids`,
:mod:`pipelines.table1`), starts ``dvc queue start -j JOBS``, waits until the queue is
empty, then gathers every finished experiment into ``results/experiments.json``
(``python -m stages.collect``), which the report stage depends on: the next ``dvc repro``
re-renders only the report, with the Table 3 / Table 4 sections filled in.

Why the queue rather than a ``matrix`` stage group: each variant becomes a named DVC
experiment that ``dvc exp show``, ``dvc metrics diff``, ``dvc exp apply`` and
``python -m stages.compare`` work on, the pipeline keeps one definition, and a plain
``dvc repro`` does not retrain every variant. Queued runs execute in isolated copies of the
repository (git-tracked files only: commit or ``git add`` your changes first).
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

from pipelines._dvc import DvcError, capture, dvc_executable, run_command, run_dvc, subprocess_env, thread_share
from pipelines.grids import GRIDS as TABLES
_ACTIVE = re.compile(r"\b(Queued|Running)\b")
_WORKERS = re.compile(r"Worker status:\s*(\d+) active,\s*(\d+) idle")
log = logging.getLogger("pipelines.queue")


def queue_table(table: str, seeds: list[int], extra: list[str], cwd: Path, force: bool = False) -> list[str]:
    """Queue every variant of ``table``; return the experiment names. ``force`` replaces
    experiments of the same names (DVC refuses a name that exists otherwise)."""
    names = []
    for variant, overrides in TABLES[table].items():
        name = f"{table}-{variant}"
        args = ["exp", "run", "--queue", "-n", name, *(["--force"] if force else [])]
        for item in [*overrides, f"train.seeds=[{', '.join(map(str, seeds))}]", *extra]:
            args += ["-S", item]
        run_dvc(args, cwd)
        names.append(name)
    return names


def failed_lines(status: str, names: list[str]) -> list[str]:
    """The ``dvc queue status`` lines of ``names`` that failed (the queue keeps earlier
    runs' failures until ``dvc queue remove --failed``; they are not this run's)."""
    wanted = [re.compile(rf"(?<![\w-]){re.escape(n)}(?![\w-])") for n in names]
    return [line for line in status.splitlines()
            if re.search(r"\bFailed\b", line) and any(w.search(line) for w in wanted)]


def stalled(status: str) -> bool:
    """Experiments wait in ``dvc queue status`` but no worker is alive to run them."""
    workers = _WORKERS.search(status)
    return (workers is not None and workers.groups() == ("0", "0")
            and re.search(r"\bQueued\b", status) is not None and re.search(r"\bRunning\b", status) is None)


START_WAIT_S = 60.0  # how long `dvc queue start` may take to hand over to its workers
START_LOG = Path(".dvc") / "tmp" / "queue-start.log"


def start_workers(cwd: Path, jobs: int, env: dict[str, str] | None = None) -> subprocess.Popen | None:
    """``dvc queue start -j jobs`` with ``env`` (the runs' thread caps) added to the workers' environment.

    Its output goes to ``.dvc/tmp/queue-start.log``, not to a pipe: the workers it starts
    inherit its output, so reading a pipe to its end waits for the last worker, and the
    command itself can stay alive after starting them. It gets ``START_WAIT_S`` seconds to
    exit; a failure raises :class:`DvcError`; still running, its process is returned (the
    queue's progress is read from ``dvc queue status`` meanwhile, and :func:`stop` ends it).
    """
    log_path = Path(cwd) / START_LOG
    log_path.parent.mkdir(parents=True, exist_ok=True)
    args = [dvc_executable(), "queue", "start", "-j", str(jobs)]
    log.info("$ dvc queue start -j %d  (output: %s)", jobs, START_LOG)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(args, cwd=cwd, env=subprocess_env(env), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        code = proc.wait(timeout=START_WAIT_S)
    except subprocess.TimeoutExpired:
        log.info("`dvc queue start` still runs after %.0f s; following the queue through `dvc queue status`",
                 START_WAIT_S)
        return proc
    if code != 0:
        lines = log_path.read_text(errors="replace").splitlines()[-20:]
        raise DvcError(args, code, lines, Path(cwd))
    return None


def stop(proc: subprocess.Popen | None) -> None:
    """End a ``dvc queue start`` still running once the queue has drained (its workers are done)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_queue(cwd: Path, jobs: int = 1, env: dict[str, str] | None = None, poll_s: float = 10.0,
                   restarts: int = 3) -> bool:
    """Block until ``dvc queue status`` shows nothing queued or running; True then.

    DVC's file-based broker can kill a worker mid-queue (an empty message file read as JSON,
    seen here), leaving experiments queued with no worker. After three polls in a row that
    show no worker (workers just started may not show yet), workers are started again, up to
    ``restarts`` times; False when they keep dying."""
    starts: list[subprocess.Popen | None] = []
    try:
        return _poll(cwd, jobs, env, poll_s, restarts, starts)
    finally:
        for proc in starts:
            stop(proc)


def _poll(cwd: Path, jobs: int, env: dict[str, str] | None, poll_s: float, restarts: int,
          starts: list[subprocess.Popen | None]) -> bool:
    idle_polls = 0
    while True:
        status = capture([dvc_executable(), "queue", "status"], cwd)
        if not _ACTIVE.search(status):
            return True
        idle_polls = idle_polls + 1 if stalled(status) else 0
        if idle_polls == 3:
            if restarts == 0:
                return False
            restarts -= 1
            idle_polls = 0
            log.warning("experiments are queued but no queue worker is alive; starting %d again", jobs)
            starts.append(start_workers(cwd, jobs, env))
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.queue", description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=sorted(TABLES), help="which paper table to run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds per variant (paper: 5)")
    parser.add_argument("--jobs", "-j", type=int, default=1, help="experiments run at once (dvc queue start -j)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for every variant, e.g. --set train.epochs=3")
    parser.add_argument("--no-wait", action="store_true", help="queue and start, do not wait or collect")
    parser.add_argument("--force", action="store_true", help="replace this table's experiments from an earlier run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cwd = Path.cwd()
    try:
        names = queue_table(args.table, args.seeds, args.extra, cwd, args.force)
        print(f"queued {len(names)} experiments: {', '.join(names)}")
        threads = thread_share(args.jobs)  # the workers' runs share the cores
        if threads:
            print("each experiment's threads: " + ", ".join(f"{k}={v}" for k, v in threads.items()))
        starter = start_workers(cwd, args.jobs, threads)
        if args.no_wait:
            return 0
        drained = wait_for_queue(cwd, args.jobs, threads)
        stop(starter)
        if not drained:
            print("error: queue: the queue workers keep dying with experiments still queued; see "
                  ".dvc/tmp/exps/celery/*.out, then `dvc queue start` or run this again", file=sys.stderr)
            return 2
        failed = failed_lines(capture([dvc_executable(), "queue", "status"], cwd), names)
        if failed:
            print("some experiments failed (`dvc queue logs <name>` shows why):\n" + "\n".join(failed), file=sys.stderr)
        # Every commit's experiments: a commit made while the queue ran moves HEAD away from
        # the baseline these experiments were queued on, and `dvc exp show` lists HEAD's only.
        run_command([sys.executable, "-m", "stages.collect", "--all-commits"], cwd)
        print("results/experiments.json updated; `dvc repro` now renders the report with this table")
        return 1 if failed else 0
    except DvcError as err:
        print(f"error: queue: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The M3SA pipeline as a Prefect flow: one task per DVC stage, in graph order.

Steps (dvc.yaml): ``sample -> extract -> train -> evaluate -> report``. Each task runs
``dvc repro --single-item <stage>`` and streams the stage's output into the run log; DVC
skips a stage whose deps, params and outputs are unchanged and records what ran in dvc.lock.
A failure is retried with exponential backoff unless the stage reported a user error (exit
code 2: bad params or input, rerunning cannot help); a stage that fails for good fails the
flow with a message naming it.

Run locally, no server needed: ``python -m pipelines.pipeline [--stage train] [--force]``.
"""

from __future__ import annotations

from pipelines.settings import apply_defaults

apply_defaults()  # before Prefect reads its settings

import argparse  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import Task, flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.client.schemas.objects import TaskRun  # noqa: E402
from prefect.states import State  # noqa: E402
from prefect.tasks import exponential_backoff  # noqa: E402

from pipelines._dvc import DvcError, downstream, pipeline_graph, run_dvc, status  # noqa: E402

#: Defaults of the retry policy: attempts after the first, and the first delay (s), doubled
#: at each further attempt.
DEFAULT_RETRIES = 2
DEFAULT_RETRY_DELAY = 10.0


class StageFailed(RuntimeError):
    """A DVC stage failed; the message names it and ends with its last output lines."""

    def __init__(self, stage: str, error: DvcError) -> None:
        self.stage = stage
        self.error = error
        code = error.stage_exit_code
        how = f"its command exited with {code}" if code is not None else f"dvc exited with {error.returncode}"
        tail = "\n".join(error.lines[-15:])
        super().__init__(f"stage '{stage}' failed ({how}):\n{tail}")

    @property
    def transient(self) -> bool:
        return self.error.transient


def retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect ``retry_condition_fn``: retry unless the failure is known to be deterministic."""
    exc = state.data
    if isinstance(exc, StageFailed):
        return exc.transient
    if isinstance(exc, DvcError):
        return exc.transient
    return True


def retry_options(retries: int, retry_delay_seconds: float) -> dict[str, Any]:
    """``Task.with_options`` arguments for ``retries`` attempts with exponential backoff."""
    delays = exponential_backoff(backoff_factor=retry_delay_seconds)(retries) if retries > 0 else 0
    return {"retries": retries, "retry_delay_seconds": delays}


@dataclass(frozen=True)
class StageRun:
    """What one stage task did: ``ran``, ``skipped`` (up to date) or ``restored`` (run cache)."""

    stage: str
    outcome: str
    seconds: float


@task(task_run_name="dvc-repro-{stage}", cache_policy=NO_CACHE, persist_result=False,
      retries=DEFAULT_RETRIES, retry_delay_seconds=exponential_backoff(DEFAULT_RETRY_DELAY)(DEFAULT_RETRIES),
      retry_condition_fn=retry_transient)
def repro_stage(stage: str, project_dir: str, force: bool = False, up_to_date: bool = False) -> StageRun:
    """``dvc repro --single-item <stage>`` in ``project_dir``, output streamed to the run log.

    ``up_to_date``: ``dvc status`` already found the stage and everything upstream
    unchanged, so DVC would skip it: no dvc call.
    """
    logger = get_run_logger()
    if up_to_date and not force:
        logger.info("stage '%s' is up to date (dvc status), skipping", stage)
        return StageRun(stage, "skipped", 0.0)
    args = ["repro", "--single-item", stage, *(["--force"] if force else [])]
    try:
        result = run_dvc(args, project_dir, logger)
    except DvcError as err:
        raise StageFailed(stage, err) from None
    if any("didn't change, skipping" in line for line in result.lines):
        outcome = "skipped"
    elif any("is cached - skipping run" in line for line in result.lines):
        outcome = "restored"
    else:
        outcome = "ran"
    return StageRun(stage, outcome, round(result.seconds, 3))


def select_stages(order: list[str], wanted: list[str] | None) -> list[str]:
    """``wanted`` (or all stages) in graph order; an unknown name raises ``ValueError``."""
    if not wanted:
        return order
    unknown = [s for s in wanted if s not in order]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml defines {order}")
    return [s for s in order if s in wanted]


@flow(name="m3sa-pipeline")
def pipeline(project_dir: str = ".", stages: list[str] | None = None, force: bool = False,
             retries: int = DEFAULT_RETRIES, retry_delay_seconds: float = DEFAULT_RETRY_DELAY) -> list[StageRun]:
    """Run the DVC stages of ``project_dir`` one task each, in graph order.

    Steps: read the graph (``dvc dag``) and what changed (``dvc status``), then
    ``dvc repro --single-item`` per stage (sample, extract, train, evaluate, report in this
    project); a stage that is unchanged with everything upstream of it is marked skipped
    without starting dvc. ``stages`` picks a subset (kept in graph order; upstream stages
    are not added), ``force`` reruns up-to-date stages, ``retries``/``retry_delay_seconds``
    set the retry policy (delay doubles per try).
    """
    logger = get_run_logger()
    root = str(Path(project_dir).resolve())
    graph, edges = pipeline_graph(root)
    order = select_stages(graph, stages)
    logger.info("stages in graph order: %s", " -> ".join(order))
    changed = set() if force else set(status(root))
    if force or not changed <= set(graph):  # a name dvc status and dvc dag spell differently: ask dvc
        stale = set(graph)
    else:
        stale = downstream(changed, edges)
    stage_task = repro_stage.with_options(**retry_options(retries, retry_delay_seconds))
    runs = []
    for stage in order:
        runs.append(stage_task(stage, root, force, up_to_date=stage not in stale))
    ran = [r.stage for r in runs if r.outcome != "skipped"]
    logger.info("done: %s", f"ran {', '.join(ran)}" if ran else "every stage was up to date")
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.pipeline", description=pipeline.__doc__.splitlines()[0])
    parser.add_argument("--project-dir", default=".", help="DVC project to run (default: .)")
    parser.add_argument("--stage", dest="stages", action="append", help="run only this stage (repeatable)")
    parser.add_argument("--force", action="store_true", help="rerun stages even when up to date")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES)
    parser.add_argument("--retry-delay", type=float, default=DEFAULT_RETRY_DELAY, help="first retry delay (s)")
    args = parser.parse_args(argv)
    state = pipeline(args.project_dir, args.stages, args.force, args.retries, args.retry_delay, return_state=True)
    if not state.is_completed():
        print(f"error: {state.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The paper's experiment grids as parallel DVC experiments.

Each variant of a grid (:mod:`pipelines.grids`: Table 3 ablations, Table 4 fusions) is one
task running ``dvc exp run --temp -n <grid>-<variant> -S key=value ...``: DVC runs it in a
temporary copy of the repository and saves it as a named experiment, so variants can run
side by side and ``dvc exp show`` compares them. Tasks go through a thread pool by default
(``jobs`` at a time) or through Dask: ``dask="local:2"`` starts a local cluster of 2
workers, ``dask="tcp://scheduler:8786"`` uses an existing one (its workers need this
repository at the same path, or shared storage, and the project installed).

``--temp`` copies only files git knows about (committed, or staged with ``git add``):
untracked files are invisible to the runs; ``copy_paths`` names extra ones to copy.

Run locally: ``python -m pipelines.sweep --grid table3 --set train.epochs=2 [--dask local:2]``.
"""

from __future__ import annotations

from pipelines.settings import apply_defaults

apply_defaults()  # before Prefect reads its settings

import argparse  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.futures import wait  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner  # noqa: E402

from pipelines._dvc import experiments, git, run_dvc, thread_share  # noqa: E402
from pipelines.grids import GRIDS, LABELS  # noqa: E402
from pipelines.pipeline import retry_options, retry_transient  # noqa: E402

#: Metric columns of the summary table (file, flattened key), shown when present.
SUMMARY_METRICS: tuple[tuple[str, str], ...] = (
    ("metrics/valid.json", "mean.mae"),
    ("metrics/test.json", "mean.mae"),
    ("metrics/test.json", "mean.corr"),
    ("metrics/test.json", "mean.acc7"),
    ("metrics/test.json", "mean.acc2_non0"),
    ("metrics/test.json", "mean.f1_non0"),
)


def make_task_runner(dask: str | None = None, jobs: int = 2) -> TaskRunner[Any]:
    """Thread pool of ``jobs`` workers; ``dask="local:N"`` a local Dask cluster of N worker
    processes (bound to 127.0.0.1); any other ``dask`` value is a scheduler address."""
    if not dask:
        return ThreadPoolTaskRunner(max_workers=jobs)
    from prefect_dask import DaskTaskRunner  # imported only when asked for: it is slow to load

    if dask.startswith("local"):
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": runs_here(dask, jobs), "threads_per_worker": 1,
                                              "host": "127.0.0.1", "dashboard_address": None})
    return DaskTaskRunner(address=dask)


def runs_here(dask: str | None, jobs: int) -> int:
    """How many experiments run at once on this machine: ``jobs`` threads, or a local Dask
    cluster's workers; 0 for a remote cluster (its machines are not this one)."""
    if not dask:
        return jobs
    if dask.startswith("local"):
        _, _, count = dask.partition(":")
        return int(count) if count else jobs
    return 0


def resolve_grid(grid: str | dict[str, list[str]], variants: list[str] | None = None) -> dict[str, list[str]]:
    """A grid by name (``table3``, ``table4``) or as a mapping, restricted to ``variants``."""
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise ValueError(f"unknown grid '{grid}'; known: {sorted(GRIDS)}")
        table = GRIDS[grid]
    else:
        table = dict(grid)
    if variants:
        unknown = [v for v in variants if v not in table]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; the grid has {sorted(table)}")
        table = {v: table[v] for v in table if v in variants}
    return table


def exp_run_args(name: str, overrides: list[str], copy_paths: list[str] | None = None,
                 overwrite: bool = False) -> list[str]:
    """Arguments of ``dvc exp run --temp`` for one variant."""
    args = ["exp", "run", "--temp", "-n", name]
    for override in overrides:
        args += ["-S", override]
    for path in copy_paths or []:
        args += ["-C", path]
    if overwrite:
        args.append("--force")
    return args


@task(task_run_name="dvc-exp-{name}", cache_policy=NO_CACHE, persist_result=False,
      retry_condition_fn=retry_transient)
def run_variant(project_dir: str, name: str, overrides: list[str], copy_paths: list[str] | None = None,
                overwrite: bool = False, env: dict[str, str] | None = None) -> str:
    """``dvc exp run --temp -n <name> -S ...`` in ``project_dir`` (``env`` added to its
    environment); returns ``name``."""
    run_dvc(exp_run_args(name, overrides, copy_paths, overwrite), project_dir, get_run_logger(), env=env)
    return name


@dataclass(frozen=True)
class VariantResult:
    """One finished variant: experiment name, paper label, overrides, rev and metrics."""

    name: str
    label: str
    overrides: list[str]
    rev: str | None
    metrics: dict[str, dict[str, Any]]


def headline(message: str) -> str:
    """The telling line of a failure message: DVC's last ``ERROR:`` line, else the first line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return errors[-1] if errors else (lines[0] if lines else "")


def summary_markdown(results: list[VariantResult], failed: dict[str, str]) -> str:
    """A table of the variants and their metrics (columns of ``SUMMARY_METRICS`` present)."""
    columns = [(f, k) for f, k in SUMMARY_METRICS if any(k in r.metrics.get(f, {}) for r in results)]
    head = ["experiment", "paper row", "overrides"] + [f"{Path(f).stem} {k.split('.')[-1]}" for f, k in columns]
    lines = ["# Sweep results", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [f"`{r.name}`", r.label, ", ".join(f"`{o}`" for o in r.overrides)]
        for f, k in columns:
            value = r.metrics.get(f, {}).get(k)
            cells.append("" if value is None else f"{value:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    if failed:
        lines += ["", "## Failed", ""] + [f"- `{n}`: {headline(msg)}" for n, msg in failed.items()]
    return "\n".join(lines) + "\n"


@contextmanager
def _shared_api(dask: str | None) -> Iterator[None]:
    """Without a Prefect server (``PREFECT_API_URL`` unset) point Dask workers at this
    process's temporary server, so their task runs and logs land in this flow run instead
    of a temporary server per worker. Remote workers need a real server."""
    if not dask or PREFECT_API_URL.value():
        yield
        return
    if not dask.startswith("local"):
        get_run_logger().warning("Dask workers at %s need a Prefect server: set PREFECT_API_URL", dask)
        yield
        return
    with get_client(sync_client=True) as client:
        url = str(client.api_url)
    with temporary_settings({PREFECT_API_URL: url}):
        yield


@flow(name="m3sa-sweep-variants")
def _run_variants(project_dir: str, runs: dict[str, list[str]], copy_paths: list[str] | None, overwrite: bool,
                  retries: int, retry_delay_seconds: float, env: dict[str, str] | None = None) -> dict[str, str]:
    """Submit every variant to this flow's task runner; returns name -> error for failures."""
    variant = run_variant.with_options(**retry_options(retries, retry_delay_seconds))
    futures = {name: variant.submit(project_dir, name, overrides, copy_paths, overwrite, env)
               for name, overrides in runs.items()}
    wait(list(futures.values()))
    failed = {}
    for name, future in futures.items():
        state = future.state
        if not state.is_completed():
            failed[name] = str(state.message or state.type)
    return failed


@flow(name="m3sa-sweep")
def sweep(project_dir: str = ".", grid: str | dict[str, list[str]] = "table3", variants: list[str] | None = None,
          common: list[str] | None = None, prefix: str | None = None, jobs: int = 2, dask: str | None = None,
          copy_paths: list[str] | None = None, overwrite: bool = False, retries: int = 1,
          retry_delay_seconds: float = 10.0) -> list[VariantResult]:
    """Run a grid's variants as parallel ``dvc exp run --temp`` experiments, then tabulate them.

    Steps: resolve the grid (``table3``/``table4`` or a mapping name -> overrides) and
    ``variants``; warn about untracked files; run ``<prefix>-<variant>`` experiments with
    ``common`` overrides first, then the variant's, through a thread pool (``jobs``) or
    Dask (``dask``: ``local:N`` or an address); read ``dvc exp show``; write a summary
    artifact. ``overwrite`` replaces experiments of the same name. Fails after the table
    is written when a variant failed.
    """
    logger = get_run_logger()
    root = str(Path(project_dir).resolve())
    table = resolve_grid(grid, variants)
    prefix = prefix if prefix is not None else (grid if isinstance(grid, str) else "sweep")
    runs = {f"{prefix}-{v}" if prefix else v: [*(common or []), *ov] for v, ov in table.items()}
    untracked = [p for p in git(["ls-files", "--others", "--exclude-standard"], root).splitlines() if p]
    if untracked:
        logger.warning("`dvc exp run --temp` copies only files known to git; untracked (invisible to the "
                       "runs unless listed in copy_paths): %s", ", ".join(untracked[:20]))
    runner = make_task_runner(dask, jobs)
    threads = thread_share(runs_here(dask, jobs))  # parallel runs on this machine share its cores
    logger.info("running %d experiment(s) with %s%s: %s", len(runs), type(runner).__name__,
                "".join(f", {k}={v}" for k, v in threads.items()), ", ".join(runs))
    with _shared_api(dask):
        failed = _run_variants.with_options(task_runner=runner)(root, runs, copy_paths, overwrite,
                                                                retries, retry_delay_seconds, threads)
    head = git(["rev-parse", "HEAD"], root)
    rows = {r.name: r for r in experiments(root) if r.baseline == head and r.rev != head and r.name in runs}
    results = []
    for variant, name in zip(table, runs):
        if name in failed:
            continue
        row = rows.get(name)
        results.append(VariantResult(name, LABELS.get(variant, variant), runs[name],
                                     row.rev if row else None, row.metrics if row else {}))
    create_markdown_artifact(markdown=summary_markdown(results, failed), key="sweep-summary",
                             description=f"m3sa sweep: {len(results)} done, {len(failed)} failed")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(runs)} experiment(s) failed: "
                           + "; ".join(f"{n}: {headline(m)}" for n, m in failed.items()))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.sweep", description=sweep.__doc__.splitlines()[0])
    parser.add_argument("--project-dir", default=".", help="DVC project (default: .)")
    parser.add_argument("--grid", default="table3", choices=sorted(GRIDS))
    parser.add_argument("--variant", dest="variants", action="append", help="run only this variant (repeatable)")
    parser.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE",
                        help="override applied to every variant, e.g. --set train.epochs=2 (repeatable)")
    parser.add_argument("--prefix", help="experiment name prefix (default: the grid name)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel experiments with the thread pool")
    parser.add_argument("--dask", help="Dask scheduler address, or local:N for a local cluster of N workers")
    parser.add_argument("--copy-path", dest="copy_paths", action="append", help="untracked path to copy (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="replace experiments of the same name")
    args = parser.parse_args(argv)
    state = sweep(args.project_dir, args.grid, args.variants, args.common, args.prefix, args.jobs, args.dask,
                  args.copy_paths, args.overwrite, return_state=True)
    if not state.is_completed():
        print(f"error: {state.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serve the retraining flow on a schedule from this process (no work pool needed).

``python -m pipelines.serve [--cron "0 3 * * *"] [--project-dir .]`` registers the
deployment ``m3sa-retrain/nightly-retrain`` and runs its scheduled and manually triggered
runs here until interrupted. Schedules need a Prefect server (``prefect server start``
and ``PREFECT_API_URL``); against the temporary server Prefect only warns and never runs
the schedule. For a work pool and workers, use ``prefect.yaml`` instead (docs/prefect.md).
"""

from __future__ import annotations

from pipelines.settings import apply_defaults

apply_defaults()  # before Prefect reads its settings

import argparse  # noqa: E402

from pipelines.retrain import retrain  # noqa: E402

#: Nightly at 03:00 UTC.
DEFAULT_CRON = "0 3 * * *"
DEPLOYMENT_NAME = "nightly-retrain"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--cron", default=DEFAULT_CRON, help=f"schedule (default: {DEFAULT_CRON!r})")
    parser.add_argument("--project-dir", default=".", help="DVC project to retrain (default: .)")
    parser.add_argument("--pull", action="store_true", help="dvc pull before each run")
    parser.add_argument("--name", default=DEPLOYMENT_NAME, help=f"deployment name (default: {DEPLOYMENT_NAME})")
    args = parser.parse_args(argv)
    retrain.serve(name=args.name, cron=args.cron,
                  parameters={"project_dir": args.project_dir, "pull_first": args.pull})


if __name__ == "__main__":
    main()

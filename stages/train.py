"""``python -m stages.train``: train every seed of ``train.seeds``.

Writes ``models/seed_<s>/{best,last}.pt``, dvclive curves under ``train.live_dir`` and
``metrics/train.json``. Rerunning resumes each seed from its ``last.pt`` when the
parameters match. With ``train.nproc > 1`` the stage launches itself in ``nproc`` processes
as ``torchrun --standalone`` would (DistributedDataParallel; gloo on CPU, NCCL on CUDA);
launching it under ``torchrun`` directly works too. While it runs, rank 0 holds
``<train.models_dir>/.lock``: a second training of the same folder stops at once with a
one-line error (m3sa.locking).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid

from m3sa.config import Config
from m3sa.locking import output_lock
from m3sa.training import train_all
from stages._cli import EXIT_USER_ERROR, run

METRICS_PATH = "metrics/train.json"

log = logging.getLogger("stages.train")


def launch_distributed(nproc: int, argv: list[str]) -> int:
    """Run this stage in ``nproc`` local processes, as ``torchrun --standalone`` would; the exit code.

    A process that stops on a user error has printed its one line and exited with 2; the
    launcher then exits with 2 too, without torch's failure report (M3SA_DEBUG=1 shows it).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, rdzv_backend="c10d",
                          rdzv_endpoint="localhost:0", run_id=str(uuid.uuid4()), max_restarts=0)
    log.info("launching %d processes: python -m stages.train %s", nproc, " ".join(argv))
    debug = bool(os.environ.get("M3SA_DEBUG"))
    elastic = logging.getLogger("torch.distributed.elastic")
    before = elastic.level
    if not debug:
        elastic.setLevel(logging.CRITICAL)
    try:
        elastic_launch(config, sys.executable)("-u", "-m", "stages.train", *argv)
    except ChildFailedError as err:
        codes = {f.exitcode for f in err.failures.values()}
        if debug:
            log.error("%s", err.format_msg())
        return EXIT_USER_ERROR if EXIT_USER_ERROR in codes else (max(codes) if max(codes) > 0 else 1)
    finally:
        elastic.setLevel(before)
    return 0


def main(cfg: Config, args: argparse.Namespace) -> None:
    if cfg.train.nproc > 1 and "WORLD_SIZE" not in os.environ:
        code = launch_distributed(cfg.train.nproc, sys.argv[1:])
        if code and code != EXIT_USER_ERROR:  # a user error has been printed by the process that hit it
            log.error("a training process failed (exit code %d); rerun with M3SA_DEBUG=1 for the details", code)
        if code:
            sys.exit(code)
        return
    if int(os.environ.get("RANK", "0")) > 0:
        logging.getLogger().setLevel(logging.WARNING)  # one log stream: rank 0's
        summary = train_all(cfg, metrics_path=METRICS_PATH)
    else:  # rank 0 (or the only process) holds the models folder: one training at a time
        with output_lock(cfg.train.models_dir):
            summary = train_all(cfg, metrics_path=METRICS_PATH)
    for row in summary["per_seed"]:
        log.info("seed %d: best %s %.4f at epoch %d of %d", row["seed"], row["select_metric"],
                 row["best_valid"] if row["best_valid"] is not None else float("nan"), row["best_epoch"], row["epochs_run"])


if __name__ == "__main__":
    run("train", main)

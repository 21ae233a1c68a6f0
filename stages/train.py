"""``python -m stages.train``: train every seed of ``train.seeds``.

Writes ``models/seed_<s>/{best.pt,state.json}`` (``last.pt`` while the seed trains), dvclive
curves under ``train.live_dir`` and ``metrics/train.json``. Rerunning resumes each seed from its ``last.pt`` when the
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

from m3sa.config import Config
from m3sa.locking import output_lock
from m3sa.runtime import launch_local
from m3sa.training import train_all
from stages._cli import EXIT_USER_ERROR, run

METRICS_PATH = "metrics/train.json"

log = logging.getLogger("stages.train")


def main(cfg: Config, args: argparse.Namespace) -> None:
    if cfg.train.nproc > 1 and "WORLD_SIZE" not in os.environ:
        code = launch_local(cfg.train.nproc, "stages.train", sys.argv[1:], EXIT_USER_ERROR)
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

"""Stage ``sample``: write the embedded MOSI-like dataset as CSD files into ``data.sample_dir``.

``python -m stages.sample [--params params.yaml] [--set data.sample_size=tiny]``
Outputs (docs/architecture.md): words.csd, acoustic.csd, visual.csd, labels.csd, folds.json,
ground_truth.json.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from m3sa.config import Config
from m3sa.data.sample import generate_sample
from m3sa.locking import output_lock
from stages._cli import run

log = logging.getLogger("stages.sample")


def main(cfg: Config, args: argparse.Namespace) -> None:
    out = Path(cfg.data.sample_dir)
    # the folder is replaced as a whole, so its lock sits beside it (data/.sample.lock)
    with output_lock(out.parent, name=f".{out.name}.lock"):
        summary = generate_sample(out, cfg.data.sample_size, cfg.data.sample_seed)
    log.info("informative share: acoustic %.2f, visual %.2f",
             summary["informative"]["acoustic"], summary["informative"]["visual"])


if __name__ == "__main__":
    run("sample", main)

"""Stage ``extract``: CSD files or a pickle -> ``data.features_dir/{train,valid,test}.parquet`` + ``meta.json``.

``python -m stages.extract [--params params.yaml] [--set data.align=none ...]``
Input: the embedded sample (``data.source: sample``, from ``data.sample_dir``) or your own
CMU-MultimodalSDK files (``data.source: csd``: ``data.csd_dir`` + ``data.files``, folds from
``data.folds``), or an MMSA / MAG-BERT pickle (``data.source: mmsa | mag``, ``data.pickle``;
loaded with an allowlist, nothing in it runs). A second extraction into the same features
folder while one runs stops at once with a one-line error (m3sa.locking).
"""

from __future__ import annotations

import argparse
import logging

from m3sa.config import Config
from m3sa.data.extract import extract
from m3sa.locking import output_lock
from stages._cli import run

log = logging.getLogger("stages.extract")


def main(cfg: Config, args: argparse.Namespace) -> None:
    with output_lock(cfg.data.features_dir):  # one extraction at a time per features folder
        meta = extract(cfg.data)
    if meta["dropped"]:
        reasons: dict[str, int] = {}
        for d in meta["dropped"]:
            key = d["reason"].split(" (")[0]
            reasons[key] = reasons.get(key, 0) + 1
        log.info("dropped segments by reason: %s (details in meta.json)", reasons)


if __name__ == "__main__":
    run("extract", main)

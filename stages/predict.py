"""``python -m stages.predict``: score new data with a trained checkpoint (not a DVC stage).

    python -m stages.predict --checkpoint models/seed_0/best.pt --input X --output predictions/new.parquet

``X`` is a folder of CMU-MultimodalSDK files (extracted as the checkpoint's training data
was, then standardised with the statistics stored in the checkpoint; the file names are
those it was trained with unless given with ``--file words=NAME`` ...) or a Parquet file
of extracted features (docs/architecture.md). The output (``.parquet`` or ``.csv``) has
one row per segment: segment_id, video_id, seed, label, pred, pred_<m>, filter_<m>.
``--device`` and ``--batch-size`` default to ``train.device`` and ``evaluate.batch_size``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from m3sa.atomic import atomic_write
from m3sa.config import Config
from m3sa.errors import DataError, OutputError
from m3sa.predict import FILE_KEYS, Predictor
from stages._cli import run

log = logging.getLogger("stages.predict")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, e.g. models/seed_0/best.pt")
    parser.add_argument("--input", required=True, help="a folder of .csd files or a features .parquet file")
    parser.add_argument("--output", required=True, help="predictions file to write (.parquet or .csv)")
    parser.add_argument("--file", dest="files", action="append", default=[], metavar="KEY=NAME",
                        help="CSD input: file name of a stream (keys: words, acoustic, visual, labels); repeatable")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="default: train.device")
    parser.add_argument("--batch-size", type=int, default=None, help="default: evaluate.batch_size")


def parse_files(items: list[str]) -> dict[str, str | None]:
    """``["words=a.csd", "visual=null"]`` -> ``{"words": "a.csd", "visual": None}``."""
    out: dict[str, str | None] = {}
    for item in items:
        key, sep, name = item.partition("=")
        if not sep or key not in FILE_KEYS.values():
            raise DataError(f"--file '{item}': expected KEY=NAME with KEY one of {', '.join(FILE_KEYS.values())}")
        out[key] = None if name.strip().lower() in ("", "null", "none") else name
    return out


def main(cfg: Config, args: argparse.Namespace) -> None:
    src, out = Path(args.input), Path(args.output)
    if out.suffix not in (".parquet", ".csv"):
        raise OutputError(f"{out}: the output must end in .parquet or .csv")
    if args.batch_size is not None and args.batch_size < 1:
        raise DataError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not src.exists():
        raise DataError(f"{src}: input not found; give a folder of .csd files or a .parquet file")
    if src.is_file() and src.suffix != ".parquet":
        raise DataError(f"{src}: not a .parquet file; give a folder of .csd files or a .parquet file")
    files = parse_files(args.files)
    if files and src.is_file():
        raise DataError("--file only applies to a folder of .csd files")
    predictor = Predictor.from_checkpoint(args.checkpoint, args.device or cfg.train.device,
                                          args.batch_size or cfg.evaluate.batch_size)
    df = predictor.predict_csd(src, files) if src.is_dir() else predictor.predict_parquet(src)
    if out.suffix == ".csv":
        atomic_write(out, lambda fh: fh.write(df.to_csv(index=False).encode()))
    else:
        table = pa.Table.from_pandas(df, preserve_index=False)
        atomic_write(out, lambda fh: pq.write_table(table, fh))
    log.info("%d segment(s) scored with %s -> %s", len(df), args.checkpoint, out)


if __name__ == "__main__":
    run("predict", main, extra=add_arguments)

"""Scoring new data with a trained checkpoint (inference).

A :class:`Predictor` holds one checkpoint's model, rebuilt from the checkpoint alone
(:func:`m3sa.checkpoint.load_model`), the text encoder's tokenizer and the train-split
standardisation statistics the checkpoint carries. New data comes in two forms:

- extracted features: a Parquet file with the schema of docs/architecture.md (or an
  Arrow table / pandas DataFrame of it; ``label`` may be left out for unlabelled data);
- raw CMU-MultimodalSDK files: they go through the extractor
  (:func:`m3sa.data.extract.extract`) with the checkpoint's own data parameters
  (segments from the label rows, word-level alignment, cleaning, truncation) and are then
  standardised with the stored statistics, never with statistics of the new data.

Predictions come back as a DataFrame in the layout of ``predictions/test.parquet``:
segment_id, video_id, seed, label, pred (fused y_M, eq. 9), pred_<m> (unimodal y_m, eq. 5)
and filter_<m> (share of x_m kept by the modality filter, eq. 16-21).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import nn

from m3sa.checkpoint import load_model
from m3sa.config import Config, CSDFiles
from m3sa.data.csd import CSDReader
from m3sa.data.dataset import SplitData, load_split, load_word_tokenizer
from m3sa.data.extract import extract
from m3sa.data.split_writer import standardised
from m3sa.data.features import FRAME_MODALITIES, arrow_lists, arrow_numeric, read_meta, sequence_values
from m3sa.data.sample import FILES as SAMPLE_FILES
from m3sa.errors import DataError, ModelError
from m3sa.evaluation import Predictions, _prediction_table, predict
from m3sa.runtime import resolve_device

log = logging.getLogger(__name__)

#: ``data.files`` keys per modality.
FILE_KEYS = {"language": "words", "acoustic": "acoustic", "visual": "visual", "labels": "labels"}


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Hide ``logger``'s warnings for the duration of the block."""
    lg = logging.getLogger(logger)
    before = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(before)


# ---------------------------------------------------------------- standardisation


def standardise_table(table: pa.Table, standardization: Mapping[str, Mapping[str, list[float]]],
                      no_frame_rows: bool = False) -> pa.Table:
    """``table`` with each frame column m standardised: ``(x - mean_m) / std_m`` per feature.

    The formula and its handling of words without frames (set to 0 after standardising)
    are the extractor's. Unstandardised features store such words as all-zero rows; with
    ``no_frame_rows`` every all-zero row is taken to be one and maps to 0, as in training.
    """
    for m, stats in standardization.items():
        if m not in table.column_names:
            continue
        mean = np.asarray(stats["mean"], dtype=np.float64)  # (d,)
        std = np.asarray(stats["std"], dtype=np.float64)  # (d,)
        col = table.column(m).combine_chunks()
        if no_frame_rows:
            x, offsets = sequence_values(col, len(mean))  # (rows, d), (n+1,)
            x = x.copy()
            x[~x.any(axis=1)] = np.nan
            col = arrow_lists(np.diff(offsets), arrow_lists(np.full(len(x), len(mean)),
                                                            arrow_numeric(x.reshape(-1), pa.float32())))
        table = table.set_column(table.column_names.index(m), m, standardised(col, mean, std))
    return table


def same_standardization(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two ``standardization`` dicts (meta.json / checkpoint) hold the same statistics."""
    if set(a) != set(b):
        return False
    for m in a:
        for key in ("mean", "std"):
            x, y = np.asarray(a[m][key], dtype=np.float64), np.asarray(b[m][key], dtype=np.float64)
            if x.shape != y.shape or not np.allclose(x, y, rtol=1e-6, atol=1e-9):
                return False
    return True


# ---------------------------------------------------------------- predictor


@dataclasses.dataclass
class Predictor:
    """A trained model ready to score new data; build it with :meth:`from_checkpoint`."""

    model: nn.Module
    checkpoint: dict[str, Any]
    config: Config
    path: Path
    device: torch.device
    tokenizer: Any
    batch_size: int

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto",
                        batch_size: int | None = None) -> "Predictor":
        """Load ``path`` (a ``best.pt`` / ``last.pt``); ``device``: auto | cpu | cuda or a torch device.

        ``batch_size`` defaults to the checkpoint's ``evaluate.batch_size``.
        """
        dev = device if isinstance(device, torch.device) else resolve_device(str(device))
        model, ckpt, cfg = load_model(path, dev)
        tok = load_word_tokenizer(cfg.model.text_encoder) if "language" in ckpt["modalities"] else None
        bs = batch_size or cfg.evaluate.batch_size
        if bs < 1:
            raise ModelError(f"batch size must be >= 1, got {bs}")
        return cls(model, ckpt, cfg, Path(path), dev, tok, bs)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.checkpoint["modalities"])

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(d) for m, d in self.checkpoint["dims"].items()}

    @property
    def standardization(self) -> dict[str, Any]:
        """The train-split statistics stored in the checkpoint (empty: trained unstandardised)."""
        return dict(self.checkpoint.get("standardization") or {})

    def _meta(self) -> dict[str, Any]:
        return {"modalities": list(self.modalities), "dims": self.dims}

    # ------------------------------------------------------------ checks

    def _mismatch(self, where: str, what: str) -> ModelError:
        return ModelError(f"{where}: {what}, but checkpoint {self.path} was trained on modalities "
                          f"{list(self.modalities)} with widths {self.dims}; give features extracted like the "
                          "training data, or use a checkpoint trained on these")

    def check_table(self, table: pa.Table, where: str) -> None:
        """ModelError naming ``where`` (and the segment) when columns or widths disagree with the checkpoint."""
        if "segment_id" not in table.column_names:
            raise DataError(f"{where}: column 'segment_id' is missing (schema in docs/architecture.md)")
        for m in self.modalities:
            name = "words" if m == "language" else m
            if name not in table.column_names:
                raise self._mismatch(where, f"column '{name}' ({m}) is missing")
        for m in FRAME_MODALITIES:
            if m not in self.modalities:
                continue
            col = table.column(m).combine_chunks()
            if not (pa.types.is_list(col.type) and pa.types.is_list(col.type.value_type)):
                raise DataError(f"{where}: column '{m}' has type {col.type}, expected list<list<float32>>")
            offsets = col.offsets.to_numpy()
            offsets = offsets - offsets[0]  # (n+1,) rows of each segment
            widths = pc.fill_null(pc.list_value_length(col.flatten()), 0).to_numpy()  # (rows,)
            bad = np.flatnonzero(widths != self.dims[m])
            if len(bad):
                seg = int(np.searchsorted(offsets, bad[0], side="right") - 1)
                sid = table.column("segment_id")[seg].as_py()
                raise self._mismatch(where, f"segment {sid!r}: '{m}' rows are {int(widths[bad[0]])}-d")

    # ------------------------------------------------------------ inputs -> SplitData

    def _canonical(self, table: pa.Table, where: str) -> pa.Table:
        """Frame columns as list<list<float32>> and labels as float32 (tables built in pandas hold doubles)."""
        seq = pa.list_(pa.list_(pa.float32()))
        for name, typ in [(m, seq) for m in FRAME_MODALITIES if m in self.modalities] + [("label", pa.float32())]:
            if name in table.column_names and table.schema.field(name).type != typ:
                try:
                    table = table.set_column(table.column_names.index(name), name, table.column(name).cast(typ))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                    raise DataError(f"{where}: column '{name}' cannot be read as {typ} ({err})") from None
        return table

    def _load(self, table: pa.Table, where: str) -> SplitData:
        """A :class:`SplitData` from a checked table (written to a temporary Parquet file)."""
        with tempfile.TemporaryDirectory(prefix="m3sa-predict-") as tmp:
            pq.write_table(table, Path(tmp) / "input.parquet", compression="none")
            try:
                return load_split(tmp, "input", self.tokenizer, self.config.model.max_tokens, self._meta())
            except DataError as err:
                raise DataError(str(err).replace(str(Path(tmp) / "input.parquet"), where)) from None

    def load_parquet(self, source: str | Path | pa.Table | pd.DataFrame,
                     standardized: bool | None = None) -> tuple[SplitData, bool]:
        """Features from a Parquet file or a table; returns ``(data, has_labels)``.

        ``standardized``: whether the features are already standardised with the checkpoint's
        statistics. ``None`` decides from a ``meta.json`` beside the file (the extractor's):
        the same statistics -> used as they are; none (``data.standardize: false``) -> the
        checkpoint's are applied; other statistics -> :class:`ModelError`. Tables without
        such a file are taken as standardised. With ``standardized=False`` all-zero rows are
        taken as words without frames (:func:`standardise_table`).
        """
        if isinstance(source, (str, Path)):
            path = Path(source)
            where = str(path)
            if not path.is_file():
                raise DataError(f"{path}: Parquet file not found")
            try:
                table = pq.read_table(path)
            except (OSError, pa.ArrowException) as err:
                raise DataError(f"{path}: not a readable Parquet file ({err})") from None
        else:
            path = None
            where = "input table"
            table = pa.Table.from_pandas(source, preserve_index=False) if isinstance(source, pd.DataFrame) else source
        self.check_table(table, where)
        table = self._canonical(table, where)
        no_frame_rows = standardized is False
        if standardized is None:
            standardized = True
            meta_path = path.parent / "meta.json" if path is not None else None
            if meta_path is not None and meta_path.is_file():
                meta = read_meta(path.parent)
                if not same_standardization(meta["standardization"], self.standardization):
                    if meta["standardization"]:
                        raise ModelError(
                            f"{path}: its features were standardised with the statistics in {meta_path}, not with "
                            f"those checkpoint {self.path} was trained with; score the raw CSD files instead "
                            "(predict_csd / `python -m stages.predict --input <csd folder>`), or extract with "
                            "data.standardize: false")
                    standardized = False
                    no_frame_rows = any(meta.get("words_without_frames", {}).values())
        has_labels = "label" in table.column_names
        if not has_labels:
            table = table.append_column("label", pa.array(np.full(table.num_rows, np.nan, dtype=np.float32)))
        if not standardized and self.standardization:
            table = standardise_table(table, self.standardization, no_frame_rows)
        elif path is not None and path.suffix == ".parquet" and has_labels:
            return load_split(path.parent, path.name[: -len(".parquet")], self.tokenizer,
                              self.config.model.max_tokens, self._meta()), True
        return self._load(table, where), has_labels

    def csd_files(self, csd_dir: str | Path, files: CSDFiles | Mapping[str, str | None] | None = None) -> CSDFiles:
        """File names to read in ``csd_dir``: those the checkpoint was trained with, overridden by ``files``.

        Streams the checkpoint does not use are left out; a stream it needs that is missing,
        or a feature width that differs from training, is a :class:`ModelError`.
        """
        data = self.config.data
        names: dict[str, str | None]
        if data.source == "sample":
            names = {FILE_KEYS[m]: n for m, n in SAMPLE_FILES.items()}
        else:
            names = dataclasses.asdict(data.files)
        given = dataclasses.asdict(files) if isinstance(files, CSDFiles) else dict(files or {})
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise DataError(f"files: unknown key '{unknown[0]}'; use {', '.join(FILE_KEYS.values())}")
        names.update(given)
        for m in ("language", *FRAME_MODALITIES):
            key = FILE_KEYS[m]
            if m not in self.modalities:
                names[key] = None
            elif not names.get(key):
                raise self._mismatch(str(csd_dir), f"no {key} file is named (files['{key}'])")
        if not names.get("labels"):
            raise DataError(f"{csd_dir}: no labels file is named (files['labels']); its rows define the segments")
        for m in FRAME_MODALITIES:
            if m in self.modalities:
                path = Path(csd_dir) / str(names[m])
                with CSDReader(path) as reader:
                    vids = reader.videos()
                    if vids and reader.shape(vids[0])[1] != self.dims[m]:
                        raise self._mismatch(str(path), f"'{m}' features are {reader.shape(vids[0])[1]}-d "
                                                        f"(video '{vids[0]}')")
        return CSDFiles(**names)  # type: ignore[arg-type]

    def load_csd(self, csd_dir: str | Path, files: CSDFiles | Mapping[str, str | None] | None = None,
                 videos: list[str] | None = None) -> tuple[SplitData, dict[str, Any]]:
        """Extract ``csd_dir`` (all videos of the labels file, or ``videos``) as the checkpoint's
        training data was, standardised with the stored statistics; returns ``(data, meta)``
        where ``meta`` is the extractor's report (``dropped`` segments, ``nonfinite`` counts...)."""
        names = self.csd_files(csd_dir, files)
        labels = Path(csd_dir) / names.labels
        with CSDReader(labels) as reader:
            labelled = reader.videos()
        if videos is not None:
            missing = sorted(set(videos) - set(labelled))
            if missing:
                raise DataError(f"{labels}: video '{missing[0]}' is not in the labels file")
            labelled = [v for v in labelled if v in set(videos)]
        if not labelled:
            raise DataError(f"{labels}: no video to score")
        with tempfile.TemporaryDirectory(prefix="m3sa-predict-") as tmp:
            folds = Path(tmp) / "folds.json"
            folds.write_text(json.dumps({"train": labelled}))
            dcfg = dataclasses.replace(self.config.data, source="csd", csd_dir=str(csd_dir), files=names,
                                       folds=str(folds), standardize=bool(self.standardization),
                                       features_dir=str(Path(tmp) / "features"))
            with _quiet("m3sa.data.folds"):  # "labelled videos in no fold": those not asked for
                # standardised on the way with the checkpoint's statistics, exactly as in training
                meta = extract(dcfg, progress=False, hash_inputs=False, statistics=self.standardization or None)
            table = pq.read_table(Path(dcfg.features_dir) / "train.parquet")
        if meta["dropped"]:
            reasons = Counter(d["reason"].split(" (")[0] for d in meta["dropped"])
            log.warning("%s: %d segment(s) dropped and not scored: %s", csd_dir, len(meta["dropped"]), dict(reasons))
        return self._load(table, str(csd_dir)), meta

    # ------------------------------------------------------------ predictions

    def predict_split(self, data: SplitData, batch_size: int | None = None) -> Predictions:
        """Model outputs on every segment of ``data`` (eval mode, no gradient)."""
        return predict(self.model, data, batch_size or self.batch_size, self.device)

    def _frame(self, data: SplitData, has_labels: bool, batch_size: int | None) -> pd.DataFrame:
        preds = self.predict_split(data, batch_size)
        df = _prediction_table(data, int(self.checkpoint["seed"]), preds).to_pandas()
        return df if has_labels else df.drop(columns="label")

    def predict_parquet(self, source: str | Path | pa.Table | pd.DataFrame, standardized: bool | None = None,
                        batch_size: int | None = None) -> pd.DataFrame:
        """Predictions for extracted features (see :meth:`load_parquet`), one row per segment."""
        data, has_labels = self.load_parquet(source, standardized)
        return self._frame(data, has_labels, batch_size)

    def predict_csd(self, csd_dir: str | Path, files: CSDFiles | Mapping[str, str | None] | None = None,
                    videos: list[str] | None = None, batch_size: int | None = None) -> pd.DataFrame:
        """Predictions for raw CSD files (see :meth:`load_csd`), one row per kept segment.

        ``df.attrs["dropped"]`` lists the segments the extractor dropped (with the reason).
        """
        data, meta = self.load_csd(csd_dir, files, videos)
        df = self._frame(data, True, batch_size)
        df.attrs["dropped"] = meta["dropped"]
        return df

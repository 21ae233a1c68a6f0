"""Prediction and evaluation of trained checkpoints (DESIGN sections 4 and 7).

:func:`predict` runs a model over a split (also used by training for the valid split);
:func:`evaluate_all` loads each seed's ``best.pt`` (the checkpoint alone rebuilds the
model), scores the valid and test splits, the test split with each modality in turn
replaced by its baseline embedding (missing-modality robustness), and writes
``metrics/{test,valid,masks,robustness}.json`` and ``predictions/test.parquet``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from m3sa import metrics as metrics_lib
from m3sa.atomic import atomic_write
from m3sa.checkpoint import load_model, write_json
from m3sa.config import Config
from m3sa.data.dataset import BucketBatchSampler, SplitData, iterate_batches, load_split, load_word_tokenizer, read_meta
from m3sa.errors import ModelError
from m3sa.runtime import autocast_for, resolve_device

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Model outputs over a split, in the split's row order (arrays of shape (n,))."""

    pred: np.ndarray
    unimodal: dict[str, np.ndarray] = field(default_factory=dict)
    filter_values: dict[str, np.ndarray] = field(default_factory=dict)

    def filter_means(self) -> dict[str, float]:
        """Mean filter value per modality (share of x_m kept)."""
        return {m: float(v.mean()) for m, v in self.filter_values.items()}


@torch.no_grad()
def predict(model: nn.Module, data: SplitData, batch_size: int, device: torch.device, drop: str | None = None,
            world: int = 1, rank: int = 0, gather: Callable[[Any], list[Any]] | None = None) -> Predictions:
    """Predictions of ``model`` (eval mode) on every sample of ``data``.

    With ``world > 1`` each rank scores every ``world``-th batch and ``gather`` (an
    all-gather of Python objects) collects the pieces, so every rank returns the full split.
    """
    was_training = model.training
    model.eval()
    n = len(data)
    pred = np.zeros(n, dtype=np.float32)
    uni: dict[str, np.ndarray] = {}
    filt: dict[str, np.ndarray] = {}
    pieces: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]] = []
    sampler = BucketBatchSampler(data.lengths, batch_size, shuffle=False)
    batches = sampler.global_batches()[rank::world]
    try:
        for batch in iterate_batches(data, batches, device):
            with autocast_for(device):
                out = model(batch, drop=drop)
            idx = batch["index"].cpu().numpy()
            pieces.append((idx, out.pred.float().cpu().numpy(),
                           {m: v.float().cpu().numpy() for m, v in out.unimodal.items()},
                           {m: v.float().cpu().numpy() for m, v in out.filter_values.items()}))
    finally:
        model.train(was_training)
    if world > 1:
        if gather is None:
            raise ValueError("predict with world > 1 needs a gather function")
        pieces = [p for part in gather(pieces) for p in part]
    for idx, p, u, f in pieces:
        pred[idx] = p
        for m, v in u.items():
            uni.setdefault(m, np.full(n, np.nan, dtype=np.float32))[idx] = v
        for m, v in f.items():
            filt.setdefault(m, np.full(n, np.nan, dtype=np.float32))[idx] = v
    return Predictions(pred, uni, filt)


def check_widths(data_meta: dict[str, Any], ckpt: dict[str, Any], features_dir: Path, ckpt_path: Path) -> None:
    """ModelError when the features' modalities or widths disagree with the checkpoint's."""
    mods = list(data_meta["modalities"])
    if mods != list(ckpt["modalities"]):
        raise ModelError(
            f"{ckpt_path}: trained on modalities {ckpt['modalities']}, but {features_dir}/meta.json lists {mods}; "
            "retrain on these features or point data.features_dir at the features it was trained on"
        )
    for m, d in ckpt["dims"].items():
        got = data_meta.get("dims", {}).get(m)
        if got != d:
            raise ModelError(
                f"{ckpt_path}: '{m}' features were {d}-d in training, but {features_dir}/meta.json says {got}; "
                "retrain on these features or point data.features_dir at the features it was trained on"
            )


def _prediction_table(split: SplitData, seed: int, preds: Predictions) -> pa.Table:
    n = len(split)
    cols: dict[str, pa.Array] = {
        "segment_id": pa.array(split.segment_ids, pa.string()),
        "video_id": pa.array(split.video_ids, pa.string()),
        "seed": pa.array(np.full(n, seed, dtype=np.int32)),
        "label": pa.array(split.labels.numpy().astype(np.float32)),
        "pred": pa.array(preds.pred.astype(np.float32)),
    }
    for m in split.modalities:
        cols[f"pred_{m}"] = pa.array(preds.unimodal.get(m, np.full(n, np.nan, np.float32)).astype(np.float32))
    for m in split.modalities:
        cols[f"filter_{m}"] = pa.array(preds.filter_values.get(m, np.full(n, np.nan, np.float32)).astype(np.float32))
    for m, gt in split.ground_truth.items():
        cols[f"gt_{m}"] = pa.array([None if np.isnan(v) else bool(v) for v in gt], pa.bool_())
    return pa.table(cols)


def _score(preds: np.ndarray, labels: np.ndarray, split: str, features_dir: Path, model_path: Path) -> dict[str, float]:
    """The metrics of one split; all NaN (written as null) when the split is empty, e.g. a
    dataset with only train and valid folds, whose valid metrics are then the ones to report.

    Raises :class:`ModelError` when the model at ``model_path`` predicts NaN/inf.
    """
    if labels.size == 0:
        log.warning("%s/%s.parquet has no segments: its metrics are null", features_dir, split)
        return {k: float("nan") for k in metrics_lib.METRIC_KEYS}
    bad = int(np.size(preds) - np.isfinite(preds).sum())
    if bad:
        raise ModelError(f"{model_path}: {bad} of {np.size(preds)} predictions on {features_dir}/{split}.parquet "
                         f"are NaN/inf; the checkpoint is broken (retrain it) or the features hold extreme values")
    return dict(metrics_lib.regression_metrics(preds, labels))


def _with_seeds(doc: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    """Label each ``per_seed`` entry of an :func:`metrics.aggregate` document with its seed."""
    for entry, seed in zip(doc["per_seed"], seeds, strict=True):
        entry["seed"] = seed
    return doc


def evaluate_all(cfg: Config, features_dir: str | Path | None = None, models_dir: str | Path | None = None,
                 metrics_dir: str | Path = "metrics", predictions_path: str | Path = "predictions/test.parquet",
                 device: str | torch.device | None = None) -> dict[str, Any]:
    """Evaluate ``models_dir/seed_<s>/best.pt`` for every seed in ``cfg.train.seeds``; write the outputs.

    Returns ``{"test", "valid", "masks", "robustness"}``: the documents written to
    ``metrics/<name>.json``.
    """
    features_dir = Path(features_dir or cfg.data.features_dir)
    models_dir = Path(models_dir or cfg.train.models_dir)
    metrics_dir = Path(metrics_dir)
    dev = torch.device(device) if device is not None else resolve_device(cfg.train.device)
    meta = read_meta(features_dir)
    bs = cfg.evaluate.batch_size
    splits: dict[tuple[str, int], dict[str, SplitData]] = {}  # (encoder, max_tokens) -> split name -> data
    per_seed: dict[str, list[dict[str, float]]] = {"valid": [], "test": []}
    masks: list[dict[str, Any]] = []
    robust: dict[str, list[dict[str, float]]] = {}
    tables: list[pa.Table] = []
    hard = False
    for seed in cfg.train.seeds:
        path = models_dir / f"seed_{seed}" / "best.pt"
        model, ckpt, mcfg = load_model(path, dev)
        check_widths(meta, ckpt, features_dir, path)
        hard = hard or mcfg.model.filter == "hard"
        key = (mcfg.model.text_encoder, mcfg.model.max_tokens)
        if key not in splits:
            tok = load_word_tokenizer(mcfg.model.text_encoder) if "language" in meta["modalities"] else None
            splits[key] = {s: load_split(features_dir, s, tok, mcfg.model.max_tokens, meta) for s in ("valid", "test")}
        data = splits[key]
        for name in ("valid", "test"):
            p = predict(model, data[name], bs, dev)
            scores = _score(p.pred, data[name].labels.numpy(), name, features_dir, path)
            per_seed[name].append(dict(scores))
            if name == "test":
                masks.append({"seed": seed, **p.filter_means()})
                tables.append(_prediction_table(data[name], seed, p))
        if cfg.evaluate.robustness:
            for m in ckpt["modalities"]:
                p = predict(model, data["test"], bs, dev, drop=m)
                robust.setdefault(m, []).append(_score(p.pred, data["test"].labels.numpy(), "test", features_dir, path))
        log.info("seed %d: test %s", seed, ", ".join(f"{k} {v:.4f}" for k, v in per_seed["test"][-1].items()))
    seeds = list(cfg.train.seeds)
    test = _with_seeds(metrics_lib.aggregate(per_seed["test"]), seeds)
    valid = _with_seeds(metrics_lib.aggregate(per_seed["valid"]), seeds)
    mods = [m for m in meta["modalities"] if all(m in s for s in masks)]
    mask_mean = {m: float(np.mean([s[m] for s in masks])) for m in mods}
    ddof = 1 if len(masks) > 1 else 0  # sample std over seeds, as metrics.aggregate
    mask_doc = {"mean": mask_mean, "std": {m: float(np.std([s[m] for s in masks], ddof=ddof)) for m in mods},
                "hard_keep_rate": dict(mask_mean) if hard and mask_mean else None, "per_seed": masks}
    robust_doc = {m: _with_seeds(metrics_lib.aggregate(v), seeds) for m, v in robust.items()}
    write_json(metrics_dir / "test.json", test)
    write_json(metrics_dir / "valid.json", valid)
    write_json(metrics_dir / "masks.json", mask_doc)
    write_json(metrics_dir / "robustness.json", robust_doc)
    table = pa.concat_tables(tables)
    atomic_write(predictions_path, lambda fh: pq.write_table(table, fh))
    return {"test": test, "valid": valid, "masks": mask_doc, "robustness": robust_doc}


"""The training loop of one seed (paper section 4.1): epochs, validation, early stopping, checkpoints.

Model selection and early stopping use the valid split only. ``last.pt`` (with both
optimizers) and ``best.pt`` are written atomically after every epoch; a rerun resumes from
``last.pt`` when it was written with the same parameters (:mod:`m3sa.training.resume`). A
finished seed keeps ``best.pt`` (what prediction needs) and ``state.json`` (its training
state), and ``last.pt`` is deleted. Every
epoch starts from a torch seed derived from (seed, epoch, rank), so a run resumed at an epoch
boundary ends exactly where the uninterrupted run ends (on CPU, where kernels are
deterministic). Under ``torchrun`` each rank trains on its share of every global batch, valid
metrics use the predictions gathered from all ranks, and rank 0 writes checkpoints and curves.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from m3sa import metrics as metrics_lib
from m3sa.checkpoint import make_checkpoint, save_checkpoint, write_json
from m3sa.collapse import collapse_reason
from m3sa.config import Config
from m3sa.data.dataset import BucketBatchSampler, SplitData, iterate_batches
from m3sa.errors import TrainingError
from m3sa.evaluation import Predictions, predict
from m3sa.runtime import Runtime, distributed_runtime, run_settings, uses_buckets
from m3sa.training.curves import Curves
from m3sa.training.data import TrainingData, load_training_data
from m3sa.training.optim import lr_factor, set_lr
from m3sa.training.resume import TrainState, finished_state, kept, resume_digest, try_resume, write_finished
from m3sa.training.step import LossTally, NonFiniteLoss, Trainer

log = logging.getLogger(__name__)

# Loss statistics stay on the device during an epoch; they are read (with the non-finite
# check) every READ_EVERY batches and at the end of the epoch, never inside a step.
READ_EVERY = 25


def train_all(cfg: Config, features_dir: str | Path | None = None, models_dir: str | Path | None = None,
              live_dir: str | Path | None = None, metrics_path: str | Path | None = None) -> dict[str, Any]:
    """Train every seed of ``cfg.train.seeds`` (data tokenised once); optionally write metrics/train.json.

    Returns ``{"select_metric", "device", "world_size", "collapsed_seeds", "mean": {...}, "per_seed": [...]}``.
    """
    with distributed_runtime(cfg) as rt:
        with run_settings(cfg, rt):
            data = load_training_data(cfg, features_dir)
            per_seed = [train(cfg, features_dir, models_dir, live_dir, s, data=data, runtime=rt) for s in cfg.train.seeds]
        collapsed = [r["seed"] for r in per_seed if r.get("collapsed")]
        if collapsed:
            log.warning("%d of %d seeds collapsed to a constant predictor: %s (metrics/train.json "
                        "per_seed.collapsed says why)", len(collapsed), len(per_seed), collapsed)
        summary: dict[str, Any] = {"select_metric": cfg.train.select_metric, "device": str(rt.device),
                                   "world_size": rt.world, "collapsed_seeds": collapsed, "mean": {},
                                   "per_seed": per_seed}
        for key in ("best_valid", "best_epoch", "epochs_run", "wall_s", "samples_per_s", "data_wait_share"):
            vals = [r[key] for r in per_seed if r[key] is not None]
            summary["mean"][key] = float(np.mean(vals)) if vals else None
        if metrics_path is not None and rt.main:
            write_json(metrics_path, summary)
        return summary


def train(cfg: Config, features_dir: str | Path | None = None, models_dir: str | Path | None = None,
          live_dir: str | Path | None = None, seed: int | None = None, *, data: TrainingData | None = None,
          runtime: Runtime | None = None) -> dict[str, Any]:
    """Train one seed; write ``models_dir/seed_<seed>/{best,last}.pt`` and dvclive curves.

    Paths default to ``cfg.data.features_dir``, ``cfg.train.models_dir`` and
    ``cfg.train.live_dir``; ``seed`` to the first of ``cfg.train.seeds``. Returns the
    seed's summary (best epoch, best valid metric, epochs run, wall time, samples/s).
    """
    if runtime is None:
        with distributed_runtime(cfg) as rt:
            return train(cfg, features_dir, models_dir, live_dir, seed, data=data, runtime=rt)
    rt = runtime
    seed = cfg.train.seeds[0] if seed is None else seed
    seed_dir = Path(models_dir or cfg.train.models_dir) / f"seed_{seed}"
    live_dir = Path(live_dir or cfg.train.live_dir)
    devices = [rt.device.index or 0] if rt.device.type == "cuda" else []
    with run_settings(cfg, rt), torch.random.fork_rng(devices=devices):
        data = data or load_training_data(cfg, features_dir)
        return _train_seed(cfg, data, seed_dir, live_dir, seed, rt)


def hold_unused_rows(model: torch.nn.Module, cfg: Config, data: TrainingData) -> int | None:
    """Hold the text encoder's word-table rows that the train split never uses constant
    (:mod:`m3sa.models.used_rows`: the same values, fewer gradients and Adam moments); the
    number of rows that train, or None when the full table trains (no text, or weight decay,
    which moves every row)."""
    from m3sa.models.used_rows import restrict_word_embeddings

    if cfg.train.weight_decay != 0 or "input_ids" not in data.train.fields:
        return None
    rows = restrict_word_embeddings(model, data.train.fields["input_ids"].values)
    log.info("text encoder: %d word rows occur in the train split and are trained; the others "
             "never get a gradient and are held constant", rows)
    return rows


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Torch seed of one epoch of one rank (independent streams, reproducible on resume)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _train_seed(cfg: Config, data: TrainingData, seed_dir: Path, live_dir: Path, seed: int, rt: Runtime) -> dict[str, Any]:
    from m3sa.models import build_model

    wall0 = time.perf_counter()
    tc = cfg.train
    torch.manual_seed(seed)
    model = build_model(cfg.model, data.dims, data.modalities)
    hold_unused_rows(model, cfg, data)
    trainer = Trainer(cfg, model, rt)
    last_path, best_path, state_path = seed_dir / "last.pt", seed_dir / "best.pt", seed_dir / "state.json"
    state = try_resume(last_path, cfg, seed, trainer, data.meta) or finished_state(state_path, cfg, seed, data.meta)
    resumed_from = state.epoch if state is not None else 0
    state = state or TrainState()
    sampler = BucketBatchSampler(data.train.lengths, tc.batch_size, seed=seed, num_replicas=rt.world, rank=rt.rank)
    curves = Curves(live_dir, seed, state.history) if rt.main else None
    common = dict(seed=seed, cfg=cfg, dims=data.dims, modalities=data.modalities,
                  standardization=data.meta.get("standardization", {}))
    log.info("seed %d: %s on %s x%d, %d parameters, two-phase %s", seed, cfg.model.name, rt.device, rt.world,
             sum(p.numel() for p in model.parameters()), trainer.two_phase)
    try:
        for epoch in range(state.epoch + 1, tc.epochs + 1):
            if state.stopped:
                break
            model.set_epoch(epoch - 1)
            torch.manual_seed(epoch_seed(seed, epoch, rt.rank))
            sampler.set_epoch(epoch)
            try:
                means, seen, secs, wait, nb = _run_epoch(trainer, data.train, sampler, cfg, rt, epoch,
                                                         f"seed {seed} epoch {epoch}/{tc.epochs}")
            except NonFiniteLoss as err:
                raise TrainingError(
                    f"seed {seed}, epoch {epoch}, batch {err.batch or '?'}: the {err.what} loss is "
                    f"{err.value}; training stopped and {kept(state, last_path)}. Lower train.lr / train.lr_text "
                    f"or check the features in {cfg.data.features_dir} for extreme values"
                ) from None
            state.train_s += secs
            state.wait_s += wait
            state.samples += seen

            valid = _validate(trainer, data.valid, cfg, rt, seed, epoch, lambda: kept(state, last_path))
            scores = dict(metrics_lib.regression_metrics(valid.pred, data.valid.labels.numpy()))
            value = float(scores[tc.select_metric])
            improved = state.record(epoch, value, tc.select_metric, scores, tc.patience)
            filters = valid.filter_means()
            state.history.append({"epoch": epoch, "train": means, "valid": scores, "filter": filters,
                                  "pred_std": float(np.std(valid.pred)), "label_std": float(data.valid.labels.numpy().std()),
                                  "samples_per_s": seen / secs if secs else None})
            log.info("seed %d epoch %d: loss %.4f, valid %s %.4f%s, %.0f samples/s, %d batches", seed, epoch,
                     means.get("loss_multimodal", float("nan")), tc.select_metric, value,
                     " (best)" if improved else "", seen / secs if secs else 0.0, nb)

            if rt.main:
                if curves is not None:
                    curves.log(epoch, means, scores, filters)
                state_dict = trainer.core.state_dict()
                if improved:
                    save_checkpoint(best_path, make_checkpoint(
                        model_state=state_dict, epoch=epoch, best_valid=value, config_digest=cfg.digest(),
                        select_metric=tc.select_metric, valid_metrics=scores, **common))
                save_checkpoint(last_path, make_checkpoint(
                    model_state=state_dict, epoch=epoch, best_valid=state.best, config_digest=cfg.digest(),
                    resume_digest=resume_digest(cfg, data.meta), optimizer_state=trainer.optimizer_state(),
                    train_state=state.to_dict(), select_metric=tc.select_metric, **common))
            rt.barrier()
            if state.stopped:
                log.info("seed %d: early stop after epoch %d (no %s improvement for %d epochs; best epoch %d)",
                         seed, epoch, tc.select_metric, state.bad_epochs, state.best_epoch)
        if rt.main:  # finished: the small state.json replaces the resume state
            write_finished(state_path, state, cfg, seed, data.meta)
            last_path.unlink(missing_ok=True)
    finally:
        if curves is not None:
            curves.close()
    return _summary(state, seed, cfg, rt, resumed_from, time.perf_counter() - wall0)


def _run_epoch(trainer: Trainer, data: SplitData, sampler: BucketBatchSampler, cfg: Config, rt: Runtime,
               epoch: int, desc: str) -> tuple[dict[str, float], int, float, float, int]:
    """One pass over the train split (1-based ``epoch``, for the lr schedule):
    (mean losses, samples, seconds, seconds waiting for data, batches)."""
    tc = cfg.train
    batches = sampler.global_batches()
    if tc.max_batches:
        batches = batches[: tc.max_batches]
    total = tc.epochs * len(batches)
    local = [b[rt.rank::rt.world] for b in batches]
    tally = LossTally()
    wait = 0.0
    start = time.perf_counter()
    bar = tqdm(total=len(batches), desc=desc, unit="batch", disable=True if not rt.main else None,
               leave=False, dynamic_ncols=True)
    it = iterate_batches(data, local, rt.device, buckets=uses_buckets(tc.padding, rt.device))
    try:
        for i, gbatch in enumerate(batches):
            t = time.perf_counter()
            batch = next(it)
            wait += time.perf_counter() - t
            set_lr([trainer.opt_all, trainer.opt_uni],
                   lr_factor((epoch - 1) * len(batches) + i, total, tc.schedule, tc.warmup_ratio))
            tally.add(trainer.step(batch, share=len(local[i]) / len(gbatch)), len(gbatch), i + 1)
            bar.update(1)
            if (i + 1) % READ_EVERY == 0:  # the only reads from the device: every READ_EVERY batches
                tally.check()
                bar.set_postfix(loss=f"{tally.current('loss_multimodal'):.3f}")
        tally.check()
    finally:
        bar.close()
    return tally.means(), tally.seen, time.perf_counter() - start, wait, len(batches)


def _validate(trainer: Trainer, valid: SplitData, cfg: Config, rt: Runtime, seed: int, epoch: int,
              kept: Callable[[], str]) -> Predictions:
    """The valid split's predictions (all ranks'); NaN/inf predictions stop the run, saying what
    ``kept()`` says survives."""
    out = predict(trainer.core, valid, cfg.evaluate.batch_size, rt.device, world=rt.world, rank=rt.rank,
                  gather=rt.gather)
    bad = int(out.pred.size - np.isfinite(out.pred).sum())
    if bad:
        raise TrainingError(
            f"seed {seed}, epoch {epoch}: {bad} of {out.pred.size} valid predictions are NaN/inf "
            f"although the training loss is finite; training stopped and {kept()}. Lower train.lr / "
            f"train.lr_text or check {cfg.data.features_dir}/valid.parquet for extreme values")
    return out


def _summary(state: TrainState, seed: int, cfg: Config, rt: Runtime, resumed_from: int, wall_s: float) -> dict[str, Any]:
    """The seed's result, with the collapse check (m3sa.collapse) on its selected epoch."""
    best = state.best_entry()
    collapsed = None
    if best:
        collapsed = collapse_reason(best.get("pred_std", float("nan")), best.get("label_std", float("nan")),
                                    float(best["valid"]["corr"]), best["filter"])
    if collapsed:
        log.warning("seed %d COLLAPSED at its selected epoch %d: %s", seed, state.best_epoch, collapsed)
    return {
        "seed": seed,
        "collapsed": collapsed,
        "best_epoch": state.best_epoch,
        "best_valid": state.best,
        "select_metric": cfg.train.select_metric,
        "best_valid_metrics": state.best_metrics,
        "best_filter": best.get("filter", {}),
        "curve": [{"epoch": h["epoch"], "valid_mae": h["valid"].get("mae"), "valid_corr": h["valid"].get("corr"),
                   "filter": h["filter"]} for h in state.history],
        "epochs_run": state.epoch,
        "resumed_from_epoch": resumed_from,
        "stopped_early": state.stopped,
        "wall_s": wall_s,
        "train_s": state.train_s,
        "samples_per_s": state.samples / state.train_s if state.train_s else None,
        "data_wait_share": state.wait_s / state.train_s if state.train_s else None,
        "device": str(rt.device),
        "world_size": rt.world,
    }

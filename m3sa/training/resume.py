"""What a seed's run carries across epochs and restarts: its state and the resume check.

While a seed trains, ``last.pt`` holds the model, both optimizers and the
:class:`TrainState`; a rerun resumes from it only when it was written for the same seed with
the same :func:`resume_digest` (the parameters that shape training and the data's identity),
so new params or new data train afresh. When the seed finishes, its state goes to the small
``state.json`` beside ``best.pt`` and ``last.pt`` is deleted: resume state (five times the
size of the weights) never outlives the run, so it never enters DVC's cache. A rerun with
the same digest finds the seed done in ``state.json``; a finished seed can not be extended
(more ``train.epochs``) and trains again from scratch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from m3sa.checkpoint import load_checkpoint, write_json
from m3sa.config import Config
from m3sa.errors import CheckpointError

if TYPE_CHECKING:
    from m3sa.training.step import Trainer

log = logging.getLogger(__name__)

LOWER_IS_BETTER = frozenset({"mae"})
# train.* keys that may change between a run and its resumption (they do not change what an
# epoch computes): the list of seeds, the number of epochs (extends a run) and output folders.
RESUME_FREE_KEYS = ("seeds", "epochs", "models_dir", "live_dir")


@dataclass
class TrainState:
    """Early-stopping and bookkeeping state, saved in last.pt."""

    epoch: int = 0  # completed epochs
    best: float | None = None
    best_epoch: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    train_s: float = 0.0
    wait_s: float = 0.0
    samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainState:
        """The state :meth:`to_dict` wrote (keys it does not know are ignored)."""
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})

    def record(self, epoch: int, value: float, metric: str, scores: dict[str, float], patience: int) -> bool:
        """Mark ``epoch`` done with valid ``value`` on ``metric``; True when it is the best so far.
        After ``patience`` epochs without improvement the run is marked stopped (early stopping)."""
        self.epoch = epoch
        if improved(value, self.best, metric):
            self.best, self.best_epoch, self.best_metrics, self.bad_epochs = value, epoch, scores, 0
            return True
        self.bad_epochs += 1
        self.stopped = self.bad_epochs >= patience
        return False

    def best_entry(self) -> dict[str, Any]:
        """The history entry of the selected epoch ({} before the first)."""
        return next((h for h in self.history if h["epoch"] == self.best_epoch), {})


def improved(value: float, best: float | None, metric: str) -> bool:
    """Whether ``value`` beats ``best`` on ``metric`` (a non-finite value never does)."""
    if best is None:
        return True
    if not math.isfinite(value):
        return False
    if not math.isfinite(best):
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def data_identity(meta: dict[str, Any]) -> dict[str, Any]:
    """What identifies the training data in ``meta.json``: input file hashes, counts, statistics."""
    return {k: meta.get(k) for k in ("inputs", "counts", "dims", "modalities", "standardization", "align")}


def resume_digest(cfg: Config, meta: dict[str, Any] | None = None) -> str:
    """Digest a resumed run must share with ``last.pt``: the parameters that shape training
    (``data``, ``model``, ``train`` less RESUME_FREE_KEYS, ``evaluate.batch_size`` of the
    validation passes; not ``report`` or the rest of ``evaluate``) and the data's identity,
    so new data with unchanged params trains afresh."""
    raw = cfg.to_dict()
    raw.pop("report", None)
    raw["evaluate"] = {"batch_size": raw["evaluate"]["batch_size"]}
    for key in RESUME_FREE_KEYS:
        if not (key == "epochs" and cfg.train.schedule != "constant"):  # a decaying lr depends on the epochs
            raw["train"].pop(key, None)
    if meta is not None:
        raw["data_identity"] = data_identity(meta)
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:12]


def try_resume(path: Path, cfg: Config, seed: int, trainer: Trainer, meta: dict[str, Any]) -> TrainState | None:
    """Load ``path`` into ``trainer`` and return its state, or None (with the reason logged)."""
    if not path.exists():
        return None
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as err:
        log.warning("%s; seed %d starts from scratch", err, seed)
        return None
    digest = resume_digest(cfg, meta)
    if ckpt.get("seed") != seed or ckpt.get("resume_digest") != digest or "optimizer_state" not in ckpt:
        why = (f"it belongs to seed {ckpt.get('seed')}" if ckpt.get("seed") != seed else
               "it was written with other parameters or data" if ckpt.get("resume_digest") != digest else
               "it holds no optimizer state")
        log.warning("%s: not resuming, %s; seed %d starts from scratch", path, why, seed)
        return None
    trainer.core.load_state_dict(ckpt["model_state"])
    trainer.load_optimizer_state(ckpt["optimizer_state"])
    state = TrainState.from_dict(ckpt["train_state"])
    log.info("seed %d: resuming from %s after epoch %d", seed, path, state.epoch)
    return state


STATE_FORMAT = "m3sa-train-state"


def write_finished(path: Path, state: TrainState, cfg: Config, seed: int, meta: dict[str, Any]) -> None:
    """Record a finished seed in ``path`` (``state.json``): its state and resume digest."""
    write_json(path, {"format": STATE_FORMAT, "version": 1, "seed": seed,
                      "resume_digest": resume_digest(cfg, meta), "train_state": state.to_dict()})


def finished_state(path: Path, cfg: Config, seed: int, meta: dict[str, Any]) -> TrainState | None:
    """The state of a seed ``path`` records as finished with these params and data, or None
    (absent, unreadable, another seed or digest, or fewer epochs than ``train.epochs`` asks)."""
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        if not (isinstance(raw, dict) and raw.get("format") == STATE_FORMAT and raw.get("seed") == seed):
            raise ValueError("not a finished seed's state")
        if raw.get("resume_digest") != resume_digest(cfg, meta):
            log.warning("%s: the finished seed was written with other parameters or data; seed %d starts "
                        "from scratch", path, seed)
            return None
        state = TrainState.from_dict(raw["train_state"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("%s: unreadable (%s); seed %d starts from scratch", path, err, seed)
        return None
    if state.best is None and state.epoch:  # NaN/inf were written as null
        state.best = float("nan")
    if not (state.stopped or state.epoch >= cfg.train.epochs):
        log.info("%s: seed %d finished after %d epochs; train.epochs is now %d and a finished seed keeps no "
                 "optimizer state, so it trains again from scratch", path, seed, state.epoch, cfg.train.epochs)
        return None
    return state


def kept(state: TrainState, last_path: Path) -> str:
    """What survives a stopped run, for its error message."""
    if state.epoch and last_path.exists():
        return f"the last good checkpoint {last_path} (epoch {state.epoch}) is kept"
    return "no checkpoint was written yet"

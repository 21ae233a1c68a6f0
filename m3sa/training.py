"""Training loop (paper section 4.1), one plain function per seed.

For each batch of a two-phase model (M3SA):

1. forward; the (modulated) unimodal losses l_m2 (eq. 10-13) -> backward -> step an
   optimizer that holds only ``model.unimodal_parameters()`` (F_l, F_a, F_v and the shared
   head, by owning module);
2. a fresh forward through the updated networks; the multimodal loss l_M = |y - y_M|
   (eq. 9) plus ``train.penalty_weight`` times the soft filter's penalty (eq. 19) ->
   backward -> step an optimizer over the whole model.

Single-phase systems (late fusion and the other baselines) run step 2 only. Model
selection and early stopping use the valid split only. ``last.pt`` (with both optimizers)
and ``best.pt`` are written atomically after every epoch; a rerun resumes from
``last.pt`` when it was written with the same parameters. Every epoch starts from a torch
seed derived from (seed, epoch, rank), so a run resumed at an epoch boundary ends exactly
where the uninterrupted run ends (on CPU, where kernels are deterministic).

Under ``torchrun`` (``WORLD_SIZE > 1``) the model runs in DistributedDataParallel (gloo on
CPU, NCCL on CUDA); each global batch of ``train.batch_size`` samples is split between
the ranks and the local losses are weighted so that the averaged gradient equals the
single-process one; valid metrics use the predictions gathered from all ranks; rank 0
writes checkpoints, curves and metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from m3sa import losses
from m3sa import metrics as metrics_lib
from m3sa.atomic import os_reason
from m3sa.collapse import collapse_reason
from m3sa.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint, write_json
from m3sa.config import Config, TrainConfig
from m3sa.data.dataset import BucketBatchSampler, SplitData, iterate_batches, load_split, load_tokenizer, read_meta
from m3sa.errors import CheckpointError, OutputError, TrainingError
from m3sa.evaluation import Predictions, autocast_for, predict, resolve_device

log = logging.getLogger(__name__)

LOWER_IS_BETTER = frozenset({"mae"})
# train.* keys that may change between a run and its resumption (they do not change what an
# epoch computes): the list of seeds, the number of epochs (extends a run) and output folders.
RESUME_FREE_KEYS = ("seeds", "epochs", "models_dir", "live_dir")


# ---------------------------------------------------------------- runtime


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: device, number of processes and its rank."""

    device: torch.device
    world: int = 1
    rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """All ranks' ``obj`` (a picklable Python object), in rank order."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum_(self, t: Tensor) -> Tensor:
        """In-place sum of ``t`` over ranks."""
        if self.distributed:
            dist.all_reduce(t)
        return t


@contextmanager
def distributed_runtime(cfg: Config) -> Iterator[Runtime]:
    """The runtime of this process; joins (and later leaves) the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(cfg.train.device, local_rank)
    if world <= 1:
        yield Runtime(device)
        return
    own = not dist.is_initialized()
    if own:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield Runtime(device, dist.get_world_size(), dist.get_rank())
    finally:
        if own:
            dist.destroy_process_group()


@contextmanager
def torch_settings(num_threads: int, deterministic: bool) -> Iterator[None]:
    """Thread count and deterministic kernels for the duration of a run, restored afterwards."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=det_warn)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Torch seed of one epoch of one rank (independent streams, reproducible on resume)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


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


# ---------------------------------------------------------------- optimisation


def build_optimizer(cfg: TrainConfig, params: list[nn.Parameter], text_params: list[nn.Parameter],
                    fused: bool = False, decay: bool = True) -> torch.optim.Optimizer:
    """Adam/AdamW over ``params``: the text encoder's at ``train.lr_text``, the rest at ``train.lr``.

    Groups are formed by owning module (``text_params`` comes from ``model.text_parameters()``),
    never by position in the parameter list. ``decay=False`` leaves out ``train.weight_decay``
    (the unimodal phase's optimizer: its parameters are decayed once per batch, by the other).
    """
    text_ids = {id(p) for p in text_params}
    seen: set[int] = set()
    groups: dict[str, list[nn.Parameter]] = {"rest": [], "text": []}
    for p in params:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            groups["text" if id(p) in text_ids else "rest"].append(p)
    lrs = {"rest": cfg.lr, "text": cfg.lr_text}
    param_groups = [{"params": ps, "lr": lrs[name], "base_lr": lrs[name], "name": name}
                    for name, ps in groups.items() if ps]
    if not param_groups:
        raise TrainingError("the model has no trainable parameters")
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    kwargs: dict[str, Any] = {"weight_decay": cfg.weight_decay if decay else 0.0}
    if fused:
        kwargs["fused"] = True
    return cls(param_groups, **kwargs)


def lr_factor(step: int, total: int, schedule: str, warmup_ratio: float) -> float:
    """Share of the base learning rate at 0-based ``step`` of ``total``.

    ``constant``: 1. ``linear``: linear warm-up from 1/(warm-up steps) to 1 over the first
    ``warmup_ratio`` of the steps, then linear decay to 0 at ``total`` (as commonly used to
    fine-tune BERT-family encoders).
    """
    if schedule == "constant" or total <= 0:
        return 1.0
    warm = int(round(warmup_ratio * total))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def set_lr(optimizers: list[torch.optim.Optimizer | None], factor: float) -> None:
    """Set every param group's lr to ``factor`` times its ``base_lr``."""
    for opt in optimizers:
        if opt is not None:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * factor


class _PhaseModule(nn.Module):
    """Returns only the tensors each phase's loss uses, so DDP knows which parameters get gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor], phase: int) -> tuple[Tensor, ...]:
        out = self.model(batch)
        if phase == 1:
            mods = [m for m in self.model.modalities if m in out.unimodal]
            return (torch.stack([out.unimodal[m] for m in mods]),)  # (M, B)
        return out.pred, out.penalty, out.expected_l0.to(out.pred.device)


class NonFiniteLoss(Exception):
    """Internal: a loss was NaN or infinite (turned into TrainingError with its context)."""

    def __init__(self, what: str, value: float) -> None:
        super().__init__(what)
        self.what = what
        self.value = value


class Trainer:
    """Holds the model, its DDP/compiled wrapper and the two optimizers; runs one batch."""

    def __init__(self, cfg: Config, model: nn.Module, rt: Runtime) -> None:
        self.cfg = cfg
        self.rt = rt
        self.core = model.to(rt.device)
        self.modalities = tuple(m for m in model.modalities)
        net: nn.Module = _PhaseModule(self.core)
        if rt.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                      find_unused_parameters=True)
        if cfg.train.compile:
            net = torch.compile(net, dynamic=True)  # batches vary in length: one graph with symbolic shapes
        self.net = net
        fused = rt.device.type in ("cpu", "cuda")  # fused Adam kernels: about 5x faster than the loop on CPU
        text = list(model.text_parameters())
        self.all_params = [p for p in model.parameters() if p.requires_grad]
        self.opt_all = build_optimizer(cfg.train, self.all_params, text, fused)
        self.two_phase = bool(model.two_phase)
        self.uni_params: list[nn.Parameter] = []
        self.opt_uni: torch.optim.Optimizer | None = None
        if self.two_phase:
            seen: set[int] = set()
            for ps in model.unimodal_parameters().values():
                for p in ps:
                    if p.requires_grad and id(p) not in seen:
                        seen.add(id(p))
                        self.uni_params.append(p)
            self.opt_uni = build_optimizer(cfg.train, self.uni_params, text, fused, decay=False)

    # -- one batch ---------------------------------------------------------------

    def _backward_step(self, loss: Tensor, weight: float, params: list[nn.Parameter], opt: torch.optim.Optimizer) -> None:
        (loss * weight).backward()
        if self.cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
        opt.step()

    def _reduce(self, values: Tensor, share: float) -> list[float]:
        """Batch means over all ranks: local means weighted by the local share of the batch."""
        v = self.rt.sum_(values.detach().float() * share)
        return v.tolist()

    def _global_mean(self, w: Tensor) -> Tensor:
        """(M, B) -> (M,) mean over the global batch (all ranks' shares), without gradient."""
        total = self.rt.sum_(torch.cat([w.detach().float().sum(dim=1), w.new_tensor([w.shape[1]], dtype=torch.float32)]))
        return (total[:-1] / total[-1]).to(w.dtype)

    def unimodal_step(self, batch: dict[str, Tensor], share: float = 1.0) -> dict[str, float]:
        """Phase 1: the (modulated) unimodal losses update the unimodal networks only."""
        assert self.opt_uni is not None
        self.opt_uni.zero_grad(set_to_none=True)
        label = batch["label"].float()
        with autocast_for(self.rt.device):
            (preds,) = self.net(batch, 1)  # (M, B)
        per_sample = (preds.float() - label[None]).abs()  # (M, B): l_m (eq. 5)
        loss = losses.unimodal_objective(per_sample, self.cfg.model,
                                         self._global_mean if self.rt.distributed else None)
        vals = self._reduce(torch.cat([loss.reshape(1), per_sample.mean(1)]), share)
        if not math.isfinite(vals[0]):
            raise NonFiniteLoss("unimodal", vals[0])
        self._backward_step(loss, share * self.rt.world, self.uni_params, self.opt_uni)
        mods = self.modalities[: per_sample.shape[0]]
        return {"loss_unimodal": vals[0], **{f"loss_{m}": v for m, v in zip(mods, vals[1:])}}

    def multimodal_step(self, batch: dict[str, Tensor], share: float = 1.0) -> dict[str, float]:
        """Phase 2: l_M (+ weighted penalty l_p and sparsity prior) updates the whole model."""
        self.opt_all.zero_grad(set_to_none=True)
        with autocast_for(self.rt.device):
            pred, penalty, l0 = self.net(batch, 2)
        lm = losses.multimodal_loss(pred, batch["label"])
        penalty, l0 = penalty.float().to(lm.device), l0.float().to(lm.device)
        loss = lm + self.cfg.train.penalty_weight * penalty + self.cfg.train.sparsity_weight * l0
        vals = self._reduce(torch.stack([loss, lm, penalty, l0]), share)
        if not math.isfinite(vals[0]):
            raise NonFiniteLoss("multimodal", vals[0])
        self._backward_step(loss, share * self.rt.world, self.all_params, self.opt_all)
        return {"loss": vals[0], "loss_multimodal": vals[1], "penalty": vals[2], "expected_l0": vals[3]}

    def step(self, batch: dict[str, Tensor], share: float = 1.0) -> dict[str, float]:
        """Both phases on one batch; ``share`` = local batch size / global batch size."""
        self.net.train()
        stats: dict[str, float] = {}
        if self.two_phase:
            stats.update(self.unimodal_step(batch, share))
        stats.update(self.multimodal_step(batch, share))
        return stats

    # -- state -------------------------------------------------------------------

    def optimizer_state(self) -> dict[str, Any]:
        return {"multimodal": self.opt_all.state_dict(),
                "unimodal": self.opt_uni.state_dict() if self.opt_uni is not None else None}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        self.opt_all.load_state_dict(state["multimodal"])
        if self.opt_uni is not None:
            if state.get("unimodal") is None:
                raise CheckpointError("last.pt has no unimodal optimizer state")
            self.opt_uni.load_state_dict(state["unimodal"])


# ---------------------------------------------------------------- data


@dataclass
class TrainingData:
    """meta.json and the tokenised train and valid splits (shared by all seeds)."""

    meta: dict[str, Any]
    train: SplitData
    valid: SplitData

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.meta["modalities"])

    @property
    def dims(self) -> dict[str, int]:
        return {m: int(d) for m, d in self.meta.get("dims", {}).items() if m in self.modalities}


def load_training_data(cfg: Config, features_dir: str | Path | None = None) -> TrainingData:
    """Read meta.json, tokenise the train and valid splits once."""
    features_dir = Path(features_dir or cfg.data.features_dir)
    meta = read_meta(features_dir)
    tok = load_tokenizer(cfg.model.text_encoder) if "language" in meta["modalities"] else None
    t0 = time.perf_counter()
    train = load_split(features_dir, "train", tok, cfg.model.max_tokens, meta)
    valid = load_split(features_dir, "valid", tok, cfg.model.max_tokens, meta)
    log.info("data: %d train / %d valid segments, modalities %s (%.1fs)", len(train), len(valid),
             ",".join(meta["modalities"]), time.perf_counter() - t0)
    if len(train) == 0 or len(valid) == 0:
        raise TrainingError(f"{features_dir}: the train and valid splits must not be empty "
                            f"(train {len(train)}, valid {len(valid)} segments)")
    return TrainingData(meta, train, valid)


# ---------------------------------------------------------------- one seed


@dataclass
class _State:
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


def _improved(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    if not math.isfinite(value):
        return False
    if not math.isfinite(best):
        return True
    return value < best if metric in LOWER_IS_BETTER else value > best


def _kept(state: _State, last_path: Path) -> str:
    """What survives a stopped run, for its error message."""
    if state.epoch and last_path.exists():
        return f"the last good checkpoint {last_path} (epoch {state.epoch}) is kept"
    return "no checkpoint was written yet"


def _try_resume(path: Path, cfg: Config, seed: int, trainer: Trainer, meta: dict[str, Any]) -> _State | None:
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
    state = _State(**{k: v for k, v in ckpt["train_state"].items() if k in _State.__dataclass_fields__})
    log.info("seed %d: resuming from %s after epoch %d", seed, path, state.epoch)
    return state


@contextmanager
def _curve_errors(folder: Path) -> Iterator[None]:
    """dvclive's write errors (read-only folder, full disk) as OutputError naming the folder.

    dvclive rewrites its files in place, so a failed write may leave one cut short; the
    folder is removed instead (a resumed run rebuilds it from last.pt's history).
    """
    try:
        yield
    except OSError as err:
        shutil.rmtree(folder, ignore_errors=True)
        raise OutputError(f"{folder}: cannot write the training curves ({os_reason(err)})") from None


def _log_epoch(live: Any, epoch: int, means: dict[str, float], scores: dict[str, float],
               filters: dict[str, float]) -> None:
    live.step = epoch - 1
    for k, v in means.items():
        live.log_metric(f"train/{k}", v)
    for k, v in scores.items():
        live.log_metric(f"valid/{k}", v)
    for m, v in filters.items():
        live.log_metric(f"valid/filter_{m}", v)
    live.next_step()


def _open_live(live_dir: Path, seed: int, history: list[dict[str, Any]]) -> Any:
    """Fresh dvclive curves, rewritten from the checkpoint's ``history`` on resume: a run killed
    (or out of disk) while writing them leaves no truncated file or repeated step behind."""
    from dvclive import Live

    with _curve_errors(live_dir / f"seed_{seed}"):
        live = Live(dir=str(live_dir / f"seed_{seed}"), resume=False, dvcyaml=False, save_dvc_exp=False,
                    report=None)
        for h in history:
            _log_epoch(live, h["epoch"], h["train"], h["valid"], h["filter"])
    return live


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
    sums: dict[str, float] = {}
    seen = 0
    wait = 0.0
    start = time.perf_counter()
    bar = tqdm(total=len(batches), desc=desc, unit="batch", disable=True if not rt.main else None,
               leave=False, dynamic_ncols=True)
    it = iterate_batches(data, local, rt.device)
    for i, gbatch in enumerate(batches):
        t = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - t
        set_lr([trainer.opt_all, trainer.opt_uni],
               lr_factor((epoch - 1) * len(batches) + i, total, tc.schedule, tc.warmup_ratio))
        try:
            stats = trainer.step(batch, share=len(local[i]) / len(gbatch))
        except NonFiniteLoss as err:
            bar.close()
            err.batch = i + 1  # type: ignore[attr-defined]
            raise
        n = len(gbatch)
        seen += n
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v * n
        bar.update(1)
        if i % 10 == 0:
            bar.set_postfix(loss=f"{stats['loss_multimodal']:.3f}")
    bar.close()
    return {k: v / max(seen, 1) for k, v in sums.items()}, seen, time.perf_counter() - start, wait, len(batches)


def _collapse_of(state: _State) -> str | None:
    """The collapse check (m3sa.collapse) on the selected epoch's valid outputs."""
    best = next((h for h in state.history if h["epoch"] == state.best_epoch), None)
    if best is None:
        return None
    return collapse_reason(best.get("pred_std", float("nan")), best.get("label_std", float("nan")),
                           float(best["valid"]["corr"]), best["filter"])


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
    models_dir = Path(models_dir or cfg.train.models_dir)
    live_dir = Path(live_dir or cfg.train.live_dir)
    threads = cfg.train.num_threads
    if threads == 0 and rt.distributed and rt.device.type == "cpu":
        threads = max(1, (os.cpu_count() or 1) // rt.world)
    devices = [rt.device.index or 0] if rt.device.type == "cuda" else []
    with torch_settings(threads, deterministic=rt.device.type == "cpu"), torch.random.fork_rng(devices=devices):
        data = data or load_training_data(cfg, features_dir)
        return _train_seed(cfg, data, models_dir / f"seed_{seed}", live_dir, seed, rt)


def _train_seed(cfg: Config, data: TrainingData, seed_dir: Path, live_dir: Path, seed: int, rt: Runtime) -> dict[str, Any]:
    from m3sa.models import build_model

    wall0 = time.perf_counter()
    tc = cfg.train
    torch.manual_seed(seed)
    model = build_model(cfg.model, data.dims, data.modalities)
    trainer = Trainer(cfg, model, rt)
    last_path, best_path = seed_dir / "last.pt", seed_dir / "best.pt"
    state = _try_resume(last_path, cfg, seed, trainer, data.meta)
    resumed_from = state.epoch if state is not None else 0
    state = state or _State()
    sampler = BucketBatchSampler(data.train.lengths, tc.batch_size, seed=seed, num_replicas=rt.world, rank=rt.rank)
    live = _open_live(live_dir, seed, state.history) if rt.main else None
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
                kept = _kept(state, last_path)
                raise TrainingError(
                    f"seed {seed}, epoch {epoch}, batch {getattr(err, 'batch', '?')}: the {err.what} loss is "
                    f"{err.value}; training stopped and {kept}. Lower train.lr / train.lr_text or check "
                    f"the features in {cfg.data.features_dir} for extreme values"
                ) from None
            state.train_s += secs
            state.wait_s += wait
            state.samples += seen
            valid: Predictions = predict(trainer.core, data.valid, cfg.evaluate.batch_size, rt.device,
                                         world=rt.world, rank=rt.rank, gather=rt.gather)
            bad = int(valid.pred.size - np.isfinite(valid.pred).sum())
            if bad:
                kept = _kept(state, last_path)
                raise TrainingError(
                    f"seed {seed}, epoch {epoch}: {bad} of {valid.pred.size} valid predictions are NaN/inf "
                    f"although the training loss is finite; training stopped and {kept}. Lower train.lr / "
                    f"train.lr_text or check {cfg.data.features_dir}/valid.parquet for extreme values")
            scores = dict(metrics_lib.regression_metrics(valid.pred, data.valid.labels.numpy()))
            value = float(scores[tc.select_metric])
            improved = _improved(value, state.best, tc.select_metric)
            if improved:
                state.best, state.best_epoch, state.best_metrics, state.bad_epochs = value, epoch, scores, 0
            else:
                state.bad_epochs += 1
                state.stopped = state.bad_epochs >= tc.patience
            state.epoch = epoch
            filters = valid.filter_means()
            state.history.append({"epoch": epoch, "train": means, "valid": scores, "filter": filters,
                                  "pred_std": float(np.std(valid.pred)), "label_std": float(data.valid.labels.numpy().std()),
                                  "samples_per_s": seen / secs if secs else None})
            log.info("seed %d epoch %d: loss %.4f, valid %s %.4f%s, %.0f samples/s, %d batches", seed, epoch,
                     means.get("loss_multimodal", float("nan")), tc.select_metric, value,
                     " (best)" if improved else "", seen / secs if secs else 0.0, nb)
            if rt.main:
                if live is not None:
                    with _curve_errors(live_dir / f"seed_{seed}"):
                        _log_epoch(live, epoch, means, scores, filters)
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
    finally:
        if live is not None:
            with _curve_errors(live_dir / f"seed_{seed}"):
                live.end()
    best = next((h for h in state.history if h["epoch"] == state.best_epoch), {})
    collapsed = _collapse_of(state)
    if collapsed:
        log.warning("seed %d COLLAPSED at its selected epoch %d: %s", seed, state.best_epoch, collapsed)
    return {
        "seed": seed,
        "collapsed": collapsed,
        "best_epoch": state.best_epoch,
        "best_valid": state.best,
        "select_metric": tc.select_metric,
        "best_valid_metrics": state.best_metrics,
        "best_filter": best.get("filter", {}),
        "curve": [{"epoch": h["epoch"], "valid_mae": h["valid"].get("mae"), "valid_corr": h["valid"].get("corr"),
                   "filter": h["filter"]} for h in state.history],
        "epochs_run": state.epoch,
        "resumed_from_epoch": resumed_from,
        "stopped_early": state.stopped,
        "wall_s": time.perf_counter() - wall0,
        "train_s": state.train_s,
        "samples_per_s": state.samples / state.train_s if state.train_s else None,
        "data_wait_share": state.wait_s / state.train_s if state.train_s else None,
        "device": str(rt.device),
        "world_size": rt.world,
    }


def train_all(cfg: Config, features_dir: str | Path | None = None, models_dir: str | Path | None = None,
              live_dir: str | Path | None = None, metrics_path: str | Path | None = None) -> dict[str, Any]:
    """Train every seed of ``cfg.train.seeds`` (data tokenised once); optionally write metrics/train.json.

    Returns ``{"select_metric", "device", "world_size", "mean": {...}, "per_seed": [...]}``.
    """
    with distributed_runtime(cfg) as rt:
        threads = cfg.train.num_threads
        if threads == 0 and rt.distributed and rt.device.type == "cpu":
            threads = max(1, (os.cpu_count() or 1) // rt.world)
        with torch_settings(threads, deterministic=rt.device.type == "cpu"):
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

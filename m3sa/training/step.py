"""One training step: the two-phase update of paper section 4.1.

For each batch of a two-phase model (M3SA):

1. **unimodal phase**: the unimodal forward ``model.unimodal`` (F_m and C only, so no filter
   noise or fusion dropout is drawn); the (modulated) unimodal losses l_m2 (eq. 10-13) over
   the unimodal predictions y_m = C(F_m(u_m)) (eq. 4-5) -> backward -> a step of an
   optimizer that holds only ``model.unimodal_parameters()`` (F_l, F_a, F_v and the shared
   head C, by owning module);
2. **multimodal phase**: a fresh forward through the updated networks; the multimodal loss
   l_M = |y - y_M| (eq. 9) plus ``train.penalty_weight`` times the soft filter's penalty l_p
   (eq. 19) plus ``train.sparsity_weight`` times the expected-L0 prior -> backward -> a step
   of an optimizer over the whole model.

Single-phase systems (late fusion and the other baselines) run phase 2 only. Under DDP each
rank holds ``share`` of the global batch; its loss is weighted by ``share * world`` so that
the averaged gradient equals the single-process one.

A step never waits for the device: it returns its loss statistics as one detached tensor on
the device (:class:`StepStats`), with no ``.item()``, ``.tolist()`` or finiteness test on the
host. The training loop sums them on the device and reads them, with a record of the first
batch whose loss was NaN or infinite, every few batches and at the end of an epoch
(:class:`LossTally`), so the CPU keeps queueing kernels while the GPU runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from m3sa import losses
from m3sa.config import Config
from m3sa.errors import CheckpointError
from m3sa.models.used_rows import fit_row_moments
from m3sa.runtime import Runtime, autocast_for, uses_buckets
from m3sa.training.optim import build_optimizer, unique_trainable


class NonFiniteLoss(Exception):
    """A loss was NaN or infinite (the loop turns it into a TrainingError with its context)."""

    def __init__(self, what: str, value: float, batch: int | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.value = value
        self.batch = batch


@dataclass(frozen=True)
class StepStats:
    """One step's loss statistics: ``values[i]`` is the batch mean of ``names[i]``, a detached
    float tensor on the device; ``checked`` pairs each phase's name with the index of its
    objective in ``values`` (the value whose finiteness the loop checks)."""

    names: tuple[str, ...]
    values: Tensor  # (len(names),)
    checked: tuple[tuple[str, int], ...]

    @staticmethod
    def join(parts: list[StepStats]) -> StepStats:
        """The phases' statistics of one step as one (their indices shifted)."""
        checked, offset = [], 0
        for p in parts:
            checked += [(what, i + offset) for what, i in p.checked]
            offset += len(p.names)
        return StepStats(tuple(n for p in parts for n in p.names), torch.cat([p.values for p in parts]),
                         tuple(checked))


class LossTally:
    """Sums of :class:`StepStats` weighted by batch size, and the first non-finite objective,
    kept on the device; :meth:`check` and :meth:`means` are the only reads to the host."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.checked: tuple[tuple[str, int], ...] = ()
        self.sums: Tensor | None = None
        self.seen = 0
        self.first_bad: Tensor | None = None  # [batch number (0 = none), value, phase index]
        self._objectives: Tensor | None = None  # indices of the phases' objectives in the values

    def add(self, stats: StepStats, n: int, batch: int) -> None:
        """Add batch number ``batch`` (1-based) of ``n`` samples; no host synchronisation."""
        values = stats.values.double()  # float64 sums: the same as summing the values as Python floats
        if self.sums is None:
            self.names, self.checked = stats.names, stats.checked
            self.sums = torch.zeros_like(values)
            self.first_bad = torch.zeros(3, dtype=values.dtype, device=values.device)
            self._objectives = torch.tensor([i for _, i in self.checked], device=values.device)
        assert self.first_bad is not None
        self.sums += values * n
        self.seen += n
        objectives = values.index_select(0, self._objectives)  # (phases,)
        bad = ~torch.isfinite(objectives)
        phase = torch.argmax(bad.to(values.dtype))  # the first phase that went non-finite
        record = torch.stack([torch.full_like(objectives[0], float(batch)), objectives[phase], phase.to(values.dtype)])
        self.first_bad = torch.where(bad.any() & (self.first_bad[0] == 0), record, self.first_bad)

    def check(self) -> None:
        """Raise :class:`NonFiniteLoss` for the first batch whose objective was NaN or infinite."""
        if self.first_bad is None:
            return
        batch, value, phase = self.first_bad.tolist()
        if batch:
            raise NonFiniteLoss(self.checked[int(phase)][0], value, int(batch))

    def means(self) -> dict[str, float]:
        """Sample-weighted means of every statistic so far ({} before the first batch)."""
        if self.sums is None:
            return {}
        return dict(zip(self.names, (self.sums / max(self.seen, 1)).tolist()))

    def current(self, name: str) -> float:
        """The running mean of one statistic (for a progress bar)."""
        return self.means().get(name, float("nan"))


class Trainer:
    """The model, its DDP/compiled wrapper and the two optimizers; :meth:`step` runs one batch."""

    def __init__(self, cfg: Config, model: nn.Module, rt: Runtime) -> None:
        self.cfg = cfg
        self.rt = rt
        self.core = model.to(rt.device)
        self.two_phase = bool(model.two_phase)
        self.net = _wrap(_PhaseModule(self.core), cfg, rt)
        fused = rt.device.type in ("cpu", "cuda")  # fused Adam kernels: about 5x faster than the loop on CPU
        text = list(model.text_parameters())
        self.all_params = unique_trainable(model.parameters())
        self.opt_all = build_optimizer(cfg.train, self.all_params, text, fused)
        self.uni_params: list[nn.Parameter] = []
        self.opt_uni: torch.optim.Optimizer | None = None
        if self.two_phase:
            self.uni_params = unique_trainable(p for ps in model.unimodal_parameters().values() for p in ps)
            self.opt_uni = build_optimizer(cfg.train, self.uni_params, text, fused, decay=False)

    def step(self, batch: dict[str, Tensor], share: float = 1.0) -> StepStats:
        """Both phases on one batch; ``share`` = local batch size / global batch size."""
        self.net.train()
        parts = [self.unimodal_step(batch, share)] if self.two_phase else []
        parts.append(self.multimodal_step(batch, share))
        return StepStats.join(parts)

    def unimodal_step(self, batch: dict[str, Tensor], share: float = 1.0) -> StepStats:
        """Phase 1: the (modulated) unimodal losses (eq. 10-13) update F_m and C only."""
        assert self.opt_uni is not None
        self.opt_uni.zero_grad(set_to_none=True)
        with autocast_for(self.rt.device):
            (preds,) = self.net(batch, 1)  # (M, B): y_m, eq. 5
        per_sample = (preds.float() - batch["label"].float()[None]).abs()  # (M, B): l_m
        global_mean = self._global_mean if self.rt.distributed else None
        loss = losses.unimodal_objective(per_sample, self.cfg.model, global_mean)  # eq. 10-13
        vals = self._reduce(torch.cat([loss.reshape(1), per_sample.mean(1)]), share)
        self._backward_step(loss, share, self.uni_params, self.opt_uni)
        return StepStats(("loss_unimodal", *(f"loss_{m}" for m in self.core.modalities)), vals, (("unimodal", 0),))

    def multimodal_step(self, batch: dict[str, Tensor], share: float = 1.0) -> StepStats:
        """Phase 2: l_M (eq. 9) + weighted l_p (eq. 19) + weighted sparsity prior update the whole model."""
        self.opt_all.zero_grad(set_to_none=True)
        with autocast_for(self.rt.device):
            pred, penalty, l0 = self.net(batch, 2)
        lm = losses.multimodal_loss(pred, batch["label"])
        penalty, l0 = penalty.float().to(lm.device), l0.float().to(lm.device)
        loss = lm + self.cfg.train.penalty_weight * penalty + self.cfg.train.sparsity_weight * l0
        vals = self._reduce(torch.stack([loss, lm, penalty, l0]), share)
        self._backward_step(loss, share, self.all_params, self.opt_all)
        return StepStats(("loss", "loss_multimodal", "penalty", "expected_l0"), vals, (("multimodal", 0),))

    # -- helpers -----------------------------------------------------------------

    def _backward_step(self, loss: Tensor, share: float, params: list[nn.Parameter],
                       opt: torch.optim.Optimizer) -> None:
        (loss * (share * self.rt.world)).backward()
        if self.cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(params, self.cfg.train.grad_clip)
        opt.step()

    def _reduce(self, values: Tensor, share: float) -> Tensor:
        """Batch means over all ranks (on the device): local means weighted by the local share."""
        return self.rt.sum_(values.detach().float() * share)

    def _global_mean(self, w: Tensor) -> Tensor:
        """(M, B) -> (M,) mean over the global batch (all ranks' shares), without gradient."""
        total = self.rt.sum_(torch.cat([w.detach().float().sum(dim=1), w.new_tensor([w.shape[1]], dtype=torch.float32)]))
        return (total[:-1] / total[-1]).to(w.dtype)

    # -- state -------------------------------------------------------------------

    def optimizer_state(self) -> dict[str, Any]:
        return {"multimodal": self.opt_all.state_dict(),
                "unimodal": self.opt_uni.state_dict() if self.opt_uni is not None else None}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        """Load both optimizers' state (one written for a full word table is fitted to the used rows)."""
        self.opt_all.load_state_dict(fit_row_moments(state["multimodal"], _flat(self.opt_all), self.core))
        if self.opt_uni is not None:
            if state.get("unimodal") is None:
                raise CheckpointError("last.pt has no unimodal optimizer state")
            self.opt_uni.load_state_dict(fit_row_moments(state["unimodal"], _flat(self.opt_uni), self.core))


def _flat(opt: torch.optim.Optimizer) -> list[nn.Parameter]:
    """An optimizer's parameters in the order its state dict numbers them."""
    return [p for group in opt.param_groups for p in group["params"]]


class _PhaseModule(nn.Module):
    """Returns only the tensors each phase's loss uses, so DDP knows which parameters get gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor], phase: int) -> tuple[Tensor, ...]:
        if phase == 1:
            preds = self.model.unimodal(batch)  # y_m, eq. 4-5: F_m and C only
            return (torch.stack([preds[m] for m in self.model.modalities]),)  # (M, B)
        out = self.model(batch)
        return out.pred, out.penalty, out.expected_l0.to(out.pred.device)


def _wrap(net: nn.Module, cfg: Config, rt: Runtime) -> nn.Module:
    """``net`` in DistributedDataParallel under DDP, compiled with ``train.compile``."""
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
                  find_unused_parameters=True)
    if cfg.train.compile:
        # bucketed padding: a graph per static shape; otherwise one graph with symbolic shapes
        static = uses_buckets(cfg.train.padding, rt.device)
        net = torch.compile(net, dynamic=not static, mode=cfg.train.compile_mode)
    return net

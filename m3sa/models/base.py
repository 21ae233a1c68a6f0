"""The model API every system implements (docs/architecture.md, "Model API").

A model maps a batch (dict of tensors built by :mod:`m3sa.data.dataset`) to a
:class:`ModelOutput`. The training loop only talks to this interface, so a baseline is
added by writing one module with a builder and one line in
:data:`m3sa.models.REGISTRY`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from m3sa.config import MODALITIES
from m3sa.errors import ModelError

Batch = dict[str, Tensor]


@dataclass
class ModelOutput:
    """What a forward pass returns.

    pred: (B,) fused prediction y_M (eq. 9).
    unimodal: modality -> (B,) unimodal prediction y_m = C(x_m) (eq. 5); empty for systems
        without unimodal heads.
    filter_values: modality -> (B,) share of x_m kept by the modality filter (soft: s_m[0],
        eq. 20; hard: s_m in {0, 1}, eq. 21); empty without a filter.
    penalty: scalar soft-filter penalty l_p (eq. 19), 0 when unused.
    expected_l0: scalar mean probability that the filter keeps a modality (the sparsity
        prior's term, weighted by ``train.sparsity_weight``), 0 without a filter.
    """

    pred: Tensor
    unimodal: dict[str, Tensor] = field(default_factory=dict)
    filter_values: dict[str, Tensor] = field(default_factory=dict)
    penalty: Tensor = field(default_factory=lambda: torch.zeros(()))
    expected_l0: Tensor = field(default_factory=lambda: torch.zeros(()))


class BaseModel(nn.Module):
    """Common interface. Subclasses implement :meth:`forward`.

    Attributes:
        modalities: the modalities the model consumes, in a fixed order.
        two_phase: True when the training loop must run the (modulated) unimodal update
            before the multimodal one (paper section 4.1).
    """

    two_phase: bool = False

    def __init__(self, modalities: tuple[str, ...]) -> None:
        super().__init__()
        self.modalities = tuple(modalities)

    def forward(self, batch: Batch, drop: str | None = None) -> ModelOutput:  # pragma: no cover
        raise NotImplementedError

    def unimodal(self, batch: Batch) -> dict[str, Tensor]:
        """The unimodal predictions y_m = C(F_m(u_m)) alone (eq. 4-5), for the unimodal phase:
        nothing else of the model runs. Only two-phase models have them."""
        raise ModelError(f"{type(self).__name__} has no unimodal predictions (it is trained in one phase)")

    def unimodal_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters updated by the unimodal phase, keyed by owning module."""
        return {}

    def text_parameters(self) -> list[nn.Parameter]:
        """Parameters of the pretrained text encoder (trained with ``train.lr_text``)."""
        return []

    def set_epoch(self, epoch: int) -> None:
        """Hook called by the training loop before each epoch (0-based)."""

    def check_drop(self, drop: str | None) -> None:
        """Raise :class:`ModelError` unless ``drop`` is None or one of the model's modalities."""
        if drop is not None and drop not in self.modalities:
            raise ModelError(
                f"cannot drop modality '{drop}': the model uses {', '.join(self.modalities)}"
            )


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def check_inputs(dims: dict[str, int], modalities: tuple[str, ...], minimum: int) -> None:
    """Raise :class:`ModelError` unless ``modalities`` are known, distinct, >= ``minimum``
    of them, with a feature width in ``dims`` for each non-language one."""
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ModelError(f"unknown modality '{unknown[0]}'; known: {', '.join(MODALITIES)}")
    if len(set(modalities)) != len(modalities):
        raise ModelError(f"modalities listed twice: {list(modalities)}")
    if len(modalities) < minimum:
        raise ModelError(
            f"this model needs at least {minimum} modalities, the data has {list(modalities)}; "
            "use model.name=text_only for text alone"
        )
    for m in modalities:
        if m != "language" and (m not in dims or int(dims[m]) < 1):
            raise ModelError(f"no feature width for modality '{m}' in meta.json dims {dims}")

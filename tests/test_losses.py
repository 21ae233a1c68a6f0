"""Modulation loss (eq. 10-13), penalty (eq. 19) and gradient routing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from m3sa.losses import (
    modulated_loss,
    modulation_weights,
    multimodal_loss,
    soft_penalty,
    unimodal_losses,
    unimodal_objective,
)
from m3sa.models import build_model

pytestmark = pytest.mark.usefixtures("single_thread")


def test_three_modalities_hand_computed():
    # l = (0.5, 1, 2): sum 1/l = 3.5, alpha = 3 / 3.5 = 6/7
    losses = torch.tensor([[0.5], [1.0], [2.0]], dtype=torch.float64)
    w = modulation_weights(losses, eps=0.0)
    expected = torch.tensor([[12 / 7], [6 / 7], [3 / 7]], dtype=torch.float64)  # alpha * (1*2, 0.5*2, 0.5*1)
    torch.testing.assert_close(w, expected)


def test_two_modalities_hand_computed():
    # l = (1, 3): alpha = 2 / (1 + 1/3) = 1.5; w = (1.5 * 3, 1.5 * 1)
    losses = torch.tensor([[1.0, 0.2], [3.0, 0.2]], dtype=torch.float64)
    w = modulation_weights(losses, eps=0.0)
    # second sample: equal losses 0.2 -> alpha = 0.2, w = 0.2 * 0.2
    torch.testing.assert_close(w, torch.tensor([[4.5, 0.04], [1.5, 0.04]], dtype=torch.float64))


def test_design_note_scale():
    # three modalities at l = 0.3: w = 0.3 * 0.3^2 = 0.027
    w = modulation_weights(torch.full((3, 5), 0.3), eps=0.0)
    torch.testing.assert_close(w, torch.full((3, 5), 0.027))


def test_weights_carry_no_gradient():
    losses = torch.tensor([[0.5, 1.0], [1.0, 2.0], [2.0, 0.1]], requires_grad=True)
    w = modulation_weights(losses)
    assert not w.requires_grad and w.grad_fn is None
    assert w.shape == losses.shape


def test_zero_losses_give_finite_weights():
    losses = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    w = modulation_weights(losses, eps=1e-6)
    assert torch.isfinite(w).all()
    # first sample: the modality with zero loss keeps the product of the others, times a
    # harmonic mean of order eps; the others get 0
    assert w[1, 0] == 0 and w[2, 0] == 0 and w[0, 0] > 0
    assert torch.isfinite(modulated_loss(losses)).all()


def test_needs_two_modalities():
    with pytest.raises(ValueError, match="M >= 2"):
        modulation_weights(torch.ones(1, 4))


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 5), st.integers(1, 6), st.integers(0, 10_000))
def test_weights_match_the_formula_for_any_m(m, b, seed):
    g = torch.Generator().manual_seed(seed)
    losses = torch.rand(m, b, generator=g, dtype=torch.float64) * 3 + 0.01
    w = modulation_weights(losses, eps=0.0)
    alpha = m / (1 / losses).sum(0)
    for k in range(m):
        others = torch.cat([losses[:k], losses[k + 1 :]]).prod(0)
        torch.testing.assert_close(w[k], alpha * others)
    # every modulated per-sample loss equals alpha * prod_k l_k
    torch.testing.assert_close(w * losses, (alpha * losses.prod(0)).expand(m, b))


def test_modulated_loss_reductions_and_batch_mean_norm():
    losses = torch.tensor([[0.5, 1.0], [1.0, 1.0], [2.0, 1.0]], dtype=torch.float64)
    per = modulated_loss(losses, eps=0.0, reduction="none")
    # sample 0: w*l = 6/7 for every modality; sample 1: alpha = 1, w = 1, w*l = 1
    torch.testing.assert_close(per, torch.full((3,), (6 / 7 + 1) / 2, dtype=torch.float64))
    assert modulated_loss(losses, eps=0.0).item() == pytest.approx(3 * (6 / 7 + 1) / 2)
    normed = modulated_loss(losses, norm="batch_mean", eps=0.0, reduction="none")
    # language: w = (12/7, 1), mean 19/14 -> w' = (24/19, 14/19); w'*l = (12/19, 14/19)
    assert normed[0].item() == pytest.approx((12 / 19 + 14 / 19) / 2)


def test_batch_mean_norm_uses_the_given_global_mean():
    """A distributed run normalises by the whole batch's mean weight: two halves scored with the
    global mean add up to the full batch's loss."""
    full = torch.tensor([[0.5, 1.0, 0.2, 2.0], [1.0, 1.0, 0.7, 0.1], [2.0, 1.0, 1.5, 0.4]], dtype=torch.float64)
    global_mean = modulation_weights(full, 0.0).mean(dim=1)  # (M,)
    whole = modulated_loss(full, norm="batch_mean", eps=0.0, reduction="none")
    halves = [modulated_loss(full[:, i:i + 2], norm="batch_mean", eps=0.0, reduction="none",
                             batch_mean=lambda w: global_mean) for i in (0, 2)]
    torch.testing.assert_close((halves[0] + halves[1]) / 2, whole)
    local = [modulated_loss(full[:, i:i + 2], norm="batch_mean", eps=0.0, reduction="none") for i in (0, 2)]
    assert not torch.allclose((local[0] + local[1]) / 2, whole)  # the local means would differ


def test_unimodal_objective_without_modulation_is_plain_sum(make_model_cfg):
    losses = torch.tensor([[0.5, 1.5], [1.0, 3.0]])
    plain = unimodal_objective(losses, make_model_cfg(modulation=False))
    assert plain.item() == pytest.approx(1.0 + 2.0)
    modulated = unimodal_objective(losses, make_model_cfg(modulation=True, modulation_eps=0.0))
    assert modulated.item() == pytest.approx(modulated_loss(losses, eps=0.0).item())


def test_soft_penalty_hand_computed():
    s = torch.tensor([[0.8, 0.2], [1.0, 0.0], [0.5, 0.5]])
    # 1 - 0.36, 1 - 1, 1 - 0
    assert soft_penalty(s).item() == pytest.approx((0.64 + 0.0 + 1.0) / 3)


def test_unimodal_and_multimodal_losses():
    label = torch.tensor([1.0, -1.0])
    stacked = unimodal_losses({"language": torch.tensor([0.5, -1.0]), "acoustic": torch.tensor([1.0, 1.0])}, label)
    torch.testing.assert_close(stacked, torch.tensor([[0.5, 0.0], [0.0, 2.0]]))
    assert multimodal_loss(torch.tensor([0.0, 0.0]), label).item() == pytest.approx(1.0)


def test_language_modulated_loss_routes_no_gradient_to_acoustic_network(make_model_cfg, make_batch):
    model = build_model(make_model_cfg(), {"acoustic": 74, "visual": 47}, ("language", "acoustic", "visual"))
    batch = make_batch()
    out = model(batch)
    losses = unimodal_losses(out.unimodal, batch["label"], model.modalities)
    per_modality = modulated_loss(losses, reduction="none")
    per_modality[0].backward()  # language
    groups = model.unimodal_parameters()
    for name in ("acoustic", "visual"):
        assert all(p.grad is None or not p.grad.any() for p in groups[name]), name
    assert any(p.grad is not None and p.grad.any() for p in groups["language"])
    assert any(p.grad is not None and p.grad.any() for p in groups["head"])
    # nor to the filter and fusion
    assert all(p.grad is None for p in model.filter.parameters())

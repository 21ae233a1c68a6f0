"""Modality filter module (eq. 14-21)."""

from __future__ import annotations

import math

import pytest
import torch

from m3sa.models.filter import ModalityFilter, hard_concrete, hard_keep_probability, initial_bias, soft_assign

pytestmark = pytest.mark.usefixtures("single_thread")

MODS = ("language", "acoustic", "visual")


def _inputs(cfg, n=5, seed=0, mods=MODS):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, cfg.dim, generator=g) for m in mods}


def test_softmax_with_lambda_hand_case():
    z = torch.tensor([[0.001, -0.001], [0.0, 0.0]])
    s = soft_assign(z, 1000.0)
    # softmax([1, -1]) = (sigmoid(2), sigmoid(-2))
    torch.testing.assert_close(s[0], torch.tensor([1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))]))
    torch.testing.assert_close(s[1], torch.tensor([0.5, 0.5]))
    # lambda = 1 barely moves off 0.5
    assert soft_assign(z, 1.0)[0, 0].item() == pytest.approx(1 / (1 + math.exp(-0.002)))


@pytest.mark.parametrize("shared", [True, False])
def test_soft_filter_mixes_with_baseline_and_reports_penalty(make_model_cfg, shared):
    cfg = make_model_cfg(filter="soft", soft_lambda=3.0, filter_shared=shared)
    filt = ModalityFilter(cfg, MODS)
    assert len(filt.fc.nets) == (1 if shared else 3)
    with torch.no_grad():
        filt.baseline.copy_(torch.randn(3, cfg.dim))
        for net in filt.fc.nets:
            net[-1].weight.normal_(std=0.5)
    xs = _inputs(cfg)
    out = filt(xs)
    x2, keep, penalty = out.x2, out.keep, out.penalty
    # recompute eq. 14-20 by hand from the module's layers
    x_cat = torch.cat([xs[m] for m in MODS], dim=1)
    xp = filt.mix(x_cat)
    shares = []
    for i, m in enumerate(MODS):
        z = filt.fc.nets[0 if shared else i](torch.relu(xp - xs[m]))
        s = torch.softmax(3.0 * z, dim=-1)
        torch.testing.assert_close(keep[m], s[:, 0])
        torch.testing.assert_close(x2[m], s[:, :1] * xs[m] + s[:, 1:] * filt.baseline[i])
        shares.append(s)
    expected = torch.stack([1 - (s[:, 1] - s[:, 0]) ** 2 for s in shares]).mean()
    torch.testing.assert_close(penalty, expected)
    # expected L0 of the soft gate: the mean share kept
    torch.testing.assert_close(out.expected_l0, torch.stack([s[:, 0] for s in shares]).mean())


def test_paper_recipe_starts_gates_at_one_half(make_model_cfg):
    cfg = make_model_cfg(filter="soft", filter_init_std=0.0).with_recipe("paper")
    assert (cfg.soft_lambda, cfg.filter_shared, cfg.filter_init_keep) == (1000.0, True, 0.5)
    out = ModalityFilter(cfg, MODS)(_inputs(cfg))
    for value in out.keep.values():
        torch.testing.assert_close(value, torch.full_like(value, 0.5))
    assert out.penalty.item() == pytest.approx(1.0)


@pytest.mark.parametrize("kind,keep", [("soft", 0.9), ("soft", 0.2), ("hard", 0.9), ("hard", 0.3)])
def test_initial_bias_sets_the_initial_keep(make_model_cfg, kind, keep):
    cfg = make_model_cfg(filter=kind, filter_init_std=0.0, filter_init_keep=keep, soft_lambda=7.0)
    filt = ModalityFilter(cfg, MODS).train()
    torch.manual_seed(0)
    out = filt(_inputs(cfg, n=4000))
    # zero last-layer weights: every logit is the bias, so the keep probability is `keep`
    assert out.expected_l0.item() == pytest.approx(keep, abs=1e-5)
    observed = torch.stack(list(out.keep.values())).mean().item()
    assert observed == pytest.approx(keep, abs=0.02 if kind == "hard" else 1e-5)
    # hand case: soft bias [logit(keep) / lambda, 0]
    if kind == "soft":
        assert initial_bias("soft", keep, 7.0, 2 / 3, -0.1, 1.1) == pytest.approx([math.log(keep / (1 - keep)) / 7, 0])


def test_lambda_warmup_starts_gates_at_init_keep(make_model_cfg):
    cfg = make_model_cfg(filter="soft", filter_init_std=0.0, filter_init_keep=0.9, soft_lambda=1000.0,
                         soft_lambda_warmup_epochs=3)
    out = ModalityFilter(cfg, MODS)(_inputs(cfg))
    assert out.expected_l0.item() == pytest.approx(0.9, abs=1e-5)


def test_filter_logits_are_float32_under_bf16_autocast(make_model_cfg):
    cfg = make_model_cfg(filter="soft", soft_lambda=1000.0)
    filt = ModalityFilter(cfg, MODS)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = filt.fc(torch.randn(3, 5, cfg.dim))
    assert z.dtype == torch.float32


def test_lambda_warmup(make_model_cfg):
    filt = ModalityFilter(make_model_cfg(soft_lambda=1000.0, soft_lambda_warmup_epochs=4), MODS)
    assert filt.lam.item() == 1.0
    filt.set_epoch(2)
    assert filt.lam.item() == pytest.approx(500.5)
    filt.set_epoch(9)
    assert filt.lam.item() == 1000.0
    assert "lam" in filt.state_dict()
    assert ModalityFilter(make_model_cfg(soft_lambda=1000.0), MODS).lam.item() == 1000.0


def test_hard_concrete_values_are_binary_with_nonzero_straight_through_gradient():
    torch.manual_seed(0)
    z = torch.randn(1000, requires_grad=True)
    s = hard_concrete(z, 2 / 3, -0.1, 1.1, training=True)
    assert set(s.detach().unique().tolist()) <= {0.0, 1.0}
    s.sum().backward()
    assert (z.grad != 0).sum() > 100


def test_straight_through_gradient_hand_value():
    z = torch.tensor([0.3], requires_grad=True)
    s = hard_concrete(z, 2 / 3, -0.1, 1.1, training=True, u=torch.tensor([0.5]))
    assert s.item() == 1.0  # s_bar = 1.2 * sigmoid(0.45) - 0.1 = 0.632 > 0.5
    s.sum().backward()
    sh = 1 / (1 + math.exp(-0.45))
    assert z.grad.item() == pytest.approx(1.2 * sh * (1 - sh) / (2 / 3), rel=1e-5)


@pytest.mark.parametrize("z,gamma,zeta", [(0.3, -0.1, 1.5), (-0.8, -0.1, 1.1), (1.2, -0.2, 1.2)])
def test_keep_probability_matches_analytic(z, gamma, zeta):
    beta = 2 / 3
    g = torch.Generator().manual_seed(1)
    u = torch.rand(200_000, generator=g, dtype=torch.float64)
    s = hard_concrete(torch.full_like(u, z), beta, gamma, zeta, training=True, u=u)
    t = (0.5 - gamma) / (zeta - gamma)
    analytic = 1 / (1 + math.exp(-(z - beta * math.log(t / (1 - t)))))
    assert hard_keep_probability(z, beta, gamma, zeta) == pytest.approx(analytic)
    assert s.mean().item() == pytest.approx(analytic, abs=0.005)


def test_default_constants_give_sigmoid_keep_probability():
    assert hard_keep_probability(0.7, 2 / 3, -0.1, 1.1) == pytest.approx(1 / (1 + math.exp(-0.7)))


def test_hard_filter_is_deterministic_at_eval(make_model_cfg):
    torch.manual_seed(0)
    cfg = make_model_cfg(filter="hard", filter_init_std=1.0, filter_init_keep=0.5)
    filt = ModalityFilter(cfg, MODS).eval()
    xs = _inputs(cfg, n=64)
    o1, o2 = filt(xs), filt(xs)
    keep1, keep2 = o1.keep, o2.keep
    assert o1.penalty.item() == 0.0
    x = torch.stack([xs[k] for k in MODS])
    z = filt.fc(torch.relu(filt.mix(torch.cat([xs[k] for k in MODS], 1)).unsqueeze(0) - x)).squeeze(-1)
    for i, m in enumerate(MODS):
        torch.testing.assert_close(keep1[m], keep2[m])
        # u = 0.5 and the default constants: s = 1 iff z > 0
        torch.testing.assert_close(keep1[m], (z[i] > 0).float())
    assert 0 < torch.stack(list(keep1.values())).mean() < 1


def test_hard_filter_samples_in_training(make_model_cfg):
    cfg = make_model_cfg(filter="hard", filter_init_keep=0.5)
    filt = ModalityFilter(cfg, MODS).train()
    torch.manual_seed(0)
    keep = filt(_inputs(cfg, n=400)).keep
    values = torch.stack(list(keep.values()))
    assert set(values.unique().tolist()) == {0.0, 1.0}
    # near-zero initial logits: P(s = 1) is about sigmoid(0) = 0.5
    assert values.mean().item() == pytest.approx(0.5, abs=0.05)


def test_without_baseline_embedding_b_is_a_zero_buffer(make_model_cfg):
    filt = ModalityFilter(make_model_cfg(baseline_embedding=False), MODS)
    assert not any(p is filt.baseline for p in filt.parameters())
    assert not filt.baseline.any()
    assert "baseline" not in filt.state_dict()
    learned = ModalityFilter(make_model_cfg(baseline_embedding=True), MODS)
    assert any(p is learned.baseline for p in learned.parameters())


def test_baseline_embedding_receives_gradient(make_model_cfg):
    cfg = make_model_cfg(filter="soft", soft_lambda=1.0)
    filt = ModalityFilter(cfg, MODS)
    x2 = filt(_inputs(cfg)).x2
    sum(v.sum() for v in x2.values()).backward()
    assert filt.baseline.grad is not None and filt.baseline.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_drop_replaces_by_baseline(make_model_cfg, kind):
    cfg = make_model_cfg(filter=kind)
    filt = ModalityFilter(cfg, MODS).eval()
    with torch.no_grad():
        filt.baseline.copy_(torch.randn(3, cfg.dim))
    xs = _inputs(cfg)
    out = filt(xs, drop="acoustic")
    x2, keep = out.x2, out.keep
    assert not keep["acoustic"].any()
    torch.testing.assert_close(x2["acoustic"], filt.baseline[1].expand(5, -1))
    # the dropped modality's input does not reach any output
    xs_other = dict(xs, acoustic=torch.randn(5, cfg.dim) * 10)
    x2b = filt(xs_other, drop="acoustic").x2
    for m in MODS:
        torch.testing.assert_close(x2[m], x2b[m])
    x2c = filt({m: xs[m] for m in ("language", "visual")}, drop="acoustic").x2
    for m in MODS:
        torch.testing.assert_close(x2[m], x2c[m])


def test_two_modalities(make_model_cfg):
    cfg = make_model_cfg(filter="soft")
    filt = ModalityFilter(cfg, ("language", "acoustic"))
    assert filt.mix.in_features == 2 * cfg.dim
    out = filt(_inputs(cfg, mods=("language", "acoustic")))
    x2, keep, penalty = out.x2, out.keep, out.penalty
    assert set(x2) == set(keep) == {"language", "acoustic"}
    assert x2["language"].shape == (5, cfg.dim) and penalty.dim() == 0

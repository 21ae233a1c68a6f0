"""Fusion networks (appendix B): shapes, parameter counts, hand cases."""

from __future__ import annotations

import pytest
import torch

from m3sa.errors import ModelError
from m3sa.models.base import count_parameters
from m3sa.models.fusion import TensorFusion, build_fusion

pytestmark = pytest.mark.usefixtures("single_thread")

D, H = 4, 8


def _params(d: int, h: int, m: int) -> dict[str, int]:
    """Hand-computed parameter counts (weights + biases)."""
    pair_mlp = (2 * d * h + h) + (h * d + d)  # Linear(2d, h) + Linear(h, d)
    return {
        "add": 0,
        "concat": m * d * d + d,  # Linear(M d, d)
        "tensor": (d + 1) ** m * d + d,  # Linear((d+1)^M, d)
        "graph": (d + 1) + pair_mlp * (2 if m == 3 else 1),  # score Linear(d, 1), g1, g2 (M = 3)
    }


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("kind", ["add", "concat", "tensor", "graph"])
def test_shapes_and_parameter_counts(kind, m):
    fusion = build_fusion(kind, D, m, H)
    assert count_parameters(fusion) == _params(D, H, m)[kind]
    x = torch.randn(6, m, D, requires_grad=True)
    out = fusion(x)
    assert out.shape == (6, D)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_hand_counts_at_the_default_width():
    # d = 64, M = 3: concat 12,352; tensor 65^3 * 64 + 64 = 17,576,064
    assert count_parameters(build_fusion("concat", 64, 3, 64)) == 12_352
    assert count_parameters(build_fusion("tensor", 64, 3, 64)) == 17_576_064


def test_add_is_the_sum():
    x = torch.randn(3, 3, D)
    torch.testing.assert_close(build_fusion("add", D, 3, H)(x), x[:, 0] + x[:, 1] + x[:, 2])


def test_tensor_fusion_outer_product_hand_case():
    # d = 1, M = 2: [a, 1] (x) [b, 1] = [ab, a, b, 1]
    fusion = TensorFusion(1, 2)
    with torch.no_grad():
        fusion.fc.weight.copy_(torch.tensor([[1.0, 10.0, 100.0, 1000.0]]))
        fusion.fc.bias.zero_()
    x = torch.tensor([[[2.0], [3.0]]])  # (B=1, M=2, d=1)
    assert fusion(x).item() == pytest.approx(2 * 3 + 10 * 2 + 100 * 3 + 1000)


def test_tensor_fusion_three_way_keeps_every_subset():
    # d = 1, M = 3: 8 features = products of every subset of {a, b, c}
    fusion = TensorFusion(1, 3)
    captured = {}
    fusion.fc.register_forward_hook(lambda mod, inp, out: captured.update(z=inp[0]))
    fusion(torch.tensor([[[2.0], [3.0], [5.0]]]))
    assert sorted(captured["z"].flatten().tolist()) == sorted([30.0, 6.0, 10.0, 2.0, 15.0, 3.0, 5.0, 1.0])


def test_graph_fusion_limits_and_unknown_kind():
    with pytest.raises(ModelError, match="2 or 3 modalities"):
        build_fusion("graph", D, 4, H)
    with pytest.raises(ModelError, match="not allowed"):
        build_fusion("bilinear", D, 3, H)


def test_graph_fusion_depends_on_every_modality():
    fusion = build_fusion("graph", D, 3, H)
    x = torch.randn(2, 3, D, requires_grad=True)
    fusion(x).sum().backward()
    assert (x.grad.abs().sum(dim=(0, 2)) > 0).all()

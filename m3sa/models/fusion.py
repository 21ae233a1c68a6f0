"""Fusion networks F_M (paper appendix B, eq. 24-27). Input (B, M, d), output (B, d).

The output width is d so that the shared head C applies to the fused embedding.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from m3sa.errors import ModelError


class AddFusion(nn.Module):
    """x_M = sum_m x_m2 (eq. 24); no parameters."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sum(dim=1)  # (B, M, d) -> (B, d)


class ConcatFusion(nn.Module):
    """x_M = FC([x_1; ...; x_M]) with FC: M*d -> d (eq. 25)."""

    def __init__(self, dim: int, n_modalities: int) -> None:
        super().__init__()
        self.fc = nn.Linear(n_modalities * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))  # (B, M, d) -> (B, M*d) -> (B, d)


class TensorFusion(nn.Module):
    """Tensor fusion (Zadeh et al. 2017; eq. 26-27): x_m' = [x_m, 1], outer product over the
    M modalities, FC: (d+1)^M -> d."""

    def __init__(self, dim: int, n_modalities: int) -> None:
        super().__init__()
        self.fc = nn.Linear((dim + 1) ** n_modalities, dim)

    def forward(self, x: Tensor) -> Tensor:
        padded = F.pad(x, (0, 1), value=1.0)  # (B, M, d+1)
        prod = padded[:, 0]  # (B, d+1)
        for m in range(1, padded.shape[1]):
            prod = (prod.unsqueeze(-1) * padded[:, m].unsqueeze(1)).flatten(1)  # (B, (d+1)^(m+1))
        return self.fc(prod)  # (B, d)


def _pair_mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2 * dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, dim), nn.Tanh())


def _affinity(p: Tensor, q: Tensor) -> Tensor:
    """Similarity <softmax(p), softmax(q)> of two (B, d) embeddings, shape (B, 1)."""
    return (torch.softmax(p, dim=-1) * torch.softmax(q, dim=-1)).sum(dim=-1, keepdim=True)


class GraphFusion(nn.Module):
    """Graph fusion (Mai et al. 2020, graph fusion network), compact form for M in {2, 3}.

    Nodes: unimodal n_m = tanh(w . x_m + c) * x_m (the scalar is the node's attention score
    a_m); bimodal n_ij = tanh(alpha_ij * g1([x_i; x_j])) for each pair, with edge weights
    alpha = softmax over pairs of (a_i + a_j) / (<softmax x_i, softmax x_j> + 0.5) (similar
    modalities pass a smaller message); for M = 3, trimodal nodes from every pair of bimodal
    nodes and every bimodal node with its complementary unimodal one, weighted the same way
    (a bimodal side scores with its pair's r, a unimodal side with a_m and enters as x_m) and
    embedded by g2. g1, g2: MLP 2d -> hidden -> d with tanh. Output: the mean of all node
    embeddings (the paper's appendix B).
    """

    def __init__(self, dim: int, n_modalities: int, hidden: int) -> None:
        super().__init__()
        if n_modalities not in (2, 3):
            raise ModelError(f"model.fusion=graph supports 2 or 3 modalities, got {n_modalities}")
        self.n = n_modalities
        self.score = nn.Linear(dim, 1)
        self.g1 = _pair_mlp(dim, hidden)
        self.g2 = _pair_mlp(dim, hidden) if n_modalities == 3 else None
        self.pairs = list(itertools.combinations(range(n_modalities), 2))

    def forward(self, x: Tensor) -> Tensor:
        xs = list(x.unbind(dim=1))  # M x (B, d)
        a = [torch.tanh(self.score(v)) for v in xs]  # M x (B, 1)
        nodes = [a_m * v for a_m, v in zip(a, xs)]  # unimodal nodes
        g = [self.g1(torch.cat([xs[i], xs[j]], dim=-1)) for i, j in self.pairs]  # P x (B, d)
        r = [(a[i] + a[j]) / (_affinity(xs[i], xs[j]) + 0.5) for i, j in self.pairs]  # P x (B, 1)
        alpha = torch.softmax(torch.cat(r, dim=-1), dim=-1)  # (B, P)
        bimodal = [torch.tanh(alpha[:, k : k + 1] * g[k]) for k in range(len(self.pairs))]
        nodes += bimodal
        if self.g2 is not None:
            # (value, raw score, representation for the affinity) of each candidate's two parts
            parts = []
            for p, q in itertools.combinations(range(len(self.pairs)), 2):
                parts.append(((bimodal[p], r[p], g[p]), (bimodal[q], r[q], g[q])))
            for k, (i, j) in enumerate(self.pairs):
                (rest,) = set(range(self.n)) - {i, j}
                parts.append(((bimodal[k], r[k], g[k]), (xs[rest], a[rest], xs[rest])))
            r3 = [(sp + sq) / (_affinity(gp, gq) + 0.5) for (_, sp, gp), (_, sq, gq) in parts]
            beta = torch.softmax(torch.cat(r3, dim=-1), dim=-1)  # (B, 6)
            for k, ((vp, _, _), (vq, _, _)) in enumerate(parts):
                nodes.append(torch.tanh(beta[:, k : k + 1] * self.g2(torch.cat([vp, vq], dim=-1))))
        return torch.stack(nodes, dim=1).mean(dim=1)  # (B, n_nodes, d) -> (B, d)


def build_fusion(kind: str, dim: int, n_modalities: int, hidden: int) -> nn.Module:
    """F_M for ``model.fusion = kind`` over ``n_modalities`` d-wide embeddings."""
    if kind == "add":
        return AddFusion()
    if kind == "concat":
        return ConcatFusion(dim, n_modalities)
    if kind == "tensor":
        return TensorFusion(dim, n_modalities)
    if kind == "graph":
        return GraphFusion(dim, n_modalities, hidden)
    raise ModelError(f"model.fusion = {kind!r} is not allowed; choose one of: add, concat, tensor, graph")

"""The shared regression head C (paper eq. 5 and 9)."""

from __future__ import annotations

from torch import Tensor, nn


class RegressionHead(nn.Module):
    """C: MLP d -> hidden -> 1, shared by the unimodal embeddings and the fused one.

    Sharing C pushes unimodal and multimodal embeddings towards one distribution (section 3.2).
    """

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)  # (B, d) -> (B,)

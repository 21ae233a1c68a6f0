"""Per-feature standardisation of the frame modalities: train statistics, given statistics, applying them.

A :data:`Norm` maps each frame modality to its ``(mean (d,), std (d,))``, float64; meta.json's
``standardization`` stores it, and inference may pass it back (:func:`given_norm`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from m3sa.errors import DataError

Norm = dict[str, tuple[np.ndarray, np.ndarray]]  # modality -> (mean (d,), std (d,))


@dataclass
class RunningStats:
    """Per-feature count, mean and sum of squared deviations, merged batch by batch."""

    dim: int
    n: int = 0
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.mean = np.zeros(self.dim)
        self.m2 = np.zeros(self.dim)

    def update(self, x: np.ndarray) -> None:
        """Merge rows x (r, dim) (Chan, Golub & LeVeque's pairwise update)."""
        if not len(x):
            return
        x = x.astype(np.float64, copy=False)
        nb = len(x)
        mb = x.mean(axis=0)
        m2b = ((x - mb) ** 2).sum(axis=0)
        delta = mb - self.mean
        n = self.n + nb
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta ** 2 * (self.n * nb / n)
        self.n = n

    def std(self) -> np.ndarray:
        """Population std; 1 where a feature is constant (so it standardises to 0)."""
        if self.n == 0:
            return np.ones(self.dim)
        s = np.sqrt(self.m2 / self.n)
        return np.where(s > 1e-6, s, 1.0)


def stats_norm(stats: dict[str, RunningStats]) -> Norm:
    """The Norm of merged statistics."""
    return {m: (st.mean, st.std()) for m, st in stats.items()}


def identity_norm(dims: dict[str, int]) -> Norm:
    """Mean 0, std 1: leaves values as they are (only NaN rows become 0)."""
    return {m: (np.zeros(d), np.ones(d)) for m, d in dims.items()}


def given_norm(statistics: Mapping[str, Mapping[str, Sequence[float]]], dims: dict[str, int]) -> Norm:
    """``statistics`` (``{m: {"mean", "std"}}``) as a Norm, checked against the input's widths ``dims``."""
    norm: Norm = {}
    for m in dims:
        if m not in statistics:
            raise DataError(f"the given standardisation statistics have no '{m}' entry (they hold "
                            f"{', '.join(statistics) or 'none'}); the input has {m} features")
        mean = np.asarray(statistics[m]["mean"], dtype=np.float64)
        std = np.asarray(statistics[m]["std"], dtype=np.float64)
        if mean.shape != (dims[m],) or std.shape != (dims[m],):
            raise DataError(f"'{m}' features are {dims[m]}-d, but the given standardisation statistics "
                            f"are {mean.size}-d")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise DataError(f"the given standardisation statistics of '{m}' hold a non-finite mean or a "
                            "std <= 0")
        norm[m] = (mean, std)
    return norm


def normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std as float32; NaN rows (words without frames) become 0, the train mean."""
    z = (x - mean.astype(np.float32)) * (1.0 / std).astype(np.float32)  # float32 throughout
    z[np.isnan(z)] = 0.0
    return z

"""Numbers published in the M3SA paper, for side-by-side comparison only.

Everything here is copied from the paper (Tables 1-4, section 4.2.4) and is labelled as
published wherever it is shown. Accuracies and F1 are percentages as printed; MAE and
Corr as printed. The paper does not state which Acc2/F1 convention (non0 or has0, see
DESIGN section 4) its numbers use, so they are shown under "not stated".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

MOSI = "CMU-MOSI"
MOSEI = "CMU-MOSEI"


@dataclass(frozen=True)
class PublishedRow:
    """One row of a published results table.

    ``params`` holds the dotted parameter overrides (params.yaml keys) that reproduce the
    row's system in this project, so a run can be matched to its published counterpart;
    empty when the system is not part of this project.
    """

    system: str
    dataset: str
    source: str
    acc7: Optional[float]
    acc2: Optional[float]
    f1: Optional[float]
    mae: Optional[float]
    corr: Optional[float]
    params: dict[str, Any] = field(default_factory=dict)


def _rows(dataset: str, source: str, rows: list[tuple]) -> tuple[PublishedRow, ...]:
    return tuple(PublishedRow(name, dataset, source, *values, params=params)
                 for name, values, params in rows)


def _m3sa(filter: str, modulation: bool = True, baseline: bool | None = True, fusion: str = "add") -> dict[str, Any]:
    """Full parameter spec of an M3SA variant (``baseline`` None: irrelevant, no filter)."""
    spec: dict[str, Any] = {"model.name": "m3sa", "model.filter": filter, "model.modulation": modulation,
                            "model.fusion": fusion}
    if baseline is not None:
        spec["model.baseline_embedding"] = baseline
    return spec


_SOFT = _m3sa("soft")
_HARD = _m3sa("hard")

# Table 1: baselines and M3SA on CMU-MOSI.
TABLE1_MOSI = _rows(MOSI, "paper Table 1", [
    ("EF-LSTM", (31.6, 75.8, 75.6, 1.053, 0.613), {"model.name": "ef_lstm"}),
    ("LF-LSTM", (31.6, 76.4, 75.4, 1.037, 0.620), {"model.name": "lf_lstm"}),
    ("TFN", (32.2, 76.4, 76.3, 1.017, 0.604), {"model.name": "tfn"}),
    ("LMF", (30.6, 73.8, 73.7, 1.026, 0.602), {"model.name": "lmf"}),
    ("MFN", (32.1, 78.0, 76.0, 1.010, 0.635), {}),
    ("RAVEN", (33.8, 78.8, 76.9, 0.968, 0.667), {}),
    ("MULT", (33.6, 79.3, 78.3, 1.009, 0.667), {"model.name": "mult"}),
    ("QMF", (35.5, 79.7, 79.6, 0.915, 0.696), {}),
    ("MAG-BERT", (42.9, 83.5, 83.5, 0.790, 0.769), {"model.name": "mag_bert"}),
    ("M3SA (Hard)", (45.5, 85.3, 85.3, 0.730, 0.793), _HARD),
    ("M3SA (Soft)", (46.4, 85.7, 85.6, 0.714, 0.794), _SOFT),
])

# Table 2: baselines and M3SA on CMU-MOSEI (IMR reports no MAE/Corr).
TABLE2_MOSEI = _rows(MOSEI, "paper Table 2", [
    ("EF-LSTM", (46.7, 79.1, 78.8, 0.665, 0.621), {"model.name": "ef_lstm"}),
    ("LF-LSTM", (49.1, 79.4, 80.0, 0.625, 0.655), {"model.name": "lf_lstm"}),
    ("TFN", (49.8, 79.4, 79.7, 0.610, 0.671), {"model.name": "tfn"}),
    ("LMF", (50.0, 80.6, 81.0, 0.608, 0.677), {"model.name": "lmf"}),
    ("MFN", (49.1, 79.6, 80.6, 0.618, 0.670), {}),
    ("RAVEN", (50.2, 79.0, 79.4, 0.605, 0.680), {}),
    ("MULT", (48.2, 80.2, 80.5, 0.638, 0.659), {"model.name": "mult"}),
    ("IMR", (48.7, 80.6, 81.0, None, None), {}),
    ("QMF", (47.9, 80.7, 79.8, 0.640, 0.658), {}),
    ("MAG-BERT", (51.9, 85.0, 85.0, 0.602, 0.778), {"model.name": "mag_bert"}),
    ("M3SA (Hard)", (52.7, 85.6, 85.5, 0.587, 0.789), _HARD),
    ("M3SA (Soft)", (52.5, 85.2, 85.1, 0.599, 0.781), _SOFT),
])

# Table 3: ablations on CMU-MOSI. Without the filter module (W/O MFM) the soft and hard
# variants are the same model in this project (model.filter=none); both rows match it.
TABLE3_ABLATION_MOSI = _rows(MOSI, "paper Table 3", [
    ("M3SA (Hard) (W/O ML)", (44.9, 84.2, 84.2, 0.743, 0.786), _m3sa("hard", modulation=False)),
    ("M3SA (Soft) (W/O ML)", (46.2, 85.0, 84.9, 0.729, 0.794), _m3sa("soft", modulation=False)),
    ("M3SA (Hard) (W/O MFM)", (47.0, 84.8, 84.8, 0.725, 0.791), _m3sa("none", baseline=None)),
    ("M3SA (Soft) (W/O MFM)", (44.2, 83.9, 83.9, 0.737, 0.794), _m3sa("none", baseline=None)),
    ("M3SA (Hard) (W/O BE)", (46.1, 84.2, 84.2, 0.728, 0.788), _m3sa("hard", baseline=False)),
    ("M3SA (Soft) (W/O BE)", (46.1, 83.9, 83.9, 0.733, 0.794), _m3sa("soft", baseline=False)),
    ("M3SA (Hard)", (45.5, 85.3, 85.3, 0.730, 0.793), _HARD),
    ("M3SA (Soft)", (46.4, 85.7, 85.6, 0.714, 0.794), _SOFT),
])

# Table 4: fusion strategies on CMU-MOSI (addition is the default).
TABLE4_FUSION_MOSI = _rows(MOSI, "paper Table 4", [
    ("Concatenation+FC (Hard)", (48.0, 84.0, 83.9, 0.744, 0.783), _m3sa("hard", fusion="concat")),
    ("Addition (Hard)", (45.5, 85.3, 85.3, 0.730, 0.793), _m3sa("hard", fusion="add")),
    ("Tensor Fusion (Hard)", (43.1, 84.3, 84.3, 0.772, 0.786), _m3sa("hard", fusion="tensor")),
    ("Graph Fusion (Hard)", (45.7, 84.6, 84.6, 0.759, 0.772), _m3sa("hard", fusion="graph")),
    ("Concatenation+FC (Soft)", (45.4, 84.4, 84.4, 0.740, 0.790), _m3sa("soft", fusion="concat")),
    ("Addition (Soft)", (46.4, 85.7, 85.6, 0.714, 0.794), _m3sa("soft", fusion="add")),
    ("Tensor Fusion (Soft)", (43.8, 84.7, 84.7, 0.742, 0.787), _m3sa("soft", fusion="tensor")),
    ("Graph Fusion (Soft)", (46.6, 84.7, 84.6, 0.748, 0.775), _m3sa("soft", fusion="graph")),
])

# Section 4.2.4 / Figure 2: mean soft-filter value per modality on the CMU-MOSI test split.
FIGURE2_MEAN_MASK_MOSI: dict[str, float] = {"language": 0.998, "acoustic": 0.012, "visual": 0.088}


def results_table(dataset: str) -> tuple[PublishedRow, ...]:
    """Published Table 1 (``CMU-MOSI``) or Table 2 (``CMU-MOSEI``)."""
    if dataset == MOSI:
        return TABLE1_MOSI
    if dataset == MOSEI:
        return TABLE2_MOSEI
    raise KeyError(f"no published results table for dataset {dataset!r}; known: {MOSI}, {MOSEI}")


def matching_rows(rows: tuple[PublishedRow, ...], params: dict[str, Any]) -> list[PublishedRow]:
    """Rows whose ``params`` all agree with ``params`` (dotted keys, resolved values)."""
    return [r for r in rows if r.params and all(params.get(k) == v for k, v in r.params.items())]

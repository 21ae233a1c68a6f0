"""The paper's experiment grids as plain data: variant name -> parameter overrides.

Each override is one ``dvc exp run -S`` argument (same syntax as ``--set`` of a stage).
``GRIDS["table3"]`` is the ablation study (paper Table 3: without the modulation loss, the
modality filter module or the baseline embedding, each with the soft and the hard filter,
plus the full model); ``GRIDS["table4"]`` the fusion strategies (Table 4, appendix B) with
either filter. ``LABELS`` gives each variant's row label in the paper. Pure data: a report,
the docs and :mod:`pipelines.sweep` all read these two dicts.

Without the filter module (``model.filter=none``) the soft and hard settings coincide, so
the paper's two W/O MFM rows are one run here, ``wo-mfm``.
"""

from __future__ import annotations

TABLE3: dict[str, list[str]] = {
    "full-soft": ["model.filter=soft"],
    "full-hard": ["model.filter=hard"],
    "wo-ml-soft": ["model.filter=soft", "model.modulation=false"],
    "wo-ml-hard": ["model.filter=hard", "model.modulation=false"],
    "wo-mfm": ["model.filter=none"],
    "wo-be-soft": ["model.filter=soft", "model.baseline_embedding=false"],
    "wo-be-hard": ["model.filter=hard", "model.baseline_embedding=false"],
}

TABLE4: dict[str, list[str]] = {
    f"{fusion}-{filt}": [f"model.fusion={fusion}", f"model.filter={filt}"]
    for filt in ("soft", "hard")
    for fusion in ("add", "concat", "tensor", "graph")
}

from pipelines.table1 import LABELS as TABLE1_LABELS, TABLE1  # noqa: E402  (pure data too)

GRIDS: dict[str, dict[str, list[str]]] = {"table1": TABLE1, "table3": TABLE3, "table4": TABLE4}

LABELS: dict[str, str] = {
    "full-soft": "M3SA (Soft)",
    "full-hard": "M3SA (Hard)",
    "wo-ml-soft": "M3SA (Soft) (W/O ML)",
    "wo-ml-hard": "M3SA (Hard) (W/O ML)",
    "wo-mfm": "M3SA (Soft/Hard) (W/O MFM)",
    "wo-be-soft": "M3SA (Soft) (W/O BE)",
    "wo-be-hard": "M3SA (Hard) (W/O BE)",
    "add-soft": "Addition (Soft)",
    "add-hard": "Addition (Hard)",
    "concat-soft": "Concatenation+FC (Soft)",
    "concat-hard": "Concatenation+FC (Hard)",
    "tensor-soft": "Tensor Fusion (Soft)",
    "tensor-hard": "Tensor Fusion (Hard)",
    "graph-soft": "Graph Fusion (Soft)",
    "graph-hard": "Graph Fusion (Hard)",
}
LABELS.update(TABLE1_LABELS)

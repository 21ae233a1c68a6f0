"""The paper's Table 1 grid as plain data: system name -> parameter overrides.

Each override is one ``dvc exp run -S`` argument (same syntax as ``--set`` of a stage), in
the format of :mod:`pipelines.grids`. Every system runs through the same sample, extract,
train, evaluate and report stages; only ``model.name`` (and, for M3SA, the filter)
changes. ``late-fusion`` is the plain late-fusion model (M3SA's encoders, no modulation
loss, no filter), which the paper does not list but which separates M3SA's contribution
from its encoders. ``LABELS`` gives each system's row label in the paper's Table 1 (the
systems of :mod:`m3sa.report.published` carry the same names). Pure data.

Run: ``python benchmarks/table1_bench.py`` (stages in a temporary copy; see
docs/benchmarks-table1.md) or, as DVC experiments, ``pipelines.sweep.sweep(grid=TABLE1)``.
"""

from __future__ import annotations

TABLE1: dict[str, list[str]] = {
    "ef-lstm": ["model.name=ef_lstm"],
    "lf-lstm": ["model.name=lf_lstm"],
    "tfn": ["model.name=tfn"],
    "lmf": ["model.name=lmf"],
    "mult": ["model.name=mult"],
    "mag-bert": ["model.name=mag_bert"],
    "late-fusion": ["model.name=late_fusion"],
    "m3sa-hard": ["model.name=m3sa", "model.filter=hard"],
    "m3sa-soft": ["model.name=m3sa", "model.filter=soft"],
}

LABELS: dict[str, str] = {
    "ef-lstm": "EF-LSTM",
    "lf-lstm": "LF-LSTM",
    "tfn": "TFN",
    "lmf": "LMF",
    "mult": "MULT",
    "mag-bert": "MAG-BERT",
    "late-fusion": "Late fusion (M3SA encoders, no ML/MFM)",
    "m3sa-hard": "M3SA (Hard)",
    "m3sa-soft": "M3SA (Soft)",
}

"""Report figures, drawn with matplotlib's object API on the Agg canvas (no display, no
pyplot state). Each function returns PNG bytes."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from m3sa.report.stats import CLASSES_7

_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def to_png(fig: Figure, dpi: int) -> bytes:
    """Render ``fig`` to PNG bytes (no timestamp or software tag, so bytes are stable)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


@dataclass
class Series:
    label: str
    x: np.ndarray
    y: np.ndarray


@dataclass
class Panel:
    """One axes: ``kind`` is "line", "scatter" or "bar" (horizontal bars: x = value)."""

    title: str
    xlabel: str
    ylabel: str
    series: list[Series] = field(default_factory=list)
    kind: str = "line"


def panels_figure(panels: Sequence[Panel], dpi: int, ncols: int = 3) -> bytes:
    """A grid of panels, one colour per series label (shared across panels)."""
    n = len(panels)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    labels = sorted({s.label for p in panels for s in p.series}, key=str)
    color = {lab: _COLORS[i % len(_COLORS)] for i, lab in enumerate(labels)}
    for ax, panel in zip(axes.flat, panels):
        for s in panel.series:
            if panel.kind == "scatter":
                ax.scatter(s.x, s.y, s=6, alpha=0.5, color=color[s.label], label=s.label)
            elif panel.kind == "bar":
                cats = list(dict.fromkeys(str(c) for t in panel.series for c in t.y))  # categories, first-seen order
                k = panel.series.index(s)
                h = 0.8 / len(panel.series)
                pos = [cats.index(str(c)) + (k - (len(panel.series) - 1) / 2) * h for c in s.y]
                ax.barh(pos, s.x, height=h, color=color[s.label], label=s.label)
                ax.set_yticks(range(len(cats)), cats)
                ax.set_ylim(len(cats) - 0.5, -0.5)  # first category on top
            else:
                ax.plot(s.x, s.y, marker="o" if len(s.x) < 30 else None, ms=3, color=color[s.label], label=s.label)
        ax.set_title(panel.title, fontsize=10)
        if panel.kind == "line" and all(np.issubdtype(np.asarray(s.x).dtype, np.integer) for s in panel.series):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if panel.kind != "bar":
            ax.ticklabel_format(axis="y", useOffset=False)  # a flat curve reads 1.0, not 1e-7 + 1
        if 1 < len(panel.series) <= 10:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return to_png(fig, dpi)


MAX_CURVES = 24


def curves_figure(curves: dict[int, dict[str, pd.DataFrame]], dpi: int, max_panels: int = MAX_CURVES) -> bytes:
    """Training curves: one panel per logged metric (the first ``max_panels`` by name), one
    line per seed."""
    names = sorted({name for per_seed in curves.values() for name in per_seed})[:max_panels]
    panels = []
    for name in names:
        series = [Series(f"seed {seed}", df["step"].to_numpy(), df["value"].to_numpy())
                  for seed, per_metric in sorted(curves.items()) if (df := per_metric.get(name)) is not None]
        panels.append(Panel(name, "step (epoch)", name.rsplit("/", 1)[-1], series))
    return panels_figure(panels, dpi, ncols=3 if len(panels) <= 9 else 4)


def filter_figure(preds: pd.DataFrame, modalities: Sequence[str], dpi: int,
                  published_mean: Optional[dict[str, float]] = None) -> bytes:
    """Paper Figure 2: distribution of the filter value s_m (share of x_m kept, eq. 16) per
    modality on test, pooled over seeds; split into planted-informative and planted-noise
    segments when ``gt_<m>`` columns exist."""
    mods = [m for m in modalities if f"filter_{m}" in preds.columns]
    fig = Figure(figsize=(4.2 * len(mods), 3.3), layout="constrained")
    axes = fig.subplots(1, len(mods), squeeze=False)[0]
    bins = np.linspace(0.0, 1.0, 21)
    for ax, m in zip(axes, mods):
        s = pd.to_numeric(preds[f"filter_{m}"], errors="coerce")
        ok = s.notna().to_numpy()
        values = s.to_numpy(dtype=np.float64)[ok]
        gt_col = f"gt_{m}"
        if gt_col in preds.columns and preds[gt_col].notna().any():
            gt = preds[gt_col].to_numpy()[ok]
            known = pd.notna(gt)
            truth = gt[known].astype(bool)
            v = values[known]
            ax.hist([v[truth], v[~truth]], bins=bins, stacked=True, color=["#2ca02c", "#7f7f7f"],
                    label=["informative segments (planted)", "noise segments (planted)"])
        else:
            ax.hist(values, bins=bins, color="#1f77b4", label="test segments")
        mean = float(values.mean()) if values.size else float("nan")
        keep = float((values > 0.5).mean()) if values.size else float("nan")
        title = f"{m}: mean s {mean:.3f}"
        ax.axvline(mean, color="black", lw=1.2, label="this run's mean")
        if published_mean and m in published_mean:
            ax.axvline(published_mean[m], color="#d62728", ls="--", lw=1.2, label="published mean (CMU-MOSI)")
            title += f" (published {published_mean[m]:.3f})"
        ax.set_title(f"{title}\nkept (s > 0.5) in {keep:.1%} of segments", fontsize=9.5)
        ax.set_xlabel("filter value s (1 = modality kept)")
        ax.set_ylabel("test segments (all seeds)")
        ax.set_xlim(-0.02, 1.02)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8, frameon=False)
    return to_png(fig, dpi)


def scatter_figure(preds: pd.DataFrame, dpi: int) -> bytes:
    """Predicted vs true sentiment on test, one colour per seed."""
    fig = Figure(figsize=(5.2, 4.6), layout="constrained")
    ax = fig.subplots()
    for i, (seed, group) in enumerate(sorted(preds.groupby("seed"), key=lambda kv: kv[0])):
        ax.scatter(group["label"], group["pred"], s=7, alpha=0.45, color=_COLORS[i % len(_COLORS)],
                   label=f"seed {seed}")
    ax.plot([-3, 3], [-3, 3], color="black", lw=1, ls="--", label="y = x")
    ax.set_xlim(-3.3, 3.3)
    ax.set_ylim(-3.3, 3.3)
    ax.set_xlabel("true sentiment y")
    ax.set_ylabel("predicted y_M")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, markerscale=2)
    return to_png(fig, dpi)


def confusion_figure(counts: np.ndarray, dpi: int, labels: Optional[Sequence[str]] = None,
                     xlabel: str = "predicted class round(clip(y_M))", ylabel: str = "true class round(clip(y))") -> bytes:
    """Confusion matrix (rows = true class), colour = row share, text = count; the 7
    sentiment classes -3..3 unless ``labels`` are given."""
    labels = [str(c) for c in CLASSES_7] if labels is None else list(labels)
    k = len(labels)
    fig = Figure(figsize=(max(4.0, 1.6 + 0.55 * k), max(3.4, 1.2 + 0.5 * k)), layout="constrained")
    ax = fig.subplots()
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), c in np.ndenumerate(counts):
        ax.text(j, i, str(c), ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.6 else "black")
    ticks = np.arange(k)
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, label="share of the true class")
    return to_png(fig, dpi)

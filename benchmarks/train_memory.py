"""Where a training process's memory goes: resident set size after each stage of one seed.

    python benchmarks/train_memory.py [--features data/features] [--steps 5] [--set key=value ...]

Runs in this one process, in the order training does: imports (torch; the text encoder's
module; pyarrow and the training code of m3sa), ``load_training_data`` (the tokenised train
and valid splits), ``build_model``, the ``Trainer`` (its two optimizers), then ``--steps``
two-phase training steps. After each it prints RSS and peak RSS (VmRSS / VmHWM of
/proc/self/status, Linux) and the difference to the previous line, beside what the
numbers should be: the features on disk, the parameters, their gradients and the Adam
moments (two per parameter and optimizer; M3SA's unimodal optimizer holds its own for F_m
and C). Ratios are against the features' size on disk, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MIB = 2**20


def rss() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default=str(ROOT / "data" / "features"))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--glibc-default", action="store_true",
                    help="leave glibc's malloc as it is (no m3sa.runtime.return_freed_memory), for comparison")
    args = ap.parse_args(argv)
    rows: list[tuple[str, float, float, str]] = []

    def mark(what: str, expected: str = "") -> None:
        now, peak = rss()
        rows.append((what, now, peak, expected))
        prev = rows[-2][1] if len(rows) > 1 else 0.0
        print(f"{what:<34} rss {now:7.0f} MiB ({now - prev:+6.0f})   peak {peak:7.0f} MiB   {expected}", flush=True)

    mark("start")
    import torch  # noqa: F401

    mark("import torch")
    import m3sa.models.text  # noqa: F401  (the BERT module; tokenizers come with the data)

    mark("import m3sa's BERT")
    import pyarrow.parquet  # noqa: F401

    from m3sa.config import load_params
    from m3sa.data.dataset import BucketBatchSampler, iterate_batches
    from m3sa.models import build_model
    from m3sa.runtime import Runtime, return_freed_memory
    from m3sa.training import Trainer, hold_unused_rows, load_training_data

    if not args.glibc_default:
        return_freed_memory()  # as training does (m3sa.runtime.run_settings)
    mark("import pyarrow, m3sa.training")
    features = Path(args.features)
    disk = sum(f.stat().st_size for f in features.glob("*.parquet") if f.stem in ("train", "valid")) / MIB
    cfg = load_params(ROOT / "params.yaml", [f"data.features_dir={features}", *args.overrides])
    data = load_training_data(cfg)
    mark("load_training_data (train+valid)", f"train+valid Parquet on disk {disk:.0f} MiB")
    torch.manual_seed(0)
    model = build_model(cfg.model, data.dims, data.modalities)
    hold_unused_rows(model, cfg, data)  # as training does
    params = sum(p.numel() for p in model.parameters() if p.requires_grad) * 4 / MIB
    mark("build_model", f"parameters {params:.0f} MiB (float32)")
    trainer = Trainer(cfg, model, Runtime(torch.device("cpu")))
    uni = sum(p.numel() for p in trainer.uni_params) * 4 / MIB
    mark("Trainer (optimizers, no state yet)")
    sampler = BucketBatchSampler(data.train.lengths, cfg.train.batch_size, seed=0)
    batches = sampler.global_batches()[: args.steps]
    for i, batch in enumerate(iterate_batches(data.train, batches, torch.device("cpu"))):
        trainer.step(batch)
        mark(f"step {i + 1}", f"gradients {params:.0f} + Adam moments 2 x ({params:.0f} + {uni:.0f}) MiB = "
                              f"{params + 2 * (params + uni):.0f} MiB" if i == 0 else "")
    peak = rows[-1][2]
    print(f"\npeak RSS {peak:.0f} MiB = {peak / 1024:.2f} GiB; train+valid features on disk {disk:.0f} MiB "
          f"(peak / features {peak / disk:.1f}x); imports alone {rows[3][1]:.0f} MiB; "
          f"parameters + gradients + Adam moments {2 * params + 2 * (params + uni):.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""GPU step benchmark: steady-state samples/s, GPU busy share, kernel launches, host syncs, peak memory.

    python benchmarks/gpu_bench.py --features DIR [--device cuda] [--epochs 2] [--steps 20]
                                   [--configs default bert-base] [--padding batch buckets]
                                   [--compile-modes none reduce-overhead] [--label after]

Run by ``benchmarks/gpu_check.sh`` (which makes the features), once with this checkout and,
with ``BASELINE_ROOT`` set there, once more with an older checkout on ``PYTHONPATH``, so that
before and after are measured in one call on one card. For each text encoder config and each
padding mode the code supports (``train.padding`` exists from the static-shape change on;
an older checkout runs its own batch padding only):

- samples/s of training, epoch by epoch (``m3sa.training.train_all``; the last epoch is the
  steady rate: the first pays CUDA warm-up and, compiled, graph capture);
- over ``--steps`` two-phase steps after a warm-up, under ``torch.profiler``: the share of the
  wall time the GPU runs kernels (busy share), kernel launches and memory copies per step;
- host synchronisations per step (``torch.cuda.set_sync_debug_mode("warn")`` warnings);
- peak GPU memory (``torch.cuda.max_memory_allocated``).

Prints one Markdown row per run; ``--json`` appends the rows to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(os.environ.get("M3SA_CODE_ROOT") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))

from m3sa.config import load_params  # noqa: E402
from m3sa.data.dataset import BucketBatchSampler, iterate_batches  # noqa: E402
from m3sa.errors import ConfigError  # noqa: E402
from m3sa.models import build_model  # noqa: E402
from m3sa.training import Runtime, Trainer, load_training_data, train_all  # noqa: E402

ENCODERS = {"default": None, "bert-base": "random:bert-base"}


def history(models_dir: Path) -> list[dict]:
    """Per-epoch history of seed 0: state.json (finished seeds) or, in older code, last.pt."""
    state = models_dir / "seed_0" / "state.json"
    if state.exists():
        return json.loads(state.read_text())["train_state"]["history"]
    return torch.load(models_dir / "seed_0" / "last.pt", weights_only=True)["train_state"]["history"]


def profile_steps(cfg, data, device: torch.device, steps: int, warmup: int, buckets: bool) -> dict:
    """Busy share, launches, copies and host syncs per step over ``steps`` steps."""
    torch.manual_seed(0)
    trainer = Trainer(cfg, build_model(cfg.model, data.dims, data.modalities), Runtime(device))
    order = BucketBatchSampler(data.train.lengths, cfg.train.batch_size, seed=0).global_batches()
    kwargs = {"buckets": True} if buckets else {}
    batches = list(iterate_batches(data.train, order[: warmup + steps], device, **kwargs))
    for batch in batches[:warmup]:
        trainer.step(batch)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with torch.profiler.profile(activities=activities) as prof:
                t0 = time.perf_counter()
                for batch in batches[warmup:]:
                    trainer.step(batch)
                if cuda:
                    torch.cuda.set_sync_debug_mode(0)
                    torch.cuda.synchronize()
                wall = time.perf_counter() - t0
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
    syncs = sum(1 for w in caught if "synchroniz" in str(w.message).lower())
    events = prof.key_averages()
    kernel_us = sum(getattr(e, "self_device_time_total", 0) for e in events if getattr(e, "device_type", None)
                    == torch.autograd.DeviceType.CUDA)
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel"))
    copies = sum(e.count for e in events if e.key.startswith("cudaMemcpy"))
    n = len(batches) - warmup
    return {"busy_share": kernel_us / 1e6 / wall if cuda else float("nan"), "launches_per_step": launches / n,
            "copies_per_step": copies / n, "syncs_per_step": syncs / n, "step_ms": 1000 * wall / n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-batches", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--configs", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    ap.add_argument("--padding", nargs="+", default=["batch", "buckets"], choices=["batch", "buckets"])
    ap.add_argument("--compile-modes", nargs="+", default=["none"],
                    choices=["none", "default", "reduce-overhead", "max-autotune"])
    ap.add_argument("--label", default=str(ROOT))
    ap.add_argument("--json", help="append the rows to this JSON-lines file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="m3sa-gpu-bench-"))
    rows = []
    for name in args.configs:
        for padding in args.padding:
            for mode in args.compile_modes:
                sets = [f"data.features_dir={args.features}", "train.seeds=[0]", f"train.epochs={args.epochs}",
                        f"train.max_batches={args.max_batches}", f"train.device={args.device}",
                        f"train.models_dir={work}/{name}-{padding}-{mode}/models",
                        f"train.live_dir={work}/{name}-{padding}-{mode}/live"]
                sets += [f"model.text_encoder={ENCODERS[name]}"] if ENCODERS[name] else []
                sets += [f"train.compile=true", f"train.compile_mode={mode}"] if mode != "none" else []
                try:
                    cfg = load_params(ROOT / "params.yaml", sets + [f"train.padding={padding}"])
                    buckets = padding == "buckets"
                except ConfigError:  # older code: no train.padding, batch padding only
                    if padding != "batch" or mode not in ("none", "default"):
                        continue
                    cfg = load_params(ROOT / "params.yaml", [s for s in sets if "compile_mode" not in s])
                    buckets = False
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                summary = train_all(cfg, metrics_path=None)
                per_epoch = [h.get("samples_per_s") or float("nan")
                             for h in history(Path(cfg.train.models_dir))]
                peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
                prof = profile_steps(cfg, load_training_data(cfg), device, args.steps, args.warmup, buckets)
                row = {"code": args.label, "config": name, "padding": padding, "compile": mode,
                       "samples_per_s": per_epoch, "valid_mae": summary["per_seed"][0]["best_valid"],
                       "peak_gib": peak, **prof}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.json:
                    with open(args.json, "a") as fh:
                        fh.write(json.dumps(row) + "\n")
    print()
    print("| code | config | padding | compile | samples/s per epoch | step (ms) | GPU busy | launches/step | "
          "copies/step | host syncs/step | peak GPU memory | valid MAE |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['code']} | {r['config']} | {r['padding']} | {r['compile']} | "
              f"{', '.join(f'{v:.0f}' for v in r['samples_per_s'])} | {r['step_ms']:.1f} | "
              f"{100 * r['busy_share']:.0f}% | {r['launches_per_step']:.0f} | {r['copies_per_step']:.0f} | "
              f"{r['syncs_per_step']:.1f} | {r['peak_gib']:.2f} GiB | {r['valid_mae']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training throughput on CPU: samples/s per epoch, time waiting for data, M3SA vs late fusion.

    python benchmarks/train_bench.py [--size default] [--encoder packaged:all-MiniLM-L6-v2]
                                     [--steps 12] [--warmup 2] [--epoch] [--out docs/benchmarks-train.md]

On the embedded dataset of ``--size`` (generated and extracted into ``--workdir``, or read
from ``--features``), with the default params (model.dim 64, batch 32, MiniLM-L6):

- step ratio: M3SA's training step (two phases: forward/backward/step of the unimodal
  networks, then forward/backward/step of the whole model) against the late-fusion
  baseline's single step (same encoders, no modulation, no filter), measured in the same
  process on the same batches, interleaved, median of ``--steps`` steps after ``--warmup``
  (goal: at most 2.2x, the price of the second phase and no more);
- with ``--epoch``: one full training epoch of each system through
  ``m3sa.training.train`` (samples/s and the share of the epoch spent waiting for
  batches, i.e. collating and copying them).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from m3sa.config import Config, load_params  # noqa: E402
from m3sa.data.dataset import BucketBatchSampler  # noqa: E402
from m3sa.training import Runtime, Trainer, load_training_data, torch_settings, train  # noqa: E402

GOAL_RATIO = 2.2


def prepare_features(size: str, workdir: Path) -> Path:
    """Generate the embedded sample of ``size`` and extract it; return the features folder."""
    from m3sa.data.extract import extract
    from m3sa.data.sample import generate_sample

    cfg = load_params(ROOT / "params.yaml", [f"data.sample_size={size}", f"data.sample_dir={workdir}/sample",
                                             f"data.csd_dir={workdir}/sample", f"data.features_dir={workdir}/features"])
    if not (workdir / "features" / "meta.json").exists():
        generate_sample(cfg.data.sample_dir, size, cfg.data.sample_seed, progress=False)
        extract(cfg.data)
    return workdir / "features"


def step_times(cfg: Config, data, steps: int, warmup: int, clock=time.perf_counter) -> dict[str, list[float]]:
    """Per-step seconds of M3SA (total and per phase) and late fusion on the same batches.

    ``clock``: wall time (``time.perf_counter``) or this process's CPU time
    (``time.process_time``, insensitive to other processes competing for the cores).
    """
    rt = Runtime(torch.device("cpu"))
    trainers = {}
    for name in ("m3sa", "late_fusion"):
        from m3sa.models import build_model

        c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=name))
        torch.manual_seed(0)
        trainers[name] = Trainer(c, build_model(c.model, data.dims, data.modalities), rt)
    sampler = BucketBatchSampler(data.train.lengths, cfg.train.batch_size, seed=0)
    batches = sampler.global_batches()[: warmup + steps]
    times: dict[str, list[float]] = {"m3sa": [], "m3sa_phase1": [], "m3sa_phase2": [], "late_fusion": []}
    for i, idx in enumerate(batches):
        batch = data.train.collate(idx)
        row: dict[str, float] = {}
        for name, tr in trainers.items():
            tr.net.train()
            t0 = clock()
            if tr.two_phase:
                tr.unimodal_step(batch)
                t1 = clock()
                tr.multimodal_step(batch)
                t2 = clock()
                row.update(m3sa=t2 - t0, m3sa_phase1=t1 - t0, m3sa_phase2=t2 - t1)
            else:
                tr.multimodal_step(batch)
                row[name] = clock() - t0
        if i >= warmup:
            for k, v in row.items():
                times[k].append(v)
    return times


def epoch_run(cfg: Config, data, name: str, workdir: Path) -> dict:
    c = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=name),
                            train=dataclasses.replace(cfg.train, epochs=1, seeds=(0,)))
    out = Path(tempfile.mkdtemp(dir=workdir))
    return train(c, None, out / "models", out / "live", 0, data=data, runtime=Runtime(torch.device("cpu")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="default", choices=["tiny", "default", "large"])
    ap.add_argument("--features", help="use this features folder instead of generating one")
    ap.add_argument("--workdir", default=None, help="where to generate the dataset (default: a temp folder)")
    ap.add_argument("--encoder", default=None, help="model.text_encoder (default: params.yaml's)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--epoch", action="store_true", help="also time one full epoch of each system")
    ap.add_argument("--out", help="also write the Markdown report to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="m3sa-train-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    features = Path(args.features) if args.features else prepare_features(args.size, workdir)
    overrides = [f"data.features_dir={features}", "train.device=cpu", f"train.num_threads={args.threads}"]
    if args.encoder:
        overrides.append(f"model.text_encoder={args.encoder}")
    cfg = load_params(ROOT / "params.yaml", overrides)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    with torch_settings(args.threads, deterministic=True):
        t0 = time.perf_counter()
        data = load_training_data(cfg)
        load_s = time.perf_counter() - t0
        say(f"# Training benchmark ({time.strftime('%Y-%m-%d')})")
        say()
        say(f"Command: `python benchmarks/train_bench.py --size {args.size} --steps {args.steps} "
            f"--warmup {args.warmup} --threads {args.threads}{' --epoch' if args.epoch else ''}"
            f"{' --encoder ' + args.encoder if args.encoder else ''}`")
        say()
        say(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, CPU only.")
        say(f"Data: embedded `{args.size}` sample, {len(data.train)} train / {len(data.valid)} valid segments, "
            f"modalities {', '.join(data.modalities)}; read + tokenised in {load_s:.1f} s.")
        say(f"Model: text encoder `{cfg.model.text_encoder}`, dim {cfg.model.dim}, filter {cfg.model.filter}, "
            f"fusion {cfg.model.fusion}; batch {cfg.train.batch_size}.")
        say()
        bs = cfg.train.batch_size
        for clock, title in ((time.perf_counter, "wall time"), (time.process_time, "CPU time of this process")):
            times = step_times(cfg, data, args.steps, args.warmup, clock)
            med = {k: statistics.median(v) for k, v in times.items()}
            ratio = med["m3sa"] / med["late_fusion"]
            say(f"## Step time, same batches, interleaved (median {title})")
            say()
            say("| system | s/step | samples/s |")
            say("|---|---|---|")
            for k, label in (("late_fusion", "late fusion (1 phase)"), ("m3sa", "M3SA (2 phases)"),
                             ("m3sa_phase1", "M3SA phase 1 (unimodal)"), ("m3sa_phase2", "M3SA phase 2 (whole model)")):
                say(f"| {label} | {med[k]:.3f} | {bs / med[k]:.1f} |")
            say()
            verdict = "meets" if ratio <= GOAL_RATIO else "misses"
            say(f"M3SA / late-fusion step time ({title}): **{ratio:.2f}x** ({verdict} the goal of <= {GOAL_RATIO}x); "
                f"{args.steps} steps after {args.warmup} warm-up steps.")
            say()
        if args.epoch:
            say("## One training epoch (m3sa.training.train, valid pass excluded)")
            say()
            say("| system | samples/s | waiting for data | batches |")
            say("|---|---|---|---|")
            for name in ("late_fusion", "m3sa"):
                r = epoch_run(cfg, data, name, workdir)
                say(f"| {name} | {r['samples_per_s']:.1f} | {100 * r['data_wait_share']:.2f}% | "
                    f"{-(-len(data.train) // bs)} |")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

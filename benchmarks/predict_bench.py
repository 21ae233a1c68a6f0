"""Inference speed on CPU: per-utterance latency at batch 1, throughput at batch 64.

    python benchmarks/predict_bench.py [--size default] [--encoder packaged:all-MiniLM-L6-v2]
                                       [--checkpoint PATH --input FEATURES.parquet]
                                       [--latency-n 200] [--threads 0] [--workdir DIR]

Without ``--checkpoint`` it generates the embedded sample of ``--size`` in ``--workdir`` (a
temp folder by default), extracts it and trains one seed for a few batches with the
default params (the weights do not change the cost of a forward pass), then scores the
test split through :class:`m3sa.predict.Predictor`:

- load: rebuilding the model from the checkpoint (plus the tokenizer);
- batch 1: per-utterance latency of collate + forward, one segment at a time (median,
  p90, p99 over ``--latency-n`` segments after 5 warm-up calls);
- batch 64: samples/s of :func:`m3sa.evaluation.predict` over the whole split (best of 3);
- end to end: ``predict_parquet`` (read + tokenise + score) on the test Parquet file and
  ``predict_csd`` (extract + standardise + tokenise + score) on the test videos' CSD data.
"""

from __future__ import annotations

import argparse
import json
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
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars

from m3sa.config import load_params  # noqa: E402
from m3sa.predict import Predictor  # noqa: E402


def prepare(size: str, workdir: Path, encoder: str | None) -> tuple[Path, Path, Path]:
    """Sample, features and a briefly trained checkpoint in ``workdir``: (checkpoint, test parquet, sample dir)."""
    from m3sa.data.extract import extract
    from m3sa.data.sample import generate_sample
    from m3sa.training import train_all

    overrides = [f"data.sample_size={size}", f"data.sample_dir={workdir}/sample", f"data.features_dir={workdir}/features",
                 "train.seeds=[0]", "train.epochs=1", "train.max_batches=2", "train.device=cpu",
                 f"train.models_dir={workdir}/models", f"train.live_dir={workdir}/dvclive"]
    if encoder:
        overrides.append(f"model.text_encoder={encoder}")
    cfg = load_params(ROOT / "params.yaml", overrides)
    ckpt = workdir / "models/seed_0/best.pt"
    if not ckpt.exists():
        if not (workdir / "features/meta.json").exists():
            generate_sample(cfg.data.sample_dir, size, cfg.data.sample_seed, progress=False)
            extract(cfg.data, progress=False)
        train_all(cfg)
    return ckpt, workdir / "features/test.parquet", workdir / "sample"


def percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="default", choices=["tiny", "default", "large"])
    ap.add_argument("--encoder", default=None, help="model.text_encoder when training here (default: params.yaml's)")
    ap.add_argument("--checkpoint", help="score with this checkpoint instead of training one")
    ap.add_argument("--input", help="features Parquet file to score (with --checkpoint)")
    ap.add_argument("--workdir", default=None, help="where to generate and train (default: a temp folder)")
    ap.add_argument("--latency-n", type=int, default=200, help="segments timed one at a time")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if bool(args.checkpoint) != bool(args.input):
        ap.error("--checkpoint and --input go together")
    if args.threads:
        torch.set_num_threads(args.threads)

    sample = None
    if args.checkpoint:
        ckpt, features = Path(args.checkpoint), Path(args.input)
    else:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="m3sa-predict-bench-"))
        workdir.mkdir(parents=True, exist_ok=True)
        ckpt, features, sample = prepare(args.size, workdir, args.encoder)

    t0 = time.perf_counter()
    pred = Predictor.from_checkpoint(ckpt, device="cpu")
    load_s = time.perf_counter() - t0
    data, _ = pred.load_parquet(features)
    n = len(data)
    model = pred.model

    print(f"# Inference benchmark ({time.strftime('%Y-%m-%d')})\n")
    cmd = " ".join(["python benchmarks/predict_bench.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"Command: `{cmd.strip()}`\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"torch {torch.__version__} with {torch.get_num_threads()} thread(s), CPU only; load average "
          f"{os.getloadavg()[0]:.1f} at the start (other processes share the cores).")
    mc = pred.config.model
    print(f"Model: {mc.name}, text encoder `{mc.text_encoder}`, dim {mc.dim}, filter {mc.filter}, "
          f"fusion {mc.fusion}; {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters.")
    print(f"Data: {features} ({n} segments, modalities {', '.join(pred.modalities)}).\n")

    with torch.inference_mode():
        order = list(range(min(args.latency_n, n)))
        for i in order[:5]:
            model(data.collate([i]))
        lat: list[float] = []
        for i in order:
            t = time.perf_counter()
            batch = data.collate([i])
            model(batch)
            lat.append(1000 * (time.perf_counter() - t))
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        pred.predict_split(data, batch_size=64)
        runs.append(time.perf_counter() - t)
    best = min(runs)

    t = time.perf_counter()
    df = pred.predict_parquet(features)
    e2e_parquet = time.perf_counter() - t
    rows = [
        ("load checkpoint + tokenizer", f"{load_s:.2f} s", ""),
        ("batch 1: latency per utterance (collate + forward)",
         f"median {statistics.median(lat):.1f} ms, p90 {percentile(lat, 90):.1f} ms, p99 {percentile(lat, 99):.1f} ms",
         f"{len(lat)} segments"),
        ("batch 64: throughput (m3sa.evaluation.predict)", f"{n / best:.0f} samples/s "
         f"({1000 * best / n:.2f} ms per utterance)", f"best of 3 passes over {n} segments"),
        ("end to end: predict_parquet (read + tokenise + score)", f"{e2e_parquet:.2f} s, {len(df) / e2e_parquet:.0f} "
         "segments/s", f"{len(df)} segments"),
    ]
    if sample is not None:
        videos = sorted(json.loads((sample / "folds.json").read_text())["test"])
        t = time.perf_counter()
        dfc = pred.predict_csd(sample, videos=videos)
        e2e_csd = time.perf_counter() - t
        rows.append(("end to end: predict_csd (extract + standardise + tokenise + score)",
                     f"{e2e_csd:.2f} s, {len(dfc) / e2e_csd:.0f} segments/s", f"{len(videos)} test videos, "
                     f"{len(dfc)} segments"))
    print("| measurement | result | over |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

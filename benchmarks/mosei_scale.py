"""MOSEI scale: wall time and peak RSS of sample generation, extraction and training.

    python benchmarks/mosei_scale.py [--sizes default large mosei] [--max-batches 50]
                                     [--encoder packaged:all-MiniLM-L6-v2] [--threads 0] [--workdir DIR] [--keep]

For each embedded dataset size (``default`` = MOSI scale, 93 videos; ``large`` = 4x;
``mosei`` = CMU-MOSEI scale, 3,227 videos, about 23,000 segments) it runs the real stages
as subprocesses in ``--workdir/<size>`` (a temp folder by default; nothing is written into
the repository):

1. ``python -m stages.sample``  (generates the CSD files),
2. ``python -m stages.extract`` (default params: align=words, standardised, inputs hashed),
3. ``python -m stages.train``   (one seed, one epoch capped at ``--max-batches`` batches,
   then the full valid pass and the checkpoints; text encoder ``--encoder``, default
   params.yaml's),

and records each one's wall time and peak RSS (``ru_maxrss`` of the process and of the
processes it waited for, from ``os.wait4``). Flat memory means the peak RSS of a stage
stays about the same while the data grows (35x the videos, 11x the segments). Each size's
CSD files are deleted after its run unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("sample", "extract", "train")


def run_step(step: str, overrides: list[str], cwd: Path) -> dict[str, float]:
    """Run ``python -m stages.<step>`` in ``cwd``; its wall time (s) and peak RSS (MiB)."""
    cmd = [sys.executable, "-m", f"stages.{step}", "--params", str(ROOT / "params.yaml")]
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
    log = cwd / f"{step}.log"
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"stages.{step} failed (exit {proc.returncode}) in {cwd}:\n" + "\n".join(tail))
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss * scale / 2**20}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_size(size: str, workdir: Path, max_batches: int, encoder: str | None, threads: int,
             keep: bool) -> dict[str, object]:
    cwd = workdir / size
    cwd.mkdir(parents=True, exist_ok=True)
    common = ["data.source=sample", "data.sample_dir=data/sample", "data.features_dir=data/features"]
    train = ["train.seeds=[0]", "train.epochs=1", f"train.max_batches={max_batches}", "train.device=cpu",
             f"train.num_threads={threads}", "train.models_dir=models", "train.live_dir=dvclive"]
    if encoder:
        train.append(f"model.text_encoder={encoder}")
    result: dict[str, object] = {"size": size}
    result["sample"] = run_step("sample", [f"data.sample_size={size}", *common], cwd)
    result["csd_gib"] = dir_bytes(cwd / "data/sample") / 2**30
    result["extract"] = run_step("extract", common, cwd)
    meta = json.loads((cwd / "data/features/meta.json").read_text())
    result["videos"] = sum(meta["videos"].values())
    result["segments"] = sum(meta["counts"].values())
    result["counts"] = meta["counts"]
    result["features_mib"] = dir_bytes(cwd / "data/features") / 2**20
    if not keep:
        shutil.rmtree(cwd / "data/sample")
    result["train"] = run_step("train", [*common, *train], cwd)
    summary = json.loads((cwd / "metrics/train.json").read_text())
    result["train_samples_per_s"] = summary["mean"]["samples_per_s"]
    result["train_batches"] = max_batches
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["default", "large", "mosei"],
                    choices=["tiny", "default", "large", "mosei"])
    ap.add_argument("--max-batches", type=int, default=50, help="training batches (train.max_batches)")
    ap.add_argument("--encoder", default=None, help="model.text_encoder (default: params.yaml's)")
    ap.add_argument("--threads", type=int, default=0,
                    help="train.num_threads (0 = torch's default; 1 on a shared machine avoids idle spinning)")
    ap.add_argument("--workdir", default=None, help="where to run (default: a temp folder, removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the generated CSD files and the workdir")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="m3sa-mosei-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = [run_size(s, workdir, args.max_batches, args.encoder, args.threads, args.keep) for s in args.sizes]
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    cmd = " ".join(["python benchmarks/mosei_scale.py", *(argv if argv is not None else sys.argv[1:])])
    encoder = args.encoder or "params.yaml's model.text_encoder (packaged:all-MiniLM-L6-v2)"
    print(f"# Scale benchmark ({time.strftime('%Y-%m-%d')})\n")
    print(f"Command: `{cmd.strip()}`\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, CPU only; "
          f"load average {os.getloadavg()[0]:.1f} at the end (other processes share the cores).")
    print(f"Training: one seed, one epoch capped at {args.max_batches} batches of 32, then the full valid "
          f"pass and the checkpoints; text encoder {encoder}; torch threads {args.threads or 'default'}.\n")
    print("| size | videos | segments (train/valid/test) | CSD input | features | step | wall | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = r["counts"]
        for i, step in enumerate(STEPS):
            head = (f"| {r['size']} | {r['videos']} | {r['segments']} ({c['train']}/{c['valid']}/{c['test']}) | "
                    f"{r['csd_gib']:.2f} GiB | {r['features_mib']:.0f} MiB" if i == 0 else "| | | | |")
            m = r[step]
            print(f"{head} | {step} | {m['wall_s']:.1f} s | {m['peak_rss_mib']:.0f} MiB |")
    print()
    base, top = rows[0], rows[-1]
    if len(rows) > 1:
        grow = top["segments"] / base["segments"]
        print(f"From {base['size']} to {top['size']} the data grows {grow:.1f}x in segments; peak RSS: " + ", ".join(
            f"{s} {base[s]['peak_rss_mib']:.0f} -> {top[s]['peak_rss_mib']:.0f} MiB "
            f"({top[s]['peak_rss_mib'] / base[s]['peak_rss_mib']:.2f}x)" for s in STEPS) + ".")
        print("Training samples/s: " + ", ".join(f"{r['size']} {r['train_samples_per_s']:.0f}" for r in rows) + ".")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

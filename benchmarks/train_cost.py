"""What one seed of the default training costs, before and after: samples/s, peak RSS, models/ on disk.

    python benchmarks/train_cost.py [--baseline-rev 8112e84] [--features DIR] [--rounds 2]
                                    [--epochs 1] [--threads 0] [--out FILE]

Runs ``python -m stages.train`` (one seed, params.yaml otherwise) as a subprocess, alternately
with the code of ``--baseline-rev`` (checked out with ``git worktree`` into a temp folder) and
with this checkout, ``--rounds`` times each, on the same features (the embedded ``default``
sample unless ``--features``), and reports per code: training samples/s (from
metrics/train.json; validation excluded), the process's peak resident set size (``wait4``'s
ru_maxrss, as ``/usr/bin/time -v`` reports it), the models folder's size when the stage has
finished, and the ratios after / before. Alternating the two keeps a busy machine's load
from favouring either.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_stage(code: Path, features: Path, work: Path, epochs: int, threads: int) -> dict:
    """One ``python -m stages.train`` with ``code`` on PYTHONPATH, in a fresh folder ``work``."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    args = [sys.executable, "-m", "stages.train", "--params", str(code / "params.yaml"),
            "--set", f"data.features_dir={features}", "--set", "train.seeds=[0]", "--set", f"train.epochs={epochs}",
            "--set", f"train.num_threads={threads}", "--set", "train.device=cpu"]
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    with open(work / "log.txt", "wb") as log:
        proc = subprocess.Popen(args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"train_cost: {code}: stages.train failed; see {work / 'log.txt'}")
    summary = json.loads((work / "metrics" / "train.json").read_text())
    return {"samples_per_s": summary["per_seed"][0]["samples_per_s"], "peak_rss_mib": usage.ru_maxrss / 1024,
            "models_mib": folder_size(work / "models") / MIB, "wall_s": wall,
            "files": sorted(p.name for p in (work / "models" / "seed_0").iterdir()),
            "best_valid": summary["per_seed"][0]["best_valid"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-rev", default="8112e84")
    ap.add_argument("--features", help="features folder (default: the embedded default sample, generated)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", help="also write the Markdown table to this file")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="m3sa-train-cost-"))
    baseline = tmp / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(baseline), args.baseline_rev], cwd=ROOT, check=True)
    try:
        if args.features:
            features = Path(args.features).resolve()
        else:
            sys.path.insert(0, str(ROOT / "benchmarks"))
            from train_bench import prepare_features

            features = prepare_features("default", tmp / "data")
        codes = {"before": baseline, "after": ROOT}
        results: dict[str, list[dict]] = {k: [] for k in codes}
        for r in range(args.rounds):
            for label, code in codes.items():
                res = run_stage(code, features, tmp / f"run-{label}", args.epochs, args.threads)
                results[label].append(res)
                print(f"round {r + 1} {label}: {json.dumps(res)}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    def med(label: str, key: str) -> float:
        return statistics.median(r[key] for r in results[label])

    lines = [f"Command: `python benchmarks/train_cost.py --baseline-rev {args.baseline_rev} --rounds {args.rounds} "
             f"--epochs {args.epochs} --threads {args.threads}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, CPU only; {time.strftime('%Y-%m-%d')}. "
             f"One seed, {args.epochs} epoch(s), params.yaml otherwise; median of {args.rounds} alternating runs.", "",
             "| code | training samples/s | peak RSS | models/ after the stage | files per seed | valid MAE |",
             "|---|---|---|---|---|---|"]
    for label in results:
        lines.append(f"| {label} ({args.baseline_rev if label == 'before' else 'this checkout'}) | "
                     f"{med(label, 'samples_per_s'):.1f} | {med(label, 'peak_rss_mib'):.0f} MiB | "
                     f"{med(label, 'models_mib'):.0f} MiB | {', '.join(results[label][0]['files'])} | "
                     f"{results[label][0]['best_valid']:.4f} |")
    lines.append(f"| after / before | {med('after', 'samples_per_s') / med('before', 'samples_per_s'):.2f}x | "
                 f"{med('after', 'peak_rss_mib') / med('before', 'peak_rss_mib'):.2f}x | "
                 f"{med('after', 'models_mib') / med('before', 'models_mib'):.2f}x | | |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Pickle extraction speed and memory against the pickle's own load, at MOSEI size.

    python benchmarks/pickle_bench.py [--segments 22856] [--text-dim 768] [--repeats 2] [--workdir DIR]

Writes one MMSA-layout file the size of CMU-MOSEI's ``aligned_50.pkl`` (22,856 segments over
the standard splits; audio (N, 50, 74), vision (N, 50, 35), ``text`` (N, 50, ``--text-dim``)
BERT features, ``text_bert`` (N, 3, 50); protocol 4, as MMSA's files), then, in fresh
processes on a warm page cache:
- load: ``pickle.load`` of the file, the floor any reader pays; wall time and peak RSS;
- extract: ``m3sa.data.extract.extract`` with ``data.source=mmsa`` (allowlist load, checks,
  Parquet + meta.json written; SHA-256 off, as the load does not hash); wall time and peak RSS.
Prints each as a ratio to the load (goal: under 2x in time and in memory). The timings are
the median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"time_ratio": 2.0, "rss_ratio": 2.0}
SPLIT_SHARES = {"train": 16326, "valid": 1871, "test": 4659}  # MOSEI's standard folds


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


def write_file(path: Path, segments: int, text_dim: int, seed: int = 0) -> float:
    """An aligned MMSA-layout pickle of ``segments`` segments; returns its size in MB."""
    rng = np.random.default_rng(seed)
    total = sum(SPLIT_SHARES.values())
    data = {}
    k = 0
    for split, share in SPLIT_SHARES.items():
        n = max(1, round(segments * share / total))
        lengths = rng.integers(4, 51, size=n)
        mask = (np.arange(50)[None, :] < lengths[:, None]).astype(np.float32)
        words = [" ".join(f"w{j}" for j in range(int(ln) - 2)) for ln in lengths]
        data[split] = {
            "raw_text": np.array(words, dtype=object),
            "id": np.array([f"video{(k + i) // 8}$_${(k + i) % 8}" for i in range(n)], dtype=object),
            "audio": rng.standard_normal((n, 50, 74), dtype=np.float32) * mask[:, :, None],
            "vision": rng.standard_normal((n, 50, 35), dtype=np.float32) * mask[:, :, None],
            "text": rng.standard_normal((n, 50, text_dim), dtype=np.float32),
            "text_bert": np.stack([np.zeros_like(mask), mask, np.zeros_like(mask)], axis=1),
            "regression_labels": rng.uniform(-3, 3, n).astype(np.float32),
            "annotations": np.array(["Neutral"] * n, dtype=object),
        }
        k += n
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return path.stat().st_size / 1e6


def child(kind: str, path: str, out: str) -> dict:
    t0 = time.perf_counter()
    if kind == "load":
        with open(path, "rb") as f:  # the file this script wrote itself, not an outside one
            obj = pickle.Unpickler(f).load()
        n = sum(len(v["id"]) for v in obj.values())
    else:
        sys.path.insert(0, str(ROOT))
        from m3sa.config import DataConfig
        from m3sa.data.extract import extract
        meta = extract(DataConfig(source="mmsa", pickle=path, features_dir=out), progress=False, hash_inputs=False)
        n = sum(meta["counts"].values())
    return {"seconds": time.perf_counter() - t0, "rss_mb": _peak_rss_mb(), "segments": n}


def run_child(kind: str, path: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(path), str(out)], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=22856)
    ap.add_argument("--text-dim", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workdir", default="/tmp/m3sa-pickle-bench")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "aligned_50.pkl"
    stamp = work / "file.json"
    spec = {"segments": args.segments, "text_dim": args.text_dim}
    t0 = time.perf_counter()
    if path.exists() and stamp.exists() and json.loads(stamp.read_text()) == spec:
        size = path.stat().st_size / 1e6
        print(f"file: {path} ({size:,.0f} MB, {args.segments:,} segments, text {args.text_dim}-d), reused")
    else:
        size = write_file(path, args.segments, args.text_dim)
        stamp.write_text(json.dumps(spec))
        print(f"file: {path} ({size:,.0f} MB, {args.segments:,} segments, text {args.text_dim}-d) written in "
              f"{time.perf_counter() - t0:.0f} s")
    run_child("load", path, work / "features")  # warm the page cache
    res: dict[str, list[dict]] = {"load": [], "extract": []}
    for _ in range(args.repeats):
        for kind in res:
            res[kind].append(run_child(kind, path, work / "features"))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("seconds", "rss_mb")} for k, v in res.items()}
    t_ratio = med["extract"]["seconds"] / med["load"]["seconds"]
    m_ratio = med["extract"]["rss_mb"] / med["load"]["rss_mb"]
    print(f"{'':10s}{'seconds':>10s}{'peak RSS MB':>14s}")
    for k in res:
        print(f"{k:10s}{med[k]['seconds']:10.1f}{med[k]['rss_mb']:14,.0f}")
    print(f"extract / load: time {t_ratio:.2f}x (goal < {GOALS['time_ratio']}x), "
          f"peak RSS {m_ratio:.2f}x (goal < {GOALS['rss_ratio']}x); segments {res['extract'][0]['segments']:,}")
    ok = t_ratio < GOALS["time_ratio"] and m_ratio < GOALS["rss_ratio"]
    print("goals met" if ok else "GOAL MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Extraction speed and memory: extractor vs the h5py read floor vs a per-word Python loop.

    python benchmarks/extract_bench.py [--sizes default large] [--repeats 3] [--workdir DIR]

For each dataset size (``default`` = MOSI scale, ``large`` = 4x), in fresh processes on a
warm page cache, it measures:
- floor: a plain h5py read (``ds[()]``) of every features and intervals array of the four
  CSD files, the I/O any extractor must do;
- extract: ``m3sa.data.extract.extract`` with the default parameters (align=words,
  standardised, Parquet + meta.json written, inputs hashed); wall time and peak RSS;
- loop: the CMU-MultimodalSDK's approach, one Python iteration per word, each taking the
  frames the SDK's ``__intersect_and_copy`` selects and averaging them (implemented here
  as the baseline), on the same segments and words as the extractor.
Each timing is the median of ``--repeats`` runs (the loop runs once). Once per size the
loop's averages are compared with the extractor's (run without standardisation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FILES = ("words.csd", "acoustic.csd", "visual.csd", "labels.csd")
GOALS = {"floor_ratio": 1.5, "loop_speedup": 15.0, "rss_mb": 400.0}


# ----------------------------------------------------------------------------- children

def _peak_rss_mb() -> float:
    """Peak RSS of this process. VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from
    the forking parent, so a child would report at least the driver's own size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def child_floor(sample_dir: str) -> dict:
    import h5py

    t0 = time.perf_counter()
    nbytes = 0
    for name in FILES:
        with h5py.File(Path(sample_dir) / name, "r") as f:
            data = f[next(iter(f))]["data"]
            for video in data:
                grp = data[video]
                nbytes += grp["features"][()].nbytes + grp["intervals"][()].nbytes
    return {"seconds": time.perf_counter() - t0, "bytes": nbytes, "rss_mb": _peak_rss_mb()}


def child_extract(sample_dir: str, out_dir: str, standardize: bool, hash_inputs: bool = True) -> dict:
    from m3sa.config import DataConfig
    from m3sa.data.extract import extract

    cfg = DataConfig(source="sample", sample_dir=sample_dir, features_dir=out_dir, standardize=standardize)
    t0 = time.perf_counter()
    meta = extract(cfg, progress=False, hash_inputs=hash_inputs)
    return {"seconds": time.perf_counter() - t0, "rss_mb": _peak_rss_mb(), "counts": meta["counts"]}


def child_hash(sample_dir: str) -> dict:
    """SHA-256 of the four input files alone (what meta.json's input hashes cost)."""
    from m3sa.data.provenance import sha256 as _sha256

    t0 = time.perf_counter()
    for name in FILES:
        _sha256(Path(sample_dir) / name)
    return {"seconds": time.perf_counter() - t0, "rss_mb": _peak_rss_mb()}


def _sdk_intersect(ref: np.ndarray, sub: np.ndarray, features: np.ndarray, epsilon: float = 1e-5):
    """CMU-MultimodalSDK ``computational_sequence.__intersect_and_copy`` (MIT licence), as is."""
    ref_copy = ref.copy()
    ref_copy[1] = -ref_copy[1]
    ref_copy = ref_copy[::-1]
    sub_copy = sub.copy()
    sub_copy[:, 0] = -sub_copy[:, 0]
    where_intersect = np.all((sub_copy - ref_copy) > (-epsilon), axis=1) == True  # noqa: E712
    intersectors = sub[where_intersect, :]
    intersectors = np.concatenate([np.maximum(intersectors[:, 0], ref[0])[:, None],
                                   np.minimum(intersectors[:, 1], ref[1])[:, None]], axis=1)
    intersectors_features = features[where_intersect, :]
    where_nonzero_len = np.where(abs(intersectors[:, 0] - intersectors[:, 1]) > epsilon)
    return intersectors[where_nonzero_len], intersectors_features[where_nonzero_len]


def child_loop(sample_dir: str, result_path: str, max_words: int) -> dict:
    """The per-word loop baseline; writes its word averages to result_path (.npz)."""
    import h5py

    from m3sa.data.align import float32_tolerance

    t0 = time.perf_counter()
    folds = json.loads((Path(sample_dir) / "folds.json").read_text())
    in_fold = {v for vs in folds.values() for v in vs}
    files = {n: h5py.File(Path(sample_dir) / n, "r") for n in FILES}
    data = {n: f[next(iter(f))]["data"] for n, f in files.items()}
    out: dict[str, np.ndarray] = {}
    n_words = 0
    for video in data["labels.csd"]:
        if video not in in_fold:
            continue
        seg_iv = data["labels.csd"][video]["intervals"][()]
        words = data["words.csd"][video]["features"][()].reshape(-1)
        word_iv = data["words.csd"][video]["intervals"][()]
        streams = {}
        for m, name in (("acoustic", "acoustic.csd"), ("visual", "visual.csd")):
            x = data[name][video]["features"][()]
            streams[m] = (np.where(np.isfinite(x), x, 0.0).astype(np.float32), data[name][video]["intervals"][()])
        word_ids = np.arange(len(words))[:, None]
        for k, (s0, s1) in enumerate(seg_iv.astype(np.float64)):
            if s1 - s0 <= 1e-5:
                continue
            # the segment's words: the SDK rule with the float32-aware tolerance at each edge
            t0_, t1_ = float32_tolerance(np.array([s0, s1]))
            member = ((word_iv[:, 1] - word_iv[:, 0] > 1e-5) & (word_iv[:, 1] - s0 > t0_)
                      & (s1 - word_iv[:, 0] > t1_) & (words != b"sp"))
            ids = np.flatnonzero(member)[:max_words].tolist()
            if not ids:
                continue
            n_words += len(ids)
            for m, (x, iv) in streams.items():
                rows = []
                for i in ids:  # one Python iteration per word, as the SDK aligner
                    _, feats = _sdk_intersect(word_iv[i], iv, x)
                    rows.append(feats.mean(axis=0) if len(feats) else np.full(x.shape[1], np.nan, np.float32))
                out[f"{video}[{k}]|{m}"] = np.stack(rows)
            out[f"{video}[{k}]|words"] = word_ids[ids, 0]
    seconds = time.perf_counter() - t0
    np.savez(result_path, **out)
    return {"seconds": seconds, "rss_mb": _peak_rss_mb(), "words": n_words}


# ----------------------------------------------------------------------------- driver

def _run_child(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _compare(features_dir: Path, loop_npz: Path) -> dict:
    import pyarrow.parquet as pq

    ref = np.load(loop_npz)
    worst = 0.0
    worst_rel = 0.0
    segments = 0
    mismatched_words = 0
    for split in ("train", "valid", "test"):
        table = pq.read_table(features_dir / f"{split}.parquet").to_pylist()
        for row in table:
            key = row["segment_id"]
            if f"{key}|acoustic" not in ref:
                mismatched_words += 1
                continue
            segments += 1
            for m in ("acoustic", "visual"):
                a = np.asarray(row[m], dtype=np.float64)
                b = ref[f"{key}|{m}"].astype(np.float64)
                if a.shape != b.shape:
                    mismatched_words += 1
                    continue
                d = np.abs(a - b)
                worst = max(worst, float(np.nanmax(d)) if d.size else 0.0)
                worst_rel = max(worst_rel, float(np.nanmax(d / np.maximum(np.abs(b), 1e-3))) if d.size else 0.0)
    return {"segments": segments, "mismatches": mismatched_words, "max_abs_diff": worst, "max_rel_diff": worst_rel,
            "loop_segments": sum(1 for k in ref.files if k.endswith("|acoustic"))}


def bench(size: str, workdir: Path, repeats: int) -> dict:
    from m3sa.data.sample import generate_sample

    sample_dir = workdir / f"sample-{size}"
    if not (sample_dir / "ground_truth.json").exists():
        t0 = time.perf_counter()
        generate_sample(sample_dir, size, seed=0, progress=False)
        print(f"[{size}] generated sample in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    input_mb = sum((sample_dir / f).stat().st_size for f in FILES) / 1e6
    _run_child("floor", str(sample_dir))  # warm the page cache
    floor, ext, nohash, hashing = [], [], [], []
    for _ in range(repeats):  # interleaved, so load changes hit all alike
        floor.append(_run_child("floor", str(sample_dir)))
        ext.append(_run_child("extract", str(sample_dir), str(workdir / f"features-{size}"), "1", "1"))
        nohash.append(_run_child("extract", str(sample_dir), str(workdir / f"features-{size}"), "1", "0"))
        hashing.append(_run_child("hash", str(sample_dir)))
    check_dir = workdir / f"features-{size}-raw"
    _run_child("extract", str(sample_dir), str(check_dir), "0", "1")
    loop = _run_child("loop", str(sample_dir), str(workdir / f"loop-{size}.npz"), "50")
    cmp = _compare(check_dir, workdir / f"loop-{size}.npz")
    f_s = statistics.median(r["seconds"] for r in floor)
    e_s = statistics.median(r["seconds"] for r in ext)
    n_s = statistics.median(r["seconds"] for r in nohash)
    h_s = statistics.median(r["seconds"] for r in hashing)
    return {
        "size": size, "input_mb": round(input_mb, 1), "segments": sum(ext[0]["counts"].values()),
        "floor_s": round(f_s, 3), "floor_runs": [round(r["seconds"], 3) for r in floor],
        "extract_s": round(e_s, 3), "extract_runs": [round(r["seconds"], 3) for r in ext],
        "extract_rss_mb": round(max(r["rss_mb"] for r in ext), 1),
        "extract_nohash_s": round(n_s, 3), "extract_nohash_runs": [round(r["seconds"], 3) for r in nohash],
        "nohash_floor_ratio": round(n_s / f_s, 2),
        "sha256_inputs_s": round(h_s, 3),
        "floor_rss_mb": round(max(r["rss_mb"] for r in floor), 1),
        "loop_s": round(loop["seconds"], 2), "loop_words": loop["words"],
        "floor_ratio": round(e_s / f_s, 2), "loop_speedup": round(loop["seconds"] / e_s, 1),
        "agreement": cmp,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["default", "large"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default="tmp/extract-bench", help="where samples and outputs go (git-ignored)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "floor":
            res = child_floor(rest[0])
        elif kind == "hash":
            res = child_hash(rest[0])
        elif kind == "extract":
            res = child_extract(rest[0], rest[1], rest[2] == "1", rest[3] == "1")
        else:
            res = child_loop(rest[0], rest[1], int(rest[2]))
        print(json.dumps(res))
        return
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"# extract benchmark: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}")
    print(f"# goals: extract <= {GOALS['floor_ratio']}x floor, >= {GOALS['loop_speedup']:.0f}x faster than the "
          f"per-word loop, peak RSS < {GOALS['rss_mb']:.0f} MB\n")
    print("| size | input MB | segments | floor s (h5py read) | extract s | extract / floor "
          "| extract s, no input hashing | that / floor | sha256 of inputs alone s | per-word loop s "
          "| loop / extract | extract peak RSS MB | max abs diff vs loop |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for size in args.sizes:
        r = bench(size, workdir, args.repeats)
        results.append(r)
        a = r["agreement"]
        print(f"| {size} | {r['input_mb']} | {r['segments']} | {r['floor_s']} | {r['extract_s']} | "
              f"{r['floor_ratio']} | {r['extract_nohash_s']} | {r['nohash_floor_ratio']} | {r['sha256_inputs_s']} | "
              f"{r['loop_s']} | {r['loop_speedup']} | {r['extract_rss_mb']} | "
              f"{a['max_abs_diff']:.2e} ({a['segments']} segments, {a['mismatches']} mismatched) |", flush=True)
    print(f"\n# load average at the end: {os.getloadavg()[0]:.1f}")
    print("\n```json\n" + json.dumps(results, indent=1) + "\n```")


if __name__ == "__main__":
    main()

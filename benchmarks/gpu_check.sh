#!/usr/bin/env bash
# GPU check: two training epochs of the default config and of a BERT-base-sized text encoder
# (random:bert-base, randomly initialised: no weights needed offline) on the default embedded
# dataset, on CUDA; prints samples/s and peak GPU memory (torch.cuda.max_memory_allocated).
#
#   bash scripts/setup.sh && bash benchmarks/gpu_check.sh [WORKDIR]
#
# Runs from a fresh copy of the repository with the venv of scripts/setup.sh (a CUDA build
# of torch is needed: the script stops with a clear message otherwise). Everything is
# written into WORKDIR (default: a new temp folder), nothing into the repository.
# About 2 minutes on an H200: sample and extract (~6 s), two two-epoch runs. The first epoch of
# a process pays CUDA warm-up (each new sequence length costs seconds once): read the second
# epoch's samples/s in the "per epoch" column for the steady rate.
# Knobs (environment): PYTHON (default .venv/bin/python), DEVICE (cuda; `cpu` for a dry run
# of the script itself), SIZE (default), EPOCHS (2), MAX_BATCHES (0 = the whole epoch).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
WORK="${1:-$(mktemp -d "${TMPDIR:-/tmp}/m3sa-gpu-check.XXXXXX")}"
export DEVICE="${DEVICE:-cuda}" SIZE="${SIZE:-default}" EPOCHS="${EPOCHS:-2}" MAX_BATCHES="${MAX_BATCHES:-0}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_DISABLE_PROGRESS_BARS=1 M3SA_ROOT="$ROOT"
mkdir -p "$WORK"
cd "$WORK"
echo "gpu_check: repository $ROOT, work folder $WORK, device $DEVICE, sample $SIZE"

"$PY" - <<'EOF'
import os, sys
import torch
if os.environ["DEVICE"] == "cuda" and not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device (built for CUDA: {torch.version.cuda}); "
             "run on a machine with an NVIDIA GPU and a CUDA build of torch (pip install torch==<pinned version> "
             "--index-url https://download.pytorch.org/whl/<cuda tag>), or DEVICE=cpu for a dry run")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"gpu_check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF

t0=$SECONDS
set_data=(--set "data.sample_size=$SIZE" --set data.source=sample --set data.sample_dir=data/sample
          --set data.features_dir=data/features)
"$PY" -m stages.sample --params "$ROOT/params.yaml" "${set_data[@]}"
"$PY" -m stages.extract --params "$ROOT/params.yaml" "${set_data[@]}"
echo "gpu_check: sample + extract in $((SECONDS - t0)) s"

"$PY" - <<'EOF'
import json, os, time
from pathlib import Path
import torch
from m3sa.checkpoint import load_checkpoint
from m3sa.config import load_params
from m3sa.training import train_all

root, device = Path(os.environ["M3SA_ROOT"]), os.environ["DEVICE"]
rows = []
for name, encoder in (("default", None), ("bert-base", "random:bert-base")):
    overrides = ["data.features_dir=data/features", "train.seeds=[0]", f"train.epochs={os.environ['EPOCHS']}",
                 f"train.max_batches={os.environ['MAX_BATCHES']}", f"train.device={device}",
                 f"train.models_dir=models/{name}", f"train.live_dir=dvclive/{name}"]
    if encoder:
        overrides.append(f"model.text_encoder={encoder}")
    cfg = load_params(root / "params.yaml", overrides)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    summary = train_all(cfg, metrics_path=f"metrics/train_{name}.json")
    wall = time.perf_counter() - t
    seed = summary["per_seed"][0]
    history = load_checkpoint(Path(cfg.train.models_dir) / "seed_0" / "last.pt")["train_state"]["history"]
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    rows.append((name, cfg.model.text_encoder, seed["samples_per_s"], [h["samples_per_s"] for h in history],
                 seed["data_wait_share"], peak, wall, summary["device"]))
print()
print("| config | text encoder | device | samples/s (training) | per epoch | waiting for data | peak GPU memory | wall (incl. load + valid) |")
print("|---|---|---|---|---|---|---|---|")
for name, enc, sps, per_epoch, wait, peak, wall, dev in rows:
    print(f"| {name} | {enc} | {dev} | {sps:.1f} | {', '.join(f'{v:.1f}' for v in per_epoch)} | "
          f"{100 * (wait or 0):.1f}% | {peak:.2f} GiB | {wall:.1f} s |")
EOF
echo "gpu_check: done in $((SECONDS - t0)) s (outputs in $WORK)"

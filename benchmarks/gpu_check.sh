#!/usr/bin/env bash
# GPU check: two training epochs of the default config and of a BERT-base-sized text encoder
# (random:bert-base, randomly initialised: no weights needed offline) on the default embedded
# dataset, on CUDA, with batch padding and with bucketed padding (static shapes); prints
# samples/s per epoch, the GPU's busy share of a step, kernel launches, copies and host
# synchronisations per step and peak GPU memory (benchmarks/gpu_bench.py).
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
# of the script itself), SIZE (default), EPOCHS (2), MAX_BATCHES (0 = the whole epoch),
# STEPS (20 profiled steps), CONFIGS ("default bert-base"), PADDING ("batch buckets"),
# COMPILE_MODES ("none"; e.g. "none reduce-overhead": compiling costs minutes), BASELINE_ROOT
# (an older checkout measured first), PIPELINE=1 (also the default pipeline's test MAE).
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

# Before and after on the same card in one call: BASELINE_ROOT=<an older checkout> (for
# example `git worktree add baseline 8112e84` inside this repository, so that the device copy
# carries it) runs the same benchmark with that code first.
bench=(--features data/features --device "$DEVICE" --epochs "$EPOCHS" --max-batches "$MAX_BATCHES"
       --steps "${STEPS:-20}" --configs ${CONFIGS:-default bert-base} --padding ${PADDING:-batch buckets}
       --compile-modes ${COMPILE_MODES:-none} --json gpu_bench.jsonl)
if [ -n "${BASELINE_ROOT:-}" ]; then
    M3SA_CODE_ROOT="$(cd "$BASELINE_ROOT" && pwd)" PYTHONPATH="$(cd "$BASELINE_ROOT" && pwd)" \
        "$PY" "$ROOT/benchmarks/gpu_bench.py" "${bench[@]}" --label before
fi
"$PY" "$ROOT/benchmarks/gpu_bench.py" "${bench[@]}" --label after
if [ "${PIPELINE:-0}" = 1 ]; then  # the default pipeline's test MAE on this device (3 seeds)
    "$PY" -m stages.train --params "$ROOT/params.yaml" --set data.features_dir=data/features --set "train.device=$DEVICE"
    "$PY" -m stages.evaluate --params "$ROOT/params.yaml" --set data.features_dir=data/features --set "train.device=$DEVICE"
    "$PY" -c "import json; m = json.load(open('metrics/test.json')); print('gpu_check: test MAE', m['mean']['mae'], '+-', m['std']['mae'], 'per seed', [round(s['mae'], 4) for s in m['per_seed']])"
fi
echo "gpu_check: done in $((SECONDS - t0)) s (outputs in $WORK)"

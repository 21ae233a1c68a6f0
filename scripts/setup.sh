#!/usr/bin/env bash
# Set up the project on a fresh machine: a virtual environment in .venv with every
# dependency at the pinned versions (constraints.txt). Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.m3sa-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    # torch is pinned to 2.13.0 (CPU build); an unpinned torch pulls a multi-GB CUDA build.
    .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
    echo "$want" > "$stamp"
fi
# Offline and quiet defaults for the tools the pipeline runs.
.venv/bin/dvc config --local core.analytics false >/dev/null 2>&1 || true
.venv/bin/dvc config --local core.check_update false >/dev/null 2>&1 || true

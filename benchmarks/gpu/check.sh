#!/usr/bin/env bash
# The GPU check on the GPU machine (no package index there): the wheels prepare.sh left in .whl/ go to a
# folder of their own, sweeplab runs from this checkout's src/, then benchmarks/gpu/check.py.
#   bash benchmarks/gpu/check.sh OUT [--dry-run] [--budget S] [--only STEP ...]
# PYTHON: the interpreter (default python3, the GPU machine's with torch); the wheels are installed only
# where it lacks Hydra or Optuna.
set -euo pipefail
out=$(realpath -m "${1:?usage: bash benchmarks/gpu/check.sh OUT [--dry-run] [--budget S] [--only STEP ...]}")
shift
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import hydra, optuna' 2>/dev/null; then
    site=${SWEEPLAB_GPU_SITE:-/tmp/sweeplab-site}
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no wheels in .whl/: run bash benchmarks/gpu/prepare.sh here first" >&2; exit 2; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # sweeplab and its Hydra plugin, from this checkout
exec "$PY" benchmarks/gpu/check.py --out "$out" "$@"

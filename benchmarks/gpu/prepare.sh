#!/usr/bin/env bash
# Prepare the GPU check here, where pip reaches an index: the wheels sweeplab needs beyond the GPU machine's
# own packages, at the versions this checkout's venv runs, into .whl/ (ignored by git, carried by the device
# tool), then proven: complete, and importable by a fresh Python 3.12 from that folder alone.
#   bash benchmarks/gpu/prepare.sh
# PYTHON (default .venv/bin/python) gives the versions, PYTHON312 (default python3.12, else pyenv's 3.12)
# makes the proof's venv, WHL (default .whl) is the folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
PY312=${PYTHON312:-python3.12}
if ! "$PY312" -c '' 2>/dev/null; then  # a pyenv shim without 3.12 selected: pyenv's own 3.12
    PY312=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)
fi
WHL=${WHL:-.whl}
QUIET=(--quiet --disable-pip-version-check)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done

rm -rf "$WHL" && mkdir -p "$WHL"
echo "== wheels for CPython 3.12 on x86-64 Linux, as $PY runs them"
for pin in $("$PY" benchmarks/gpu/wheels.py pins); do
    if ! "$PY" -m pip download "${QUIET[@]}" --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLATFORMS[@]}" -d "$WHL" "$pin" 2>/dev/null; then
        # the index has it only as an sdist (omegaconf's antlr4-python3-runtime): a pure-Python wheel of it
        "$PY" -m pip wheel "${QUIET[@]}" --no-deps -w "$WHL" "$pin"
    fi
    echo "  $pin"
done
"$PY" benchmarks/gpu/wheels.py verify "$WHL"

echo "== proof: a fresh Python 3.12 venv installs them from $WHL alone and imports what the check uses"
proof=$(mktemp -d)
trap 'rm -rf "$proof"' EXIT
"$PY312" -m venv "$proof/venv"
# what the GPU machine has of its own (numpy, PyYAML, packaging, ...), from the index
mapfile -t needs < <("$PY" benchmarks/gpu/wheels.py device-needs "$WHL")
"$proof/venv/bin/pip" install "${QUIET[@]}" "${needs[@]}"
# then exactly what check.sh does there
"$proof/venv/bin/pip" install "${QUIET[@]}" --no-index --no-deps --no-compile --no-cache-dir --target "$proof/site" "$WHL"/*.whl
PYTHONPATH="$proof/site:$PWD/src" "$proof/venv/bin/python" benchmarks/gpu/wheels.py imports
echo "ready: run on the GPU machine (carry .whl):  bash benchmarks/gpu/check.sh \$OUT"

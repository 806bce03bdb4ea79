#!/usr/bin/env bash
# The GPU check in one command: install the carried wheels, then write device_report.json and
# device_report.md (environment and anchors, the `gpu` tests, training throughput on the full
# configs, a real Snakemake run) into FOLDER, else $OUT, else ./device-report.
#
#   benchmarks/device/run.sh                 # on the GPU machine (at most 8 minutes on an H200)
#   benchmarks/device/run.sh --smoke [DIR]   # the same code paths on CPU at tiny sizes (2-4 minutes)
#
# Wheels: benchmarks/device/fetch_wheels.sh puts what the GPU image lacks into .whl/ (git-ignored);
# name .whl in the device tool's carry. Without .whl/ the current environment is used as it is, and
# --smoke uses it as it is unless SCICONV_DEVICE_WHEELS=1 (a rehearsal of the install on this machine:
# fetch the same set for its Python first, PYVER=3.11 DEST=.whl benchmarks/device/fetch_wheels.sh).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
smoke=()
if [ "${1:-}" = "--smoke" ]; then smoke=(--smoke); shift; fi
out="${1:-${OUT:-$repo/device-report}}"
mkdir -p "$out"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || python=python

if compgen -G "$repo/.whl/*.whl" >/dev/null && { [ ${#smoke[@]} = 0 ] || [ "${SCICONV_DEVICE_WHEELS:-0}" = 1 ]; }; then
    site="${SCICONV_DEVICE_SITE:-/tmp/sciconv-site}"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$repo"/.whl/*.whl
    export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$site/bin:$PATH"
fi
if ! command -v sciconv >/dev/null; then
    # the workflow's rules call `sciconv <step>`: without an installed project, the package from this tree
    shim="$(mktemp -d)"
    printf '#!/bin/sh\nexec "%s" -m sciconv.cli "$@"\n' "$(command -v "$python")" >"$shim/sciconv"
    chmod +x "$shim/sciconv"
    export PATH="$shim:$PATH" PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$python" "$repo/benchmarks/device/report.py" "${smoke[@]}" "$out"

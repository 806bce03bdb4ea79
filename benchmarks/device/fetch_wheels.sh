#!/usr/bin/env bash
# Download the wheels the GPU image lacks (benchmarks/device/wheels.txt) into .whl/, for that
# machine's Python (cp312, manylinux x86-64), without resolving dependencies (the list is the
# closure already), and check that they fit the device tool's 64 MiB together with the working tree.
#
#   benchmarks/device/fetch_wheels.sh               # cp312, into .whl/
#   PYVER=3.11 DEST=/tmp/whl311 benchmarks/device/fetch_wheels.sh   # the same set for a local rehearsal
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
pyver="${PYVER:-3.12}"
dest="${DEST:-$repo/.whl}"
budget_mib="${BUDGET_MIB:-64}"
mkdir -p "$dest"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
list="$(mktemp)"
grep -v '^#' "$repo/benchmarks/device/wheels.txt" | grep -v '^connection_pool' | sed '/^\s*$/d' >"$list"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    "${platforms[@]}" -d "$dest" -r "$list"
# connection_pool (a Snakemake dependency) is published as a source archive only: build its wheel here
if grep -q '^connection_pool==' "$repo/benchmarks/device/wheels.txt" && ! compgen -G "$dest/connection_pool-*.whl" >/dev/null; then
    python3 -m pip wheel -q --no-deps "$(grep '^connection_pool==' "$repo/benchmarks/device/wheels.txt")" -w "$dest"
fi
# MLflow's web UI (7.7 MB of its 11.7 MB wheel) is not used by the check: repack the wheel without it,
# its RECORD lines dropped with the files, so the rest of the budget fits what the runs import
python3 - "$dest" <<'PY'
import sys, zipfile
from pathlib import Path

for wheel in Path(sys.argv[1]).glob("mlflow-[0-9]*.whl"):
    with zipfile.ZipFile(wheel) as source:
        if not any(n.startswith("mlflow/server/js/") for n in source.namelist()):
            continue
        trimmed = wheel.with_suffix(".trimmed")
        with zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as target:
            for item in source.infolist():
                if item.filename.startswith("mlflow/server/js/"):
                    continue
                data = source.read(item)
                if item.filename.endswith(".dist-info/RECORD"):
                    data = b"".join(line for line in data.splitlines(keepends=True)
                                    if not line.startswith(b"mlflow/server/js/"))
                target.writestr(item, data)
    trimmed.replace(wheel)
PY
wheels_bytes=$(du -cb "$dest"/*.whl | tail -1 | cut -f1)
tree_bytes=$(cd "$repo" && { git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | grep total$ | cut -f1 | paste -sd+ | bc; })
total=$((wheels_bytes + tree_bytes))
printf '%d wheels: %.1f MiB; working tree %.1f MiB; together %.1f MiB of %d MiB\n' \
    "$(ls "$dest"/*.whl | wc -l)" "$(echo "$wheels_bytes/1048576" | bc -l)" "$(echo "$tree_bytes/1048576" | bc -l)" \
    "$(echo "$total/1048576" | bc -l)" "$budget_mib"
if [ "$total" -gt $((budget_mib * 1048576)) ]; then
    echo "over the device tool's budget: drop wheels from benchmarks/device/wheels.txt" >&2
    exit 1
fi

#!/usr/bin/env bash
# The `gpu` tests on a CUDA machine with no network (one GPU, a few minutes): install what it lacks from the wheels
# `scripts/gpu_wheels.sh` downloaded (the .gpu-wheels folder, carried with the checkout), install the project, print
# the device, run the tests and print one table: test, result, seconds.
#
#   bash scripts/gpu_check.sh [pytest arguments, e.g. -k labeler]
#
# Environment: PYTHON (the one with torch; default python3), WHEELS (default .gpu-wheels), SITE (where the wheels and
# the project are installed, put first on PYTHONPATH; default /tmp/rlaifv-gpu-site), REPORT_DIR (logs and JUnit XML;
# default /tmp/rlaifv-gpu-check).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.gpu-wheels}
SITE=${SITE:-/tmp/rlaifv-gpu-site}
REPORT_DIR=${REPORT_DIR:-/tmp/rlaifv-gpu-check}
mkdir -p "$REPORT_DIR"
rows=()

step() {  # NAME COMMAND...: run COMMAND (output to the install log) and add a row for it
    local name=$1 start=$EPOCHREALTIME result=passed
    shift
    "$@" >>"$REPORT_DIR/install.log" 2>&1 || result=failed
    rows+=("$name" "$result" "$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')")
    [[ $result == passed ]] || { tail -20 "$REPORT_DIR/install.log"; echo "$name failed: $REPORT_DIR/install.log"; }
}

pip_install=("$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE")
step "install wheels ($(ls "$WHEELS"/*.whl | wc -l))" "${pip_install[@]}" "$WHEELS"/*.whl
export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1
step "install the project" "${pip_install[@]}" --find-links "$WHEELS" --no-build-isolation .

"$PYTHON" - <<'PY' || exit 1
import importlib.metadata as metadata

import torch
from packaging.requirements import Requirement

if not torch.cuda.is_available():
    raise SystemExit(f"torch {torch.__version__} sees no CUDA GPU")
props = torch.cuda.get_device_properties(0)
print(f"device: {props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}, "
      f"torch {torch.__version__} (CUDA {torch.version.cuda})")
print("versions:", ", ".join(f"{name} {metadata.version(name)}" for name in
      ("transformers", "trl", "datasets", "accelerate", "peft", "huggingface_hub", "pyarrow")))
unmet, todo, seen = [], ["rlaifv-trl"], {"rlaifv-trl"}
while todo:  # the project's requirements, and theirs, as installed
    name = todo.pop()
    for text in metadata.requires(name) or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            unmet.append(f"{requirement} (missing; {name} needs it)")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{requirement} (found {version}; {name} needs it)")
        if requirement.name.lower() not in seen:
            seen.add(requirement.name.lower())
            todo.append(requirement.name)
print("requirements:", "all met" if not unmet else "NOT MET: " + "; ".join(unmet))
PY

start=$EPOCHREALTIME
"$PYTHON" -m pytest -m gpu -q --junitxml "$REPORT_DIR/junit.xml" "$@" 2>&1 | tee "$REPORT_DIR/pytest.log"
status=${PIPESTATUS[0]}
rows+=("pytest -m gpu (all)" "exit $status" "$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')")

"$PYTHON" - "$REPORT_DIR/junit.xml" "${rows[@]}" <<'PY'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

junit, rows = Path(sys.argv[1]), sys.argv[2:]
table = [tuple(rows[i : i + 3]) for i in range(0, len(rows), 3)]
if junit.exists():
    for case in ET.parse(junit).iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        test = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        table.insert(-1, (test, {"failure": "failed"}.get(outcome, outcome), f"{float(case.get('time', 0)):.1f}"))
print("\n| test | result | seconds |\n|---|---|---|")
print("\n".join(f"| {test} | {result} | {seconds} |" for test, result, seconds in table))
PY
exit "$status"

#!/usr/bin/env bash
# Download the wheels a CUDA machine without network lacks for `scripts/gpu_check.sh`, into one git-ignored folder
# that travels with the checkout. Its image is assumed to hold torch, transformers, accelerate, peft and the usual
# scientific stack (numpy, pandas, pyarrow, scikit-learn, xxhash, ...), but no TRL, datasets or vLLM, and transformers
# and huggingface_hub older than the project needs. Each package comes at the version this environment runs the suite
# with, as a wheel for the GPU machine's Python (CPython, x86-64 Linux).
#
#   bash scripts/gpu_wheels.sh              # the list below
#   bash scripts/gpu_wheels.sh pyarrow      # and more names, e.g. a package the GPU machine holds too old
#
# Environment: PYTHON (whose installed versions are taken; default .venv/bin/python), WHEELS (default .gpu-wheels),
# GPU_PYTHON_VERSION (default 3.12), LIMIT_MIB (what may travel, checkout and wheels together; default 64).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
WHEELS=${WHEELS:-.gpu-wheels}
GPU_PYTHON_VERSION=${GPU_PYTHON_VERSION:-3.12}
LIMIT_MIB=${LIMIT_MIB:-64}

PACKAGES=(
    trl datasets evaluate dill multiprocess                                     # absent there
    transformers huggingface_hub kernels httpx2 httpcore2 truststore tomlkit   # transformers 5.23+, Hub client 2.x
    accelerate peft fsspec lazy_loader sentencex                               # the project's pinned ranges
    hatchling trove-classifiers                                                # build the project with no index
)
mapfile -t specs < <("$PYTHON" -c '
import importlib.metadata as m, sys
for name in sys.argv[1:]:
    print(f"{name}=={m.version(name)}")
' "${PACKAGES[@]}" "$@")

mkdir -p "$WHEELS"
rm -f "$WHEELS"/*.whl  # one version of each: two would stop the install
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" \
    --python-version "$GPU_PYTHON_VERSION" --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "${specs[@]}"

# What travels: the checkout (tracked and untracked, not ignored) and the wheels.
checkout=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
wheels=$(du -cb "$WHEELS"/*.whl | tail -1 | cut -f1)
ls -S -l "$WHEELS"/*.whl | awk '{printf "%8.2f MiB  %s\n", $5 / 1048576, $9}'
awk -v n="$(ls "$WHEELS"/*.whl | wc -l)" -v c="$checkout" -v w="$wheels" -v limit="$LIMIT_MIB" 'BEGIN {
    printf "%d wheels: %.1f MiB; checkout: %.1f MiB; together: %.1f MiB of %d MiB\n", n, w / 1048576, c / 1048576,
        (c + w) / 1048576, limit
    if (c + w > limit * 1048576) { print "over the limit: the largest wheels are listed first"; exit 1 }
}'

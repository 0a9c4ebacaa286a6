# rlaifv-trl commands. Both work on a fresh clone: they build a virtual environment in .venv, install torch first (a
# CPU-capable build with torchvision, so Qwen2-VL processors can be built), then the project.
#   make demo   the iterative recipe on the embedded default (ShapesWorld, small built-in VLMs, CPU, no Hub account)
#   make test   the test suite (it also builds vLLM's CPU build in .venv-vllm, for the vllm backends' tests)
#   make quick  the suite without its slow end-to-end runs (marker `slow`), for quick loops
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

VLLM_VENV ?= .venv-vllm

.PHONY: install vllm-env demo test quick quality clean

DEMO_CONFIG ?= recipes/configs/tiny_cpu_biased.yaml
DEMO_OUTPUT ?= runs/tiny-cpu-biased
DEMO_ARGS ?=
DEMO_THREADS ?= 2

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

# vLLM's CPU build in its own environment (it pins its own torch and transformers), for the vllm backends' tests.
$(VLLM_VENV)/.installed: scripts/make_vllm_env.sh
	rm -rf $(VLLM_VENV)
	PYTHON=$(PYTHON) scripts/make_vllm_env.sh $(VLLM_VENV)

vllm-env: $(VLLM_VENV)/.installed

# Two torch threads: training uses both cores; sampling batches of 16 prompts lose little to the second thread. Then
# the base and every iteration at greedy and at temperature 1.0, and Best-of-8 against greedy (benchmarks/efficacy.py),
# unless the report is newer than the run's last policy.
demo: install
	OMP_NUM_THREADS=$(DEMO_THREADS) $(PY) recipes/iterative_dpo.py --config $(DEMO_CONFIG) --output_dir $(DEMO_OUTPUT) $(DEMO_ARGS)
	@if [ $(DEMO_OUTPUT)/efficacy/report.md -nt $(DEMO_OUTPUT)/models ]; then cat $(DEMO_OUTPUT)/efficacy/report.md; \
	else OMP_NUM_THREADS=$(DEMO_THREADS) $(PY) benchmarks/efficacy.py --runs $(DEMO_OUTPUT) --temperatures 0 1 \
		--baselines best_of_n --report $(DEMO_OUTPUT)/efficacy --threads $(DEMO_THREADS); fi

test: install vllm-env
	RLAIFV_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(PY) -m pytest

quick: install vllm-env
	RLAIFV_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(PY) -m pytest -m "not slow"

quality: install
	$(PY) -m pip install --quiet ruff
	$(VENV)/bin/ruff check src tests recipes examples benchmarks scripts
	$(VENV)/bin/ruff format --check src tests recipes examples benchmarks scripts

clean:
	rm -rf $(VENV) $(VLLM_VENV) build dist *.egg-info

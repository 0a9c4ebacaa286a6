# rlaifv-trl developer commands. `make test` works on a fresh clone: it builds a virtual environment in .venv,
# installs torch first (a CPU-capable build with torchvision, so Qwen2-VL processors can be built), then the project.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install test quality clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest

quality: install
	$(PY) -m pip install --quiet ruff
	$(VENV)/bin/ruff check src tests recipes examples benchmarks
	$(VENV)/bin/ruff format --check src tests recipes examples benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info

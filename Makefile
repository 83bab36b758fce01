# Two commands do all set-up on a fresh machine: `make up` (the whole system) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU wheel on the team's machines; an unpinned resolve would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed
# What `make lint` checks; ruff and mypy read their settings from pyproject.toml (mypy's file list too).
LINT_PATHS := lmc_core worker app tests benchmarks
# `make test-fast`: everything but full studies, PostgreSQL and the browser (markers: pyproject.toml, tests/conftest.py).
FAST := not slow and not postgres and not browser

.PHONY: install up test test-fast lint demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_PIN)"
	$(PIP) install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(VENV)/bin/lmc up

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "$(FAST)"

# All three checks run, so one report shows every problem; the target fails when any of them does.
lint: $(STAMP)
	@status=0; \
	echo "ruff check"; $(PY) -m ruff check $(LINT_PATHS) || status=1; \
	echo "ruff format --check"; $(PY) -m ruff format --check $(LINT_PATHS) || status=1; \
	echo "mypy"; $(PY) -m mypy || status=1; \
	exit $$status

demo: $(STAMP)
	$(VENV)/bin/lmc run --preset mnist1d

bench: $(STAMP)
	$(PY) benchmarks/bench_batched_copies.py
	$(PY) benchmarks/bench_path.py
	$(PY) benchmarks/bench_distill.py
	$(PY) benchmarks/bench_surface.py
	$(PY) benchmarks/bench_hessian.py
	$(PY) benchmarks/bench_service.py

clean:
	rm -rf $(VENV) runs lmc-data .pytest_cache .mypy_cache .ruff_cache

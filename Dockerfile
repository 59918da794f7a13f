# syntax=docker/dockerfile:1
#
# Esteira images:
#   docker build --target operator     -t esteira/operator:dev .
#   docker build --target model-server -t esteira/model-server:dev .
#   docker build --target model-server-kserve -t esteira/model-server-kserve:dev .
#
# The model server is TorchServe 0.12 with Java 17 and Esteira's handlers; torch is the CPU build unless
# TORCH_INDEX_URL names a CUDA wheel index (those wheels carry the CUDA runtime, so the node only needs the
# driver). SERVING_BASE may name another Debian-based image with Python 3.11 (a CUDA base, for instance).
# Both images run as UID 1000 and install from requirements/constraints.txt.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG SERVING_BASE=${PYTHON_IMAGE}

# --- Esteira as a wheel (operator and model_handlers packages) ----------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY model_handlers/ model_handlers/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# --- operator: Kopf controller, no torch ---------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS operator-env
COPY requirements/constraints.txt /tmp/constraints.txt
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/venv \
    && wheel="$(find /wheels -name 'esteira_serving-*.whl')" \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt "${wheel}[operator]" \
    && if /opt/venv/bin/python -c "import torch" 2>/dev/null; then echo "torch must not be in the operator image" >&2; exit 1; fi

FROM ${PYTHON_IMAGE} AS operator
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN useradd --uid 1000 --user-group --no-create-home --shell /usr/sbin/nologin esteira
COPY --from=operator-env /opt/venv /opt/venv
USER 1000:1000
ENTRYPOINT ["python", "-m", "esteira.controller"]

# --- model server: TorchServe 0.12 + Java 17 + torch + Esteira's handlers -----------------------------
FROM ${SERVING_BASE} AS model-server-env
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
COPY requirements/constraints.txt /tmp/constraints.txt
COPY --from=wheel /wheels /wheels
# torch first from its own index (the CPU build by default), then everything else from PyPI, all constrained.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt \
        --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple "torch==${TORCH_VERSION}" \
    && wheel="$(find /wheels -name 'esteira_serving-*.whl')" \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/constraints.txt "${wheel}[serving]" \
    && /opt/venv/bin/python -c "import torch, ts, yaml, model_handlers.tabular, model_handlers.image, esteira.packaging.entrypoint"

FROM ${SERVING_BASE} AS model-server
# Debian's JRE; slim images lack the man directory its post-install script writes into.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && java -version
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/model-server --shell /usr/sbin/nologin model-server
COPY --from=model-server-env /opt/venv /opt/venv
# Defaults for `docker run`; Esteira's ClusterServingRuntime sets the same. TorchServe answers on 8080
# (predictions: KServe v1 and Open Inference Protocol v2) and 8082 (Prometheus); management stays on loopback.
# TS_DISABLE_TOKEN_AUTHORIZATION is a switch, not a secret (see esteira/packaging/config.py for why it is off).
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ESTEIRA_MODEL_DIR=/mnt/models \
    ESTEIRA_RUNTIME_DIR=/tmp/esteira \
    TS_INFERENCE_ADDRESS=http://0.0.0.0:8080 \
    TS_MANAGEMENT_ADDRESS=http://127.0.0.1:8081 \
    TS_METRICS_ADDRESS=http://0.0.0.0:8082 \
    TS_METRICS_MODE=prometheus \
    TS_DISABLE_TOKEN_AUTHORIZATION=true \
    TS_ENABLE_MODEL_API=false \
    TS_OPEN_INFERENCE_PROTOCOL=oip
WORKDIR /home/model-server
USER 1000:1000
EXPOSE 8080 8082
# Ready means the model's workers are up (TorchServe's /ping stays healthy when a model failed to load).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "esteira.packaging.healthcheck"]
ENTRYPOINT ["python", "-m", "esteira.packaging.entrypoint"]

# --- esteira-kserve: Esteira's handlers on KServe's Python model server, no Java ----------------------
# KServe's pins conflict with the operator's (python-dateutil), so this image installs its own pinned set
# (requirements/kserve-runtime.txt, with --no-deps) and Esteira's wheel without its extras.
FROM ${SERVING_BASE} AS model-server-kserve-env
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
COPY requirements/kserve-runtime.txt /tmp/requirements/kserve-runtime.txt
COPY tests/support/kserve-client-requirements.txt /tmp/tests/support/kserve-client-requirements.txt
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps \
        --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple "torch==${TORCH_VERSION}" \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps -r /tmp/requirements/kserve-runtime.txt \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps "$(find /wheels -name 'esteira_serving-*.whl')" \
    && /opt/venv/bin/python -c "import kserve, torch, model_handlers.kserve_server, model_handlers.tabular, model_handlers.image"

FROM ${SERVING_BASE} AS model-server-kserve
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/model-server --shell /usr/sbin/nologin model-server
COPY --from=model-server-kserve-env /opt/venv /opt/venv
# Defaults for `docker run`; the esteira-kserve ClusterServingRuntime sets the same: inference and health on
# 8080, Prometheus on 8082 as esteira-torchserve.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ESTEIRA_MODEL_DIR=/mnt/models \
    ESTEIRA_RUNTIME_DIR=/tmp/esteira
WORKDIR /home/model-server
USER 1000:1000
EXPOSE 8080 8082
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=4)"]
ENTRYPOINT ["python", "-m", "model_handlers.kserve_server", "--http-port=8080", "--metrics-port=8082"]

"""The words every layer shares: decisions, commands, labels and annotations, API versions, environment
names, headers and time formats. The bottom of the core: it imports nothing from Esteira, and nothing
above it defines these again.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

from esteira import API_GROUP

# -- objects Esteira writes -------------------------------------------------------------------------------

ISVC_API_VERSION = "serving.kserve.io/v1beta1"
HTTPROUTE_API_VERSION = "gateway.networking.k8s.io/v1"
# KServe's stock ingress domain (inferenceservice-config ingress.ingressDomain): hosts are <name>-<namespace>.<domain>
DEFAULT_INGRESS_DOMAIN = "example.com"
JOB_API_VERSION = "batch/v1"
ESTEIRA_RUNTIME = "esteira-torchserve"  # Esteira's ClusterServingRuntime (TorchServe 0.12)
ESTEIRA_KSERVE_RUNTIME = "esteira-kserve"  # Esteira's handler on KServe's own Python model server
ESTEIRA_RUNTIMES = (ESTEIRA_RUNTIME, ESTEIRA_KSERVE_RUNTIME)
MODEL_CONTAINER = "kserve-container"  # KServe's name for the model server container
# Standard mode: a stopping model server keeps serving this long before its SIGTERM (a preStop sleep), while the
# Service's endpoints and the gateway's routes stop sending to it; `spec.termination.drainSeconds` overrides it.
# Knative mode drains through its queue-proxy, and its container field mask (knative serving
# pkg/apis/serving/fieldmask.go: ContainerMask) drops a container's lifecycle.
DEFAULT_DRAIN_SECONDS = 5
# Kubernetes' terminationGracePeriodSeconds when a pod leaves it out (k8s.io/api core/v1 DefaultTerminationGracePeriodSeconds).
DEFAULT_GRACE_PERIOD_SECONDS = 30
# Knative's default max-revision-timeout-seconds (config-defaults; knative.dev/serving pkg/apis/config/defaults.go):
# its revision validation refuses a longer timeoutSeconds, so the spec does too, in either mode.
MAX_REQUEST_TIMEOUT_SECONDS = 600


def is_esteira_runtime(runtime: str | None) -> bool:
    """Esteira's runtimes batch inside the model server from the batching env; any other gets KServe's batcher."""
    return runtime in ESTEIRA_RUNTIMES


LABEL_DEPLOYMENT = f"{API_GROUP}/deployment"
LABEL_REVISION = f"{API_GROUP}/revision"
LABEL_RETRAIN_RUN = f"{API_GROUP}/retrain-run"
ANNOTATION_MODEL_VERSION = f"{API_GROUP}/model-version"
ANNOTATION_LAST_APPLIED = f"{API_GROUP}/last-applied"
COMMAND_ANNOTATION = f"{API_GROUP}/command"
# A Secret the operator may send to Prometheus carries this label with "true" (set by whoever may edit Secrets).
LABEL_PROMETHEUS_AUTH = f"{API_GROUP}/prometheus-auth"
# Keys of a Prometheus credentials Secret (and files of the operator's --prometheus-auth-dir).
PROMETHEUS_TOKEN_KEY, PROMETHEUS_USERNAME_KEY, PROMETHEUS_PASSWORD_KEY, PROMETHEUS_CA_KEY = (
    "token",
    "username",
    "password",
    "ca.crt",
)

KSERVE_DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
KSERVE_AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
KSERVE_PROMETHEUS_SCRAPING = "serving.kserve.io/enable-prometheus-scraping"
KSERVE_TAG_ROUTING = "serving.kserve.io/enable-tag-routing"
KNATIVE_AUTOSCALING_CLASS = "autoscaling.knative.dev/class"

# -- the model server's environment and the revision header ---------------------------------------------

ENV_DEPLOYMENT = "ESTEIRA_DEPLOYMENT"
ENV_MODEL_NAME = "ESTEIRA_MODEL_NAME"
ENV_REVISION = "ESTEIRA_REVISION"
ENV_MODEL_VERSION = "ESTEIRA_MODEL_VERSION"
ENV_BATCH_SIZE = "ESTEIRA_BATCH_SIZE"
ENV_MAX_BATCH_DELAY_MS = "ESTEIRA_MAX_BATCH_DELAY_MS"
ENV_JOINED_REQUESTS = "ESTEIRA_JOINED_REQUESTS"  # TorchServe's workers: most requests joined in one before them
ENV_TORCH_THREADS = "ESTEIRA_TORCH_THREADS"  # torch intra-op threads of a model server (default: CPUs - 1)
MAX_UNIX_SOCKET_PATH = 107  # bytes of a Unix socket's path: sun_path holds 108 on Linux, the last a NUL
ENV_IDLE_POLL_US = "ESTEIRA_IDLE_POLL_US"  # esteira-kserve: longest poll after going idle, in us (default 0: none)
ENV_WORKERS = "ESTEIRA_WORKERS"  # model processes, each with the model loaded: esteira-kserve (default 1), TorchServe
MAX_WORKERS = 64
ENV_RETRAIN_RUN = "ESTEIRA_RETRAIN_RUN"  # a retraining run's number, its reason and its evidence (JSON)
ENV_RETRAIN_REASON = "ESTEIRA_RETRAIN_REASON"
ENV_RETRAIN_EVIDENCE = "ESTEIRA_RETRAIN_EVIDENCE"
REVISION_HEADER = "x-model-revision"  # pins a request to one revision; answers say which one served it
CALLER_LEFT_STATUS = 499  # nginx's "client closed request": how a request whose caller left before its answer counts
# Envoy (Istio's sidecars and gateways, Knative's and Gateway API's Envoy-based ingresses) tells the server behind
# it how long it will wait for a request's answer, so that the server can give up early on what it cannot answer
# in time (Envoy's router filter documentation); esteira up's router says it as the gateway would.
EXPECTED_TIMEOUT_HEADER = "x-envoy-expected-rq-timeout-ms"
RETRY_AFTER_SECONDS = 1  # what a model server's refused caller is told to wait: the least a Retry-After can say

# The top finite bucket of every request-duration histogram Esteira writes (the model servers', the front's and
# `esteira up`'s router): a quantile past it reads as this bound, whatever it is.
LATENCY_TOP_SECONDS = 10.0

# Characters that would break TorchServe's worker metric line ("[METRICS]name.unit:value|#dim:value,dim:value|...").
_SERIES_UNSAFE = re.compile(r"[,:|#\s]")


def series_label(value: str) -> str:
    """A name (a model's, a feature's, a class's) as the model server's metric series carry it: what survives
    TorchServe's metric line, in every runtime alike. The drift policy looks a feature's override up by it."""
    return _SERIES_UNSAFE.sub("_", value)[:100] or "_"


# -- esteira up: where the CLI finds a run, and where local model folders may live --------------------------

ENV_LOCAL_URL = "ESTEIRA_LOCAL_URL"  # the router the CLI talks to
ENV_LOCAL_TOKEN = "ESTEIRA_LOCAL_TOKEN"  # the run's /control token, overriding the token file
ENV_LOCAL_TOKEN_DIR = "ESTEIRA_LOCAL_TOKEN_DIR"  # where `esteira up` writes token files
ENV_LOCAL_ROOT = "ESTEIRA_LOCAL_ROOT"  # when set, every local storageUri must resolve inside it
ENV_KSERVE_PYTHON = "ESTEIRA_KSERVE_PYTHON"  # the Python `esteira up` runs the esteira-kserve runtime with
ENV_TORCHSERVE_VMARGS = "ESTEIRA_TORCHSERVE_VMARGS"  # the JVM flags `esteira up` gives TorchServe
MODEL_CONFIG_FILE = "esteira-model.json"  # what a model takes and answers, an extra file of its archive

# -- inference logging and ground truth -------------------------------------------------------------------

ENV_NAMESPACE = "ESTEIRA_NAMESPACE"
ENV_LOG_MODE = "ESTEIRA_LOG_MODE"  # none | all | request | response
ENV_LOG_URL = "ESTEIRA_LOG_URL"  # where records go (the collector's /v1/records, or any CloudEvents URL)
ENV_LOG_SAMPLE_RATE = "ESTEIRA_LOG_SAMPLE_RATE"
ENV_LOG_REDACT = "ESTEIRA_LOG_REDACT"  # a JSON list of field names
ENV_LOG_TOKEN = "ESTEIRA_LOG_TOKEN"  # bearer token for the collector
ENV_LOG_FLUSH_DIR = "ESTEIRA_LOG_FLUSH_DIR"  # where TorchServe's workers say they flush when asked (log_flush)
ENV_COLLECTOR_TOKEN = "ESTEIRA_COLLECTOR_TOKEN"  # the collector's shared secret (and the operator's, to post decisions)
ENV_COLLECTOR_URL = "ESTEIRA_COLLECTOR_URL"  # the operator's: where the collector listens
ENV_COLLECTOR_TOKEN_FILE = "ESTEIRA_COLLECTOR_TOKEN_FILE"  # the operator's: a file holding that secret
REQUEST_ID_HEADER = "x-request-id"  # the id records and labels are joined on; answers echo it
# KServe's logger event types (pkg/logger), so its consumers read Esteira's records too.
CE_INFERENCE_REQUEST = "org.kubeflow.serving.inference.request"
CE_INFERENCE_RESPONSE = "org.kubeflow.serving.inference.response"
CE_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
# CloudEvents extension attributes: KServe's, then Esteira's own.
CE_INFERENCE_SERVICE = "inferenceservicename"
CE_NAMESPACE = "namespace"
CE_COMPONENT = "component"
CE_ENDPOINT = "endpoint"
CE_MODEL_NAME = "modelname"
CE_MODEL_VERSION = "modelversion"
CE_REVISION = "revision"
CE_PREDICTIONS = "predictions"  # JSON list: the label or value predicted for each instance
COLLECTOR_RECORDS_PATH = "/v1/records"
COLLECTOR_LABELS_PATH = "/v1/labels"
COLLECTOR_AUDIT_PATH = "/v1/audit"
COLLECTOR_EXPORT_PATH = "/v1/export"

# -- decisions and commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Something Esteira decided, worth an Event: Normal or Warning, a reason and a message."""

    reason: str
    message: str
    warning: bool = False


Action = Literal["promote", "pause", "resume", "abort", "retry", "rollback"]
ACTIONS: tuple[Action, ...] = get_args(Action)


@dataclass(frozen=True)
class Command:
    """A person's instruction, carried out once (its id is remembered in status.lastCommand)."""

    id: str
    action: Action
    full: bool = False
    revision: int | None = None

    def encode(self) -> str:
        """The command annotation's value."""
        return json.dumps({k: v for k, v in asdict(self).items() if v not in (None, False)}, sort_keys=True)

    @classmethod
    def decode(cls, raw: str) -> Command:
        """Parse an annotation value; ValueError names what is wrong."""
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        action = data.get("action")
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
        revision = data.get("revision")
        if revision is not None and (not isinstance(revision, int) or isinstance(revision, bool) or revision < 1):
            raise ValueError(f"revision must be a positive integer, got {revision!r}")
        if "id" not in data:
            raise ValueError("missing id")
        return cls(id=str(data["id"]), action=action, full=bool(data.get("full", False)), revision=revision)


# -- time ------------------------------------------------------------------------------------------------

_DURATION = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def parse_duration(text: str) -> timedelta:
    """'1m30s' -> 90 seconds (the CRD's duration pattern)."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))


def format_time(moment: datetime) -> str:
    return moment.strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT)

"""The names KServe v0.20.0 gives the objects behind an InferenceService (``pkg/constants/constants.go``).

Deployments, Services, HPAs and ScaledObjects of a predictor all take the predictor service name, and
Knative revisions are that name plus a five-digit counter, so queries and routes must use these.
"""

from __future__ import annotations

PREDICTOR = "predictor"  # constants.go: Predictor InferenceServiceComponent
TRANSFORMER = "transformer"  # constants.go: Transformer
EXPLAINER = "explainer"  # constants.go: Explainer
CANARY = "canary"  # constants.go: InferenceServiceCanary
DEFAULT_DOMAIN = "example.com"  # config/configmap/inferenceservice.yaml: ingress.ingressDomain


def predictor_service_name(isvc: str, predictor_name: str | None = None) -> str:
    """``<isvc>-predictor``, or ``<isvc>-<name>-predictor`` for a named predictor (constants.go: PredictorServiceName).

    The same in Knative and Standard mode: components/predictor.go builds the Knative Service and the
    raw Deployment from it, and reconcileCanaryDeployments names each canary with its predictor name.
    """
    if predictor_name:
        return f"{isvc}-{predictor_name}-{PREDICTOR}"
    return f"{isvc}-{PREDICTOR}"


def predictor_worker_service_name(isvc: str) -> str:
    """Multi-node worker Service (constants.go: PredictorWorkerServiceName)."""
    return f"{isvc}-{PREDICTOR}-worker"


def canary_predictor_service_name(isvc: str) -> str:
    """The legacy canary Service name (constants.go: CanaryPredictorServiceName); unused by ``spec.canary``."""
    return f"{isvc}-{PREDICTOR}-{CANARY}"


def transformer_service_name(isvc: str) -> str:
    """constants.go: TransformerServiceName."""
    return f"{isvc}-{TRANSFORMER}"


def explainer_service_name(isvc: str) -> str:
    """constants.go: ExplainerServiceName."""
    return f"{isvc}-{EXPLAINER}"


def knative_revision_name(service: str, number: int) -> str:
    """Knative names the n-th revision of a Service ``<service>-0000n`` (knative serving: configuration names)."""
    return f"{service}-{number:05d}"


def raw_service_label(service: str) -> str:
    """Pods of a Standard-mode component carry ``app: isvc.<service>`` (constants.go: GetRawServiceLabel)."""
    return f"isvc.{service}"


def host_name(isvc: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    """``<name>.<namespace>.<domain>`` (constants.go: InferenceServiceHostName)."""
    return f"{isvc}.{namespace}.{domain}"

"""The names KServe derives from an InferenceService, which queries and routes must use verbatim."""

from __future__ import annotations

from esteira.api.errors import InvalidSpec

# Kubernetes Services and Knative revisions are DNS labels; KServe derives both from our names.
MAX_DERIVED_NAME = 63
KNATIVE_REVISION_SUFFIX = "-00001"  # Knative numbers revisions `<service>-00001` onwards


def predictor_service_name(isvc_name: str, predictor_name: str | None = None) -> str:
    """KServe's name for a predictor's Deployment, Service, HPA and ScaledObject (and its pods' prefix).

    KServe v0.20 `pkg/constants/constants.go` PredictorServiceName: `<isvc>-predictor`, or
    `<isvc>-<predictor name>-predictor` for a named predictor such as a Standard-mode canary.
    """
    return f"{isvc_name}-{predictor_name}-predictor" if predictor_name else f"{isvc_name}-predictor"


def check_derived_names(names: list[str]) -> None:
    """Refuse a name whose derived objects would not fit, before KServe fails on them at run time."""
    too_long = [n for n in names if len(n) > MAX_DERIVED_NAME]
    if too_long:
        raise InvalidSpec.single(
            "metadata.name",
            f"is too long for the names KServe derives from it ({', '.join(too_long)}: over {MAX_DERIVED_NAME} "
            "characters): choose a shorter name",
        )

"""KServe's InferenceService webhooks as an emulator admission plugin (config/webhook/manifests.yaml:
the defaulter and the validator both match CREATE and UPDATE of serving.kserve.io/v1beta1 inferenceservices)."""

from __future__ import annotations

from typing import Any

import kmock

from ..admission import denied
from .admission import VALIDATOR, AdmissionDenied, default_inference_service, validate_create, validate_update

INFERENCE_SERVICES = kmock.resource("serving.kserve.io", "v1beta1", "inferenceservices")


class KServeWebhooks:
    """``inferenceservice.kserve-webhook-server.defaulter`` and ``...validator`` with the stock configuration."""

    def mutate(self, old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
        return default_inference_service(new)

    def validate(self, old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
        try:
            return validate_create(new) if old is None else validate_update(old, new)
        except AdmissionDenied as exc:
            raise denied(VALIDATOR, exc.message) from None

"""Admission plugins: the webhooks a cluster runs on writes, in kube-apiserver's order.

kube-apiserver admits a create or update in this order: mutating webhooks, then its own validation
(schema defaulting, pruning and validation, metadata rules), then validating webhooks
(kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/). Writes to the
``/status`` subresource and deletes are not sent to webhooks registered for the main resource.
"""

from __future__ import annotations

from typing import Any, Protocol

import kmock

from . import errors


class AdmissionPlugin(Protocol):
    """One webhook pair for a resource; ``old`` is None on create."""

    def mutate(self, old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
        """Return the object to continue with (the mutating webhook's patch applied)."""
        ...

    def validate(self, old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
        """Return warnings, or raise :func:`denied` as kube-apiserver reports a refusal."""
        ...


def denied(webhook: str, message: str) -> kmock.KubernetesError:
    """How kube-apiserver relays a controller-runtime webhook's denial (webhook/errors.go: ToStatusErr).

    controller-runtime answers a validator's error with code 403, reason Forbidden (admission.Denied);
    the API server prefixes the message with the webhook's name.
    """
    return errors.api_error(403, "Forbidden", f'admission webhook "{webhook}" denied the request: {message}')

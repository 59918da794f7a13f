"""Kubernetes ``Status`` failures, as kube-apiserver words them, so clients map them to the right exceptions."""

from __future__ import annotations

from typing import Any

import kmock


def api_error(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    """An error that kmock renders as a ``Status`` object with this HTTP code."""
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details)


def _details(resource: kmock.resource, name: str | None) -> dict[str, Any]:
    return {"name": name or "", "group": resource.group or "", "kind": resource.plural or ""}


def _qualified(resource: kmock.resource) -> str:
    return f"{resource.plural}.{resource.group}" if resource.group else str(resource.plural)


def not_found(resource: kmock.resource, name: str | None) -> kmock.KubernetesError:
    return api_error(404, "NotFound", f'{_qualified(resource)} "{name}" not found', **_details(resource, name))


def resource_not_found(path: str) -> kmock.KubernetesError:
    return api_error(404, "NotFound", f"the server could not find the requested resource ({path})")


def already_exists(resource: kmock.resource, name: str) -> kmock.KubernetesError:
    message = f'{_qualified(resource)} "{name}" already exists'
    return api_error(409, "AlreadyExists", message, **_details(resource, name))


def conflict(resource: kmock.resource, name: str, why: str | None = None) -> kmock.KubernetesError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    message = f'Operation cannot be fulfilled on {_qualified(resource)} "{name}": {why}'
    return api_error(409, "Conflict", message, **_details(resource, name))


def invalid(resource: kmock.resource, name: str | None, causes: list[str]) -> kmock.KubernetesError:
    message = f'{_qualified(resource)} "{name or ""}" is invalid: {"; ".join(causes)}'
    details = {**_details(resource, name), "causes": [{"message": cause} for cause in causes]}
    return api_error(422, "Invalid", message, **details)


def bad_request(message: str) -> kmock.KubernetesError:
    return api_error(400, "BadRequest", message)


def method_not_allowed(message: str) -> kmock.KubernetesError:
    return api_error(405, "MethodNotAllowed", message)


def unsupported_media_type(accepted: list[str]) -> kmock.KubernetesError:
    """apimachinery runtime/negotiation errors.go errUnsupportedMediaType, listing what the endpoint accepts."""
    message = f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}"
    return api_error(415, "UnsupportedMediaType", message)


def gone(since: int, oldest: int) -> kmock.KubernetesError:
    return api_error(410, "Expired", f"too old resource version: {since} ({oldest})")


def injected_server_error() -> kmock.KubernetesError:
    return api_error(500, "InternalError", "Internal error occurred: injected fault", injected=True)


def injected_conflict(resource: kmock.resource, name: str | None) -> kmock.KubernetesError:
    """A 409 worded like a stale-resourceVersion conflict, marked as injected in its details."""
    error = conflict(resource, name or "")
    return api_error(409, "Conflict", f"{error.message} (injected fault)", injected=True, **_details(resource, name))

"""What the end-to-end tests do to a cluster, through the official client only (emulator or real)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from esteira import API_GROUP, API_VERSION, PLURAL
from esteira.controller.kube import KSERVE_GROUP, KSERVE_PLURAL, KSERVE_VERSION
from tests.support import waiting
from tests.support.prerequisites import REPO_ROOT

T = TypeVar("T")
ESTEIRA_CRD = REPO_ROOT / "manifests" / "crds" / "serving.esteira.io_modeldeployments.yaml"


def eventually(probe: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:
    """Wait on the cluster: an API error while polling (say, 404 before an object exists) means "not yet"."""
    return waiting.eventually(probe, timeout, what, tolerate=(ApiException,))


class Esteira:
    """ModelDeployments, their InferenceServices and Events, for one test's API (emulated or real)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    # ModelDeployments
    def create_md(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, body)  # type: ignore[no-any-return]

    def get_md(self, namespace: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)  # type: ignore[no-any-return]

    def patch_md(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name, patch)  # type: ignore[no-any-return]

    def delete_md(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)

    def md_gone(self, namespace: str, name: str) -> bool:
        try:
            self.get_md(namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    # InferenceServices
    def get_isvc(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
                KSERVE_GROUP, KSERVE_VERSION, namespace, KSERVE_PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_isvc(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(  # type: ignore[no-any-return]
            KSERVE_GROUP, KSERVE_VERSION, namespace, KSERVE_PLURAL, name, patch
        )

    # Events
    def events_for(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Events about the named object as plain dicts (reason, type, message)."""
        listing = self.core.list_namespaced_event(namespace)
        return [
            {"reason": e.reason, "type": e.type, "message": e.message}
            for e in listing.items
            if e.involved_object is not None and e.involved_object.name == name
        ]

    def condition(self, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
        status = self.get_md(namespace, name).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


# On a real cluster the model must exist: kind-e2e serves a packaged demo model over HTTP and names it
# here, with the runtime that serves it. On the emulator the fake KServe never fetches anything.
STORAGE_ENV = "ESTEIRA_E2E_STORAGE_URI"
RUNTIME_ENV = "ESTEIRA_E2E_RUNTIME"


def model_source(version: str, emulated_uri: str) -> dict[str, str]:
    """`spec.model` fields for a build: distinct per version, loadable on a real cluster when configured."""
    base = os.environ.get(STORAGE_ENV)
    fields = {"version": version, "storageUri": f"{base}?build={version}" if base else emulated_uri}
    if runtime := os.environ.get(RUNTIME_ENV):
        fields["runtime"] = runtime
    return fields

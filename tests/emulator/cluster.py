"""The API a test talks to, emulated or real, reached only through a kubeconfig and the official client.

Everything here works the same against the emulator and against a real cluster, so end-to-end tests
written with it run in both places; only fault injection needs the emulator.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import kubernetes
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from .crds import CRD_RESOURCE
from .server import EmulatorServer

TEST_USER_AGENT = "esteira-tests"  # not a fault target; see faults.py
CRD_GROUP, CRD_VERSION, CRD_PLURAL = "apiextensions.k8s.io", "v1", "customresourcedefinitions"


@dataclass
class KubeApi:
    """A Kubernetes API for one test: its kubeconfig, its URL and, when emulated, the emulator itself."""

    kubeconfig: Path
    url: str
    emulator: EmulatorServer | None = None

    @property
    def emulated(self) -> bool:
        return self.emulator is not None

    def require_emulator(self, why: str = "fault injection or the emulator's state") -> EmulatorServer:
        """Return the emulator, or skip the test when it runs against a real cluster."""
        if self.emulator is None:
            pytest.skip(f"{why} needs the API emulator; ESTEIRA_E2E_KUBECONFIG points at a real cluster")
        return self.emulator

    def api_client(self) -> kubernetes.client.ApiClient:
        """A fresh client for this API (built from the kubeconfig file, never from ``$KUBECONFIG``)."""
        client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        client.user_agent = TEST_USER_AGENT
        return client

    def custom_objects(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api_client())

    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api_client())

    def apply_crd(self, source: Path | str | Mapping[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Create or replace a CustomResourceDefinition (like ``kubectl apply -f``) and wait until it is served."""
        crd = dict(source) if isinstance(source, Mapping) else load_yaml(Path(source))
        name = crd["metadata"]["name"]
        api = self.custom_objects()
        try:
            api.create_cluster_custom_object(CRD_GROUP, CRD_VERSION, CRD_PLURAL, crd)
        except ApiException as exc:
            if exc.status != 409:
                raise
            existing = cast(dict[str, Any], api.get_cluster_custom_object(CRD_GROUP, CRD_VERSION, CRD_PLURAL, name))
            crd = {**crd, "metadata": {**crd["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]}}
            api.replace_cluster_custom_object(CRD_GROUP, CRD_VERSION, CRD_PLURAL, name, crd)
        deadline = time.monotonic() + timeout
        while True:
            current = cast(dict[str, Any], api.get_cluster_custom_object(CRD_GROUP, CRD_VERSION, CRD_PLURAL, name))
            conditions = (current.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                return current
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} was not established within {timeout}s")
            time.sleep(0.05)

    def wait_for_crd_watch(self, timeout: float = 30.0) -> None:
        """On the emulator, wait until some client (the operator) watches CustomResourceDefinitions.

        Kopf notices a CRD created after start-up only through that watch, and ignores the CRDs its first listing
        returns (it scanned the API just before): a CRD created in between is never served until a restart. A real
        cluster has its CRDs before the operator starts, so there this returns at once.
        """
        if self.emulator is None:
            return
        server = self.emulator
        resource = CRD_RESOURCE
        deadline = time.monotonic() + timeout
        while server.call(lambda: server.emulator.store.watchers(resource)) == 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing watched CustomResourceDefinitions within {timeout}s")
            time.sleep(0.05)

    def create_namespace(self, prefix: str = "esteira-e2e-") -> str:
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        body = kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name))
        self.core().create_namespace(body)
        return name

    def delete_namespace(self, name: str) -> None:
        try:
            self.core().delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def load_yaml(path: Path) -> Any:
    """Parse a YAML file once per content (KServe's CRD is 2 MB: the C loader and the cache keep tests fast).

    The result is shared between callers: treat it as read-only.
    """
    stat = path.stat()
    return _load_yaml_cached(path.resolve(), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _load_yaml_cached(path: Path, mtime_ns: int, size: int) -> Any:
    return yaml.load(path.read_text("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def kubeconfig_server(path: Path) -> str:
    """The server URL of the kubeconfig's current context."""
    config = yaml.safe_load(path.read_text("utf-8")) or {}
    contexts = {item["name"]: item.get("context") or {} for item in config.get("contexts") or []}
    clusters = {item["name"]: item.get("cluster") or {} for item in config.get("clusters") or []}
    context = contexts.get(config.get("current-context", ""), {})
    return str(clusters.get(context.get("cluster", ""), {}).get("server", ""))

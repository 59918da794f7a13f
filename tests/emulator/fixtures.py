"""Pytest fixtures for tests that need a Kubernetes API: the emulator by default, a real cluster on request.

Set ``ESTEIRA_E2E_KUBECONFIG=/path/to/kubeconfig`` to run the same tests against a real cluster; the
emulator is then not started, and tests that need fault injection or the fake KServe skip.

Use them from a ``conftest.py``::

    from tests.emulator.fixtures import fake_kserve, kube_api, kube_emulator, kube_namespace  # noqa: F401
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_kserve import FakeKServe

from .cluster import KubeApi, kubeconfig_server
from .server import EmulatorServer

KUBECONFIG_ENV = "ESTEIRA_E2E_KUBECONFIG"


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[KubeApi]:
    """A fresh emulator per test (milliseconds to start), or the real cluster named by the environment."""
    real = os.environ.get(KUBECONFIG_ENV)
    if real:
        path = Path(real).expanduser()
        yield KubeApi(kubeconfig=path, url=kubeconfig_server(path))
        return
    with EmulatorServer() as server:
        yield KubeApi(kubeconfig=server.write_kubeconfig(tmp_path / "kubeconfig"), url=server.url, emulator=server)


@pytest.fixture
def kube_emulator(kube_api: KubeApi) -> EmulatorServer:
    """The emulator itself, for fault injection; skips the test on a real cluster."""
    return kube_api.require_emulator()


@pytest.fixture
def kube_namespace(kube_api: KubeApi) -> Iterator[str]:
    """A uniquely named namespace, deleted after the test."""
    name = kube_api.create_namespace()
    yield name
    kube_api.delete_namespace(name)


@pytest.fixture
def fake_kserve(kube_api: KubeApi, kube_namespace: str) -> Iterator[FakeKServe | None]:
    """The fake KServe controller for ``kube_namespace`` when emulated; None on a real cluster (KServe runs there)."""
    if not kube_api.emulated:
        yield None
        return
    with FakeKServe(kube_api.kubeconfig, [kube_namespace]) as controller:
        yield controller


def widget_crd(**version: Any) -> dict[str, Any]:
    """A throw-away namespaced CRD, ``widgets.example.com`` served at v1, its version's fields as given (a schema,
    selectableFields, subresources) for a test of the API server's rules on custom resources."""
    served = {"name": "v1", "served": True, "storage": True, **version}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [served],
        },
    }

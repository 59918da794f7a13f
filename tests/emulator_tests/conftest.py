"""Fixtures for the emulator's own tests: the shared API fixtures plus the test CRDs installed."""

from __future__ import annotations

import pytest

from tests.emulator.cluster import KubeApi
from tests.emulator.fixtures import fake_kserve, kube_api, kube_emulator, kube_namespace

from .helpers import DATA

__all__ = ["crds", "fake_kserve", "kube_api", "kube_emulator", "kube_namespace"]


@pytest.fixture
def crds(kube_api: KubeApi) -> KubeApi:
    """The API with the ModelDeployment and InferenceService CRDs installed from YAML files."""
    kube_api.apply_crd(DATA / "modeldeployments-crd.yaml")
    kube_api.apply_crd(DATA / "inferenceservices-crd.yaml")
    return kube_api

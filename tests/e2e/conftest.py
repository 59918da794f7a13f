"""End-to-end fixtures: an API (emulator or the cluster named by ESTEIRA_E2E_KUBECONFIG), the CRDs, the
fake KServe on the emulator, and the real operator as a separate process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulator.cluster import KubeApi
from tests.emulator.fixtures import fake_kserve, kube_api, kube_emulator, kube_namespace
from tests.support.cluster import ESTEIRA_CRD, Esteira
from tests.support.operator_process import OperatorProcess
from tests.support.schemas import upstream_crds_path

__all__ = ["fake_kserve", "kube_api", "kube_emulator", "kube_namespace"]

REPO = Path(__file__).resolve().parents[2]
# Where the cluster's operator is already running (installed by the chart), set this to skip starting one.
EXTERNAL_OPERATOR_ENV = "ESTEIRA_E2E_OPERATOR"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.xdist_group("e2e"))


# Without KServe's CRD (a clone with no ../shared), a schema-less stand-in still lets the suite run;
# with it, the emulator validates every InferenceService the operator writes against KServe's schema.
COMMAND_CRD = REPO / "manifests" / "crds" / "serving.esteira.io_rolloutcommands.yaml"
SCHEMALESS_ISVC_CRD = REPO / "tests" / "emulator_tests" / "data" / "inferenceservices-crd.yaml"


@pytest.fixture
def crds(kube_api: KubeApi) -> KubeApi:
    """Esteira's CRDs, and on the emulator KServe's InferenceService CRD (a real cluster has KServe)."""
    kube_api.apply_crd(ESTEIRA_CRD)
    kube_api.apply_crd(COMMAND_CRD)
    if kube_api.emulated:
        isvc_crd = upstream_crds_path() / "kserve-v0.20.0" / "serving.kserve.io_inferenceservices.yaml"
        kube_api.apply_crd(isvc_crd if isvc_crd.exists() else SCHEMALESS_ISVC_CRD)
    return kube_api


@pytest.fixture
def esteira(crds: KubeApi) -> Esteira:
    return Esteira(crds.api_client())


@pytest.fixture
def operator(
    crds: KubeApi, kube_namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess | None]:
    """The operator watching the test's namespace; its log is attached to the test report."""
    if os.environ.get(EXTERNAL_OPERATOR_ENV) == "external":
        yield None
        return
    process = OperatorProcess(str(crds.kubeconfig), [kube_namespace], tmp_path / "operator.log", resync_seconds=5)
    with process:
        yield process
    request.node.add_report_section("teardown", "operator log", process.log()[-20000:])

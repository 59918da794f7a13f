"""Which namespaces the operator watches: the ones named, or all of them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Esteira, eventually
from tests.e2e.conftest import EXTERNAL_OPERATOR_ENV
from tests.e2e.operator_process import OperatorProcess
from tests.emulator.cluster import KubeApi
from tests.unit.specs import document, spec


@pytest.fixture
def two_namespaces(crds: KubeApi) -> Iterator[tuple[str, str]]:
    if os.environ.get(EXTERNAL_OPERATOR_ENV) == "external":
        pytest.skip("starts operators of its own, which would compete with the cluster's")
    first, second = crds.create_namespace(), crds.create_namespace()
    yield first, second
    crds.delete_namespace(first)
    crds.delete_namespace(second)


def test_named_namespace_only(crds: KubeApi, esteira: Esteira, two_namespaces: tuple[str, str], tmp_path: Path) -> None:
    watched, ignored = two_namespaces
    with OperatorProcess(str(crds.kubeconfig), [watched], tmp_path / "operator.log"):
        esteira.create_md(ignored, document(spec(), namespace=ignored))
        esteira.create_md(watched, document(spec(), namespace=watched))
        eventually(lambda: esteira.get_isvc(watched, "iris"), what="InferenceService in the watched namespace")
        time.sleep(1.0)  # the watched one was handled; give the other the same chance
        assert esteira.get_isvc(ignored, "iris") is None


def test_all_namespaces(crds: KubeApi, esteira: Esteira, two_namespaces: tuple[str, str], tmp_path: Path) -> None:
    with OperatorProcess(str(crds.kubeconfig), None, tmp_path / "operator.log"):
        for namespace in two_namespaces:
            esteira.create_md(namespace, document(spec(), namespace=namespace))
        for namespace in two_namespaces:
            eventually(lambda ns=namespace: esteira.get_isvc(ns, "iris"), what=f"InferenceService in {namespace}")

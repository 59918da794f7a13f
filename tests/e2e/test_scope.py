"""Which namespaces the operator watches: the ones named, or all of them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from esteira import API_GROUP
from tests.e2e.conftest import EXTERNAL_OPERATOR_ENV
from tests.emulator.cluster import KubeApi
from tests.support.cluster import Esteira, eventually
from tests.support.operator_process import OperatorProcess
from tests.support.specs import document, spec


@pytest.fixture
def two_namespaces(crds: KubeApi) -> Iterator[tuple[str, str]]:
    if os.environ.get(EXTERNAL_OPERATOR_ENV) == "external":
        pytest.skip("starts operators of its own, which would compete with the cluster's")
    first, second = crds.create_namespace(), crds.create_namespace()
    yield first, second
    crds.delete_namespace(first)
    crds.delete_namespace(second)


def handled(md: dict[str, Any]) -> bool:
    """Whether an operator reconciled it: that leaves a status, Esteira's finalizer or the handled spec."""
    meta = md["metadata"]
    annotations = meta.get("annotations") or {}
    return bool(md.get("status") or meta.get("finalizers") or f"{API_GROUP}/last-handled-configuration" in annotations)


def test_named_namespace_only(crds: KubeApi, esteira: Esteira, two_namespaces: tuple[str, str], tmp_path: Path) -> None:
    watched, ignored = two_namespaces
    with OperatorProcess(str(crds.kubeconfig), [watched], tmp_path / "operator.log"):
        # The ignored one first: an operator that saw its namespace would meet it before both watched ones.
        esteira.create_md(ignored, document(spec(), namespace=ignored))
        for name in ("iris", "iris-b"):
            esteira.create_md(watched, document(spec(), name=name, namespace=watched))
            eventually(
                lambda n=name: handled(esteira.get_md(watched, n)) and esteira.get_isvc(watched, n),
                what=f"{name} handled in the watched namespace",
            )
        assert not handled(esteira.get_md(ignored, "iris"))
        assert esteira.get_isvc(ignored, "iris") is None


def test_all_namespaces(crds: KubeApi, esteira: Esteira, two_namespaces: tuple[str, str], tmp_path: Path) -> None:
    with OperatorProcess(str(crds.kubeconfig), None, tmp_path / "operator.log"):
        for namespace in two_namespaces:
            esteira.create_md(namespace, document(spec(), namespace=namespace))
        for namespace in two_namespaces:
            eventually(
                lambda ns=namespace: handled(esteira.get_md(ns, "iris")) and esteira.get_isvc(ns, "iris"),
                what=f"iris handled in {namespace}",
            )

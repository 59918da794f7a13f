"""The real operator against a Kubernetes API: apply, ready, update, drift, invalid spec, delete, faults.

On the emulator, a fake KServe controller plays KServe; against a real cluster (ESTEIRA_E2E_KUBECONFIG)
KServe itself does, and the same assertions hold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from esteira.manifests import render_document
from tests.emulator.cluster import KubeApi
from tests.emulator.server import EmulatorServer
from tests.support.cluster import Esteira, eventually, model_source
from tests.support.fake_kserve import FakeKServe
from tests.support.operator_process import OperatorProcess
from tests.support.schemas import HTTPROUTE_CRD, upstream_crds_dir
from tests.support.specs import document, spec

pytestmark = pytest.mark.usefixtures("operator")


FIRST = model_source("1.0.0", "s3://models/iris/1.0.0")
SECOND = model_source("2.0.0", "s3://m/iris/2")
HTTPROUTES = ("gateway.networking.k8s.io", "v1")


def md(namespace: str, name: str = "iris", **overrides: Any) -> dict[str, Any]:
    body = spec(**overrides)
    body["model"] = {**body["model"], **FIRST, "name": name}
    return document(body, name=name, namespace=namespace)


def ready(esteira: Esteira, namespace: str, name: str, timeout: float = 30.0) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = esteira.get_md(namespace, name)  # one read: the condition and the rest of status agree
        conditions = (obj.get("status") or {}).get("conditions") or []
        return obj if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None

    return eventually(probe, timeout, f"ModelDeployment {name} Ready")


def install_gateway_api(crds: KubeApi) -> None:
    """The HTTPRoute CRD on the emulator (a real cluster has the Gateway API installed), once the operator watches
    for new CRDs."""
    if crds.emulated:
        crds.wait_for_crd_watch()
        crds.apply_crd(upstream_crds_dir() / HTTPROUTE_CRD)


def reasons(esteira: Esteira, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in esteira.events_for(namespace, name)]


def test_apply_creates_inference_service_and_reports_ready(
    esteira: Esteira, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    manifest = md(kube_namespace)
    created = esteira.create_md(kube_namespace, manifest)
    isvc = eventually(lambda: esteira.get_isvc(kube_namespace, "iris"), what="InferenceService created")

    expected = render_document(manifest)[0]
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == expected["spec"]["predictor"]["model"]["storageUri"]
    assert isvc["spec"]["predictor"]["scaleMetric"] == "cpu"
    for key, value in expected["metadata"]["labels"].items():
        assert isvc["metadata"]["labels"][key] == value
    (owner,) = isvc["metadata"]["ownerReferences"]
    assert owner["uid"] == created["metadata"]["uid"]
    assert owner["kind"] == "ModelDeployment" and owner["controller"] is True

    obj = ready(esteira, kube_namespace, "iris")
    status = obj["status"]
    assert status["phase"] == "Ready"
    assert status["url"].startswith("http")
    assert status["stable"]["revision"] == 1
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["history"][0]["outcome"] == "Active"
    events = eventually(
        lambda: {"Created", "Ready"} <= set(reasons(esteira, kube_namespace, "iris")) or None, what="Events"
    )
    assert events


def test_spec_change_updates_inference_service(
    esteira: Esteira, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    esteira.create_md(kube_namespace, md(kube_namespace))
    ready(esteira, kube_namespace, "iris")
    esteira.patch_md(
        kube_namespace,
        "iris",
        {"spec": {"autoscaling": {"maxReplicas": 4}, "resources": {"limits": {"memory": "3Gi"}}}},
    )

    def updated() -> dict[str, Any] | None:
        isvc = esteira.get_isvc(kube_namespace, "iris")
        predictor = (isvc or {}).get("spec", {}).get("predictor", {})
        paired = {"requests": {"memory": "3Gi"}, "limits": {"memory": "3Gi"}}  # a limit alone is the request too
        ok = predictor.get("maxReplicas") == 4 and predictor["model"].get("resources") == paired
        return isvc if ok else None

    eventually(updated, what="InferenceService updated")
    obj = ready(esteira, kube_namespace, "iris")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 2
    assert obj["status"]["stable"]["revision"] == 1  # no new model, no new revision


def test_new_model_version_becomes_a_canary_at_the_first_step(
    esteira: Esteira, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    esteira.create_md(kube_namespace, md(kube_namespace))
    ready(esteira, kube_namespace, "iris")
    esteira.patch_md(kube_namespace, "iris", {"spec": {"model": SECOND}})

    def canary() -> dict[str, Any] | None:
        isvc = esteira.get_isvc(kube_namespace, "iris") or {}
        arms = isvc.get("spec", {}).get("canary") or []
        return arms[0] if arms and arms[0]["trafficPercent"] == 10 else None

    # The canary gets no traffic until KServe reports it ready, then the first step's share.
    arm = eventually(canary, what="canary arm at the first step")
    assert arm["predictor"]["model"]["storageUri"] == SECOND["storageUri"]
    stable_uri = esteira.get_isvc(kube_namespace, "iris")["spec"]["predictor"]["model"]["storageUri"]
    assert stable_uri == FIRST["storageUri"]
    status = esteira.get_md(kube_namespace, "iris")["status"]
    assert status["canary"]["revision"] == 2 and status["canary"]["weight"] == 10
    assert status["stable"]["revision"] == 1
    assert status["phase"] == "Progressing"
    reasons = [e["reason"] for e in esteira.events_for(kube_namespace, "iris")]
    assert "CanaryCreated" in reasons


def test_manual_edit_of_inference_service_is_put_back(
    esteira: Esteira, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    esteira.create_md(kube_namespace, md(kube_namespace))
    ready(esteira, kube_namespace, "iris")
    esteira.patch_isvc(kube_namespace, "iris", {"spec": {"predictor": {"maxReplicas": 9}}})

    def restored() -> bool:
        predictor = (esteira.get_isvc(kube_namespace, "iris") or {})["spec"]["predictor"]
        return predictor.get("maxReplicas") == 1

    eventually(restored, what="manual edit reverted")
    eventually(lambda: "DriftCorrected" in reasons(esteira, kube_namespace, "iris"), what="DriftCorrected event")


def test_manual_edit_of_http_route_is_put_back(
    crds: KubeApi, esteira: Esteira, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    """The GatewayAPI router's HTTPRoute is put back as its InferenceService is, the Gateway API having come after
    the operator started; the spec's request timeout is on every rule, as the API server admits it."""
    install_gateway_api(crds)
    esteira.create_md(kube_namespace, md(kube_namespace, rollout={"router": "GatewayAPI"}, timeoutSeconds=30))

    def route() -> dict[str, Any]:
        return esteira.custom.get_namespaced_custom_object(*HTTPROUTES, kube_namespace, "httproutes", "iris")  # type: ignore[no-any-return]

    rules = eventually(lambda: route()["spec"]["rules"], what="HTTPRoute created")
    assert [rule["timeouts"] for rule in rules] == [{"request": "30s"}] * len(rules)
    edited = [{**rule, "backendRefs": [{**ref, "port": 8081} for ref in rule["backendRefs"]]} for rule in rules]
    esteira.custom.patch_namespaced_custom_object(
        *HTTPROUTES, kube_namespace, "httproutes", "iris", {"spec": {"rules": edited}}
    )
    eventually(lambda: route()["spec"]["rules"] == rules, what="edit reverted")
    eventually(lambda: "DriftCorrected" in reasons(esteira, kube_namespace, "iris"), what="DriftCorrected event")


def test_api_server_refuses_what_the_operator_would_refuse(esteira: Esteira, kube_namespace: str) -> None:
    esteira.create_md(kube_namespace, md(kube_namespace))
    before = esteira.get_md(kube_namespace, "iris")
    # Schema-valid, but Standard mode cannot scale on rps: the CRD's CEL rule refuses it at admission.
    with pytest.raises(ApiException) as refused:
        esteira.patch_md(kube_namespace, "iris", {"spec": {"autoscaling": {"metric": "rps"}}})
    assert refused.value.status == 422
    assert "concurrency and rps scaling need Knative" in str(refused.value.body)
    assert esteira.get_md(kube_namespace, "iris")["metadata"]["generation"] == before["metadata"]["generation"]
    with pytest.raises(ApiException) as renamed_mode:
        esteira.patch_md(kube_namespace, "iris", {"spec": {"deploymentMode": "Knative"}})
    assert renamed_mode.value.status == 422
    assert "deploymentMode cannot change after creation" in str(renamed_mode.value.body)


def test_invalid_spec_sets_condition_and_event_and_touches_nothing(
    esteira: Esteira, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    esteira.create_md(kube_namespace, md(kube_namespace))
    ready(esteira, kube_namespace, "iris")
    before = esteira.get_isvc(kube_namespace, "iris")
    assert before is not None
    # The one rule the API server cannot check: GPU autoscaling needs a Prometheus URL, which may come
    # from the operator's --prometheus-url (this test's operator has none).
    gpu_scaling = {"gpu": {"count": 1}, "autoscaling": {"metric": "gpu-utilization"}}
    esteira.patch_md(kube_namespace, "iris", {"spec": gpu_scaling})

    def rejected() -> dict[str, Any] | None:
        condition = esteira.condition(kube_namespace, "iris", "Ready")
        return condition if condition and condition["reason"] == "InvalidSpec" else None

    condition = eventually(rejected, what="InvalidSpec condition")
    assert condition["status"] == "False"
    assert condition["message"].startswith("spec.monitoring.prometheusUrl: gpu-utilization scaling reads DCGM")
    warnings = eventually(
        lambda: [e for e in esteira.events_for(kube_namespace, "iris") if e["reason"] == "InvalidSpec"],
        what="InvalidSpec event",
    )
    assert warnings[0]["type"] == "Warning"
    after = esteira.get_isvc(kube_namespace, "iris")
    assert after is not None
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    status = esteira.get_md(kube_namespace, "iris")["status"]
    assert status["phase"] == "Invalid"
    assert status["stable"]["revision"] == 1

    esteira.patch_md(kube_namespace, "iris", {"spec": {"monitoring": {"prometheusUrl": "http://prometheus:9090"}}})
    eventually(
        lambda: "autoScaling" in (esteira.get_isvc(kube_namespace, "iris") or {})["spec"]["predictor"],
        what="fixed spec applied",
    )
    ready(esteira, kube_namespace, "iris")


def test_kserve_failure_degrades_the_deployment(
    esteira: Esteira, kube_api: KubeApi, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    if fake_kserve is None:
        pytest.skip("a model load failure is injected through the fake KServe (emulator only)")
    esteira.create_md(kube_namespace, md(kube_namespace))
    ready(esteira, kube_namespace, "iris")
    fake_kserve.fail("iris", kube_namespace)

    def degraded() -> dict[str, Any] | None:
        condition = esteira.condition(kube_namespace, "iris", "Degraded")
        return condition if condition and condition["status"] == "True" else None

    condition = eventually(degraded, what="Degraded condition")
    assert "failed to load the model" in condition["message"]
    assert esteira.get_md(kube_namespace, "iris")["status"]["phase"] == "Degraded"
    fake_kserve.recover("iris", kube_namespace)
    ready(esteira, kube_namespace, "iris")


def test_delete_removes_the_deployment_and_children_are_owned(
    esteira: Esteira, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    created = esteira.create_md(kube_namespace, md(kube_namespace))
    ready(esteira, kube_namespace, "iris")
    isvc = esteira.get_isvc(kube_namespace, "iris")
    assert isvc is not None
    assert [o["uid"] for o in isvc["metadata"]["ownerReferences"]] == [created["metadata"]["uid"]]
    assert isvc["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True
    esteira.delete_md(kube_namespace, "iris")
    eventually(lambda: esteira.md_gone(kube_namespace, "iris"), what="ModelDeployment deleted (finalizer released)")


def test_restart_is_idempotent(
    esteira: Esteira,
    kube_namespace: str,
    fake_kserve: FakeKServe | None,
    operator: OperatorProcess | None,
) -> None:
    if operator is None:
        pytest.skip("restarts the operator process the test started")
    esteira.create_md(kube_namespace, md(kube_namespace))
    ready(esteira, kube_namespace, "iris")
    # Events are posted apart from the status: the Ready event can land after the condition is read.
    eventually(lambda: "Ready" in reasons(esteira, kube_namespace, "iris"), what="the Ready event")
    before = esteira.get_isvc(kube_namespace, "iris")
    events_before = len(esteira.events_for(kube_namespace, "iris"))
    operator.stop()
    operator.start()
    eventually(lambda: "esteira_operator_reconciles_total" in operator.metrics(), what="operator metrics")
    eventually(
        lambda: 'esteira_operator_reconciles_total{result="unchanged"}' in operator.metrics(), what="resumed reconcile"
    )
    after = esteira.get_isvc(kube_namespace, "iris")
    assert after is not None and before is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert len(esteira.events_for(kube_namespace, "iris")) == events_before


def test_operator_metrics(esteira: Esteira, kube_namespace: str, operator: OperatorProcess | None) -> None:
    if operator is None:
        pytest.skip("reads the metrics of the operator process the test started")
    esteira.create_md(kube_namespace, md(kube_namespace))
    eventually(lambda: esteira.get_isvc(kube_namespace, "iris"), what="InferenceService created")

    def counted() -> str | None:
        text = operator.metrics()
        return text if 'esteira_operator_reconciles_total{result="created"} 1.0' in text else None

    text = eventually(counted, what="reconcile counter")
    assert "esteira_operator_managed_deployments 1.0" in text
    assert "esteira_operator_reconcile_duration_seconds_bucket" in text
    calls = {
        family.name: {sample.labels["verb"]: sample.value for sample in family.samples if "verb" in sample.labels}
        for family in text_string_to_metric_families(text)
        if family.name == "esteira_operator_api_calls"
    }["esteira_operator_api_calls"]
    assert calls["get"] >= 1 and calls["list"] >= 1 and calls["create"] >= 1, calls  # read it, listed, created


@pytest.mark.slow
def test_converges_under_injected_faults_without_losing_updates(
    esteira: Esteira, kube_emulator: EmulatorServer, kube_namespace: str, fake_kserve: FakeKServe | None
) -> None:
    """10% of the operator's requests fail (500s, conflicts, dropped watches, slow answers); every
    ModelDeployment still ends with its latest spec applied and reported Ready."""
    kube_emulator.faults.update(
        error_rate=0.1, conflict_rate=0.1, drop_watch_rate=0.1, slow_rate=0.1, delay=0.3, seed=7
    )
    names = [f"model-{i}" for i in range(8)]
    for name in names:
        esteira.create_md(kube_namespace, md(kube_namespace, name))
    for round_ in range(1, 4):
        for name in names:
            esteira.patch_md(kube_namespace, name, {"spec": {"autoscaling": {"maxReplicas": 1 + round_}}})

    def converged(name: str) -> bool:
        isvc = esteira.get_isvc(kube_namespace, name)
        obj = esteira.get_md(kube_namespace, name)
        condition = esteira.condition(kube_namespace, name, "Ready")
        return bool(
            isvc
            and isvc["spec"]["predictor"]["maxReplicas"] == 4
            and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
            and condition
            and condition["status"] == "True"
        )

    for name in names:
        eventually(lambda name=name: converged(name), timeout=90, what=f"{name} converged")
    injected = kube_emulator.faults.injected
    assert injected["error"] > 0 and injected["slow"] > 0, f"too few faults injected to prove anything: {injected}"


@pytest.mark.parametrize("router", ["KServe", "GatewayAPI"])
def test_a_resync_with_nothing_to_do_reads_nothing(
    crds: KubeApi,
    esteira: Esteira,
    kube_namespace: str,
    fake_kserve: FakeKServe | None,
    operator: OperatorProcess | None,
    router: str,
) -> None:
    """Resyncs plan from what the watches delivered (the timer's body and Kopf's index of the children, HTTPRoutes
    included though the Gateway API came after the operator started): a Ready ModelDeployment's resyncs make no
    API call."""
    if operator is None:
        pytest.skip("reads the metrics of the operator process the test started")
    if router == "GatewayAPI":
        install_gateway_api(crds)
    esteira.create_md(kube_namespace, md(kube_namespace, rollout={"router": router}))
    ready(esteira, kube_namespace, "iris")

    def once(enough: Callable[[dict[str, float]], bool]) -> Callable[[], dict[str, float] | None]:
        return lambda: next((found for found in [operator.counters()] if enough(found)), None)

    eventually(once(lambda found: found["api"] >= 1), what="a reconcile read from the API server")
    # Settled: the first resync planned from the watches (change-driven reconciles before it read the API server).
    before = eventually(once(lambda found: found["watch"] >= 1), 60, "a resync from the watches")
    after = eventually(once(lambda found: found["watch"] >= before["watch"] + 2), 60, "two resyncs from the watches")
    assert after["calls"] == before["calls"], (before, after)
    assert after["api"] == before["api"], (before, after)


def test_an_inference_service_of_the_name_that_is_someone_else_s_is_not_taken_over(
    esteira: Esteira, kube_namespace: str
) -> None:
    """Its create refused (AlreadyExists), the operator patched it into its own: labels, owner, spec."""
    theirs = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": kube_namespace, "labels": {"team": "search"}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://theirs/model"}}},
    }
    esteira.custom.create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", kube_namespace, "inferenceservices", theirs
    )
    esteira.create_md(kube_namespace, md(kube_namespace))
    said = eventually(
        lambda: [e for e in esteira.events_for(kube_namespace, "iris") if e["reason"] == "ChildRefused"],
        what="the ChildRefused event",
    )
    assert said[0]["type"] == "Warning" and "not ModelDeployment iris's" in said[0]["message"]
    held = esteira.get_isvc(kube_namespace, "iris") or {}
    assert held["metadata"]["labels"] == {"team": "search"} and not held["metadata"].get("ownerReferences")
    assert held["spec"]["predictor"]["model"]["storageUri"] == "s3://theirs/model"

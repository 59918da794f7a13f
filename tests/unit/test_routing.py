"""Traffic routers: the objects each renders for a plan, and the split each reads back."""

from __future__ import annotations

from typing import Any

import pytest

from esteira.api.errors import InvalidSpec
from esteira.api.spec import ModelDeploymentSpec
from esteira.render import Arm, RenderContext, TrafficPlan
from esteira.routing import GatewayAPIRouter, KServeRouter, router_for
from esteira.routing.base import key_of
from tests.support.schemas import ManifestError, validate_custom_resource
from tests.support.specs import document, spec

CTX = RenderContext("iris", "models")
STABLE, CANARY = Arm(1, "1", "s3://m/1"), Arm(2, "2", "s3://m/2")


def parsed(**rollout: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.parse(spec(rollout={"router": "GatewayAPI", **rollout}))


def test_router_for_names() -> None:
    assert isinstance(router_for("KServe"), KServeRouter)
    assert isinstance(router_for("GatewayAPI"), GatewayAPIRouter)
    assert (KServeRouter.copies_requests, GatewayAPIRouter.copies_requests) == (False, True)


@pytest.mark.parametrize(
    "plan",
    [
        TrafficPlan(STABLE),
        TrafficPlan(STABLE, CANARY, 0),
        TrafficPlan(STABLE, CANARY, 0, mirror=True),
        TrafficPlan(STABLE, CANARY, 30),
    ],
)
def test_gateway_objects_validate_upstream(plan: TrafficPlan) -> None:
    objects = GatewayAPIRouter().desired(CTX, parsed(mirror=True), plan, {})
    for obj in objects:
        validate_custom_resource(obj)
    names = [key_of(o)[1:] for o in objects]
    expected_isvcs = [("InferenceService", "iris-rev-1")] + (
        [("InferenceService", "iris-rev-2")] if plan.canary else []
    )
    assert names == [*expected_isvcs, ("HTTPRoute", "iris")]


def test_gateway_route_weights_and_header_pinning() -> None:
    route = GatewayAPIRouter().desired(CTX, parsed(mirror=True), TrafficPlan(STABLE, CANARY, 30), {})[-1]
    pin_stable, pin_canary, split = route["spec"]["rules"]
    assert pin_stable["matches"][0]["headers"][0] == {"type": "Exact", "name": "x-model-revision", "value": "1"}
    assert pin_canary["backendRefs"] == [{"name": "iris-rev-2-predictor", "port": 80}]
    assert [(b["name"], b["weight"]) for b in split["backendRefs"]] == [
        ("iris-rev-1-predictor", 70),
        ("iris-rev-2-predictor", 30),
    ]
    assert route["spec"]["parentRefs"] == [{"name": "kserve-ingress-gateway", "namespace": "kserve"}]
    # A canary with traffic of its own gets no copies: a rule's mirror would send it its own requests twice.
    assert not any("filters" in rule for rule in route["spec"]["rules"])


def test_gateway_route_copies_only_stable_s_requests_to_a_mirroring_canary() -> None:
    """Before its first step the canary's split weight is 0: every request the split rule sends, and every one
    pinned to stable, goes to stable, and each is copied to the canary; one pinned to the canary is not."""
    route = GatewayAPIRouter().desired(CTX, parsed(mirror=True), TrafficPlan(STABLE, CANARY, 0, mirror=True), {})[-1]
    pin_stable, pin_canary, split = route["spec"]["rules"]
    assert [(b["name"], b["weight"]) for b in split["backendRefs"]] == [
        ("iris-rev-1-predictor", 100),
        ("iris-rev-2-predictor", 0),
    ]
    copy = [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "iris-rev-2-predictor", "port": 80}}}]
    assert split["filters"] == pin_stable["filters"] == copy
    assert "filters" not in pin_canary
    with pytest.raises(ValueError, match="no traffic of its own"):
        TrafficPlan(STABLE, CANARY, 10, mirror=True)


def test_a_request_timeout_is_every_route_rule_s_and_every_revision_s_predictor_s() -> None:
    """The gateway's Envoy enforces it and tells the model server how long it waits; each revision's predictor
    carries it too (KServe's timeout)."""
    body = spec(rollout={"router": "GatewayAPI"}, timeoutSeconds=30)
    objects = GatewayAPIRouter().desired(CTX, ModelDeploymentSpec.parse(body), TrafficPlan(STABLE, CANARY, 30), {})
    for obj in objects:
        validate_custom_resource(obj)
    *isvcs, route = objects
    assert [rule["timeouts"] for rule in route["spec"]["rules"]] == [{"request": "30s"}] * 3
    assert [isvc["spec"]["predictor"]["timeout"] for isvc in isvcs] == [30, 30]
    untimed = GatewayAPIRouter().desired(CTX, parsed(), TrafficPlan(STABLE), {})
    assert "timeouts" not in untimed[-1]["spec"]["rules"][0] and "timeout" not in untimed[0]["spec"]["predictor"]


def _accepted(route: dict[str, Any]) -> dict[str, Any]:
    return {**route, "status": {"parents": [{"conditions": [{"type": "Accepted", "status": "True"}]}]}}


def test_gateway_observes_weights_only_once_accepted() -> None:
    router = GatewayAPIRouter()
    plan = TrafficPlan(STABLE, CANARY, 30)
    objects = {key_of(o): o for o in router.desired(CTX, parsed(), plan, {})}
    route_key = ("gateway.networking.k8s.io/v1", "HTTPRoute", "iris")
    assert router.observe(CTX, parsed(), plan, objects).weight is None
    objects[route_key] = _accepted(objects[route_key])
    canary_key = ("serving.kserve.io/v1beta1", "InferenceService", "iris-rev-2")
    objects[canary_key] = {**objects[canary_key], "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    status = router.observe(CTX, parsed(), plan, objects)
    assert status.weight == 30 and status.ready


def test_gateway_takes_no_weight_from_an_acceptance_of_an_earlier_generation() -> None:
    """The route rewritten (generation 3) and its status still from generation 2: the new weight is not in force."""
    router = GatewayAPIRouter()
    plan = TrafficPlan(STABLE, CANARY, 50)
    objects = {key_of(o): o for o in router.desired(CTX, parsed(), plan, {})}
    route_key = ("gateway.networking.k8s.io/v1", "HTTPRoute", "iris")
    route = objects[route_key]
    condition = {"type": "Accepted", "status": "True", "observedGeneration": 2}
    objects[route_key] = {
        **route,
        "metadata": {**route["metadata"], "generation": 3},
        "status": {"parents": [{"conditions": [condition]}]},
    }
    observed = router.observe(CTX, parsed(), plan, objects)
    assert observed.weight is None and not observed.applied  # the Gateway sends an older split: the step waits
    condition["observedGeneration"] = 3
    observed = router.observe(CTX, parsed(), plan, objects)
    assert observed.weight == 50 and observed.applied
    objects[route_key] = {**objects[route_key], "status": {}}  # no Gateway has said anything yet
    assert router.observe(CTX, parsed(), plan, objects).applied


def test_kserve_knative_observes_latest_revision_share() -> None:
    plan = TrafficPlan(STABLE, CANARY, 25)
    knative = ModelDeploymentSpec.parse(spec(deploymentMode="Knative"))
    isvc = KServeRouter().desired(CTX, knative, plan, {})[0]
    isvc["metadata"]["generation"] = 1
    isvc["status"] = {
        "observedGeneration": 1,
        "conditions": [{"type": "PredictorReady", "status": "True"}],
        "components": {
            "predictor": {
                "latestReadyRevision": "iris-predictor-00002",
                "latestCreatedRevision": "iris-predictor-00002",
                "traffic": [
                    {"revisionName": "iris-predictor-00002", "percent": 25, "latestRevision": True, "tag": "latest"},
                    {"revisionName": "iris-predictor-00001", "percent": 75, "latestRevision": False, "tag": "prev"},
                ],
            }
        },
    }
    status = KServeRouter().observe(CTX, knative, plan, {key_of(isvc): isvc})
    assert status.ready and status.weight == 25
    isvc["status"]["components"]["predictor"]["latestCreatedRevision"] = "iris-predictor-00003"
    assert not KServeRouter().observe(CTX, knative, plan, {key_of(isvc): isvc}).ready
    isvc["metadata"]["generation"] = 2  # KServe has not seen the latest spec yet: nothing is known
    observed = KServeRouter().observe(CTX, knative, plan, {key_of(isvc): isvc})
    assert observed.weight is None and not observed.ready and not observed.applied


def test_kserve_standard_observes_canary_statuses() -> None:
    plan = TrafficPlan(STABLE, CANARY, 10)
    standard = ModelDeploymentSpec.parse(spec())
    isvc = KServeRouter().desired(CTX, standard, plan, {})[0]
    observed = KServeRouter().observe(CTX, standard, plan, {key_of(isvc): isvc})
    assert observed.weight is None and not observed.applied  # KServe has not reported this canary yet
    # KServe's observedGeneration there is the stable Deployment's, which the canary left at 1
    isvc["metadata"]["generation"] = 3
    isvc["status"] = {
        "observedGeneration": 1,
        "canaryStatuses": [{"name": "rev-2", "ready": True, "trafficPercent": 10}],
    }
    status = KServeRouter().observe(CTX, standard, plan, {key_of(isvc): isvc})
    assert status.ready and status.weight == 10 and status.applied


def test_gateway_revision_services_carry_the_owner_label() -> None:
    objects = GatewayAPIRouter().desired(CTX, parsed(), TrafficPlan(STABLE, CANARY, 10), {})
    for obj in objects:
        assert obj["metadata"]["labels"]["serving.esteira.io/deployment"] == "iris"
    env = {e["name"]: e["value"] for e in objects[1]["spec"]["predictor"]["model"]["env"]}
    assert env["ESTEIRA_DEPLOYMENT"] == "iris"


def test_gateway_keeps_the_serving_revision_until_a_new_stable_one_is_ready() -> None:
    """An Immediate rollout (or a rollback) makes revision 2 stable at once: the route went to its InferenceService
    before it was ready and revision 1's was deleted in the same reconcile, so every request failed until it was.
    Revision 1 keeps all traffic, unchanged, until revision 2 reports Ready."""
    from esteira.state.drift import drift_patch, with_last_applied

    router = GatewayAPIRouter()
    serving = with_last_applied(router.desired(CTX, parsed(), TrafficPlan(STABLE), {})[0])
    serving = {**serving, "spec": {**serving["spec"], "defaulted": "by KServe"}}  # the webhook's additions
    serving["status"] = {"conditions": [{"type": "Ready", "status": "True"}]}
    live = {key_of(serving): serving}
    new_stable = TrafficPlan(CANARY)  # revision 2, stable at once

    bridged = {key_of(o): o for o in router.desired(CTX, parsed(), new_stable, live)}
    assert set(bridged) == {
        key_of(serving),
        ("serving.kserve.io/v1beta1", "InferenceService", "iris-rev-2"),
        ("gateway.networking.k8s.io/v1", "HTTPRoute", "iris"),
    }
    assert drift_patch(serving, with_last_applied(bridged[key_of(serving)])) is None  # kept as it is
    split = bridged[("gateway.networking.k8s.io/v1", "HTTPRoute", "iris")]["spec"]["rules"][-1]["backendRefs"]
    assert [(ref["name"], ref["weight"]) for ref in split] == [
        ("iris-rev-1-predictor", 100),
        ("iris-rev-2-predictor", 0),
    ]
    for obj in bridged.values():
        validate_custom_resource(obj)

    new = bridged[("serving.kserve.io/v1beta1", "InferenceService", "iris-rev-2")]
    live[key_of(new)] = {**new, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    switched = {key_of(o): o for o in router.desired(CTX, parsed(), new_stable, live)}
    assert key_of(serving) not in switched  # now it goes
    split = switched[("gateway.networking.k8s.io/v1", "HTTPRoute", "iris")]["spec"]["rules"][-1]["backendRefs"]
    assert [(ref["name"], ref["weight"]) for ref in split] == [("iris-rev-2-predictor", 100)]


def test_gateway_keeps_stable_not_a_replaced_canary_until_the_new_stable_one_is_ready() -> None:
    """A canary at 10 % replaced by an Immediate version 3: the newest ready revision (the canary) took every
    request meanwhile, and stable, which served 90 %, was deleted."""
    router = GatewayAPIRouter()
    at_ten = TrafficPlan(STABLE, CANARY, 10)
    live = {
        key_of(o): {**o, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        for o in router.desired(CTX, parsed(), at_ten, {})
    }
    third = TrafficPlan(Arm(3, "1.2.0", "s3://m/3"))  # stable at once
    bridged = {key_of(o): o for o in router.desired(CTX, parsed(), third, live)}
    split = bridged[("gateway.networking.k8s.io/v1", "HTTPRoute", "iris")]["spec"]["rules"][-1]["backendRefs"]
    assert [(ref["name"], ref["weight"]) for ref in split] == [
        ("iris-rev-1-predictor", 100),
        ("iris-rev-3-predictor", 0),
    ]
    assert ("serving.kserve.io/v1beta1", "InferenceService", "iris-rev-2") not in bridged


def test_the_route_answers_for_its_own_hosts_only() -> None:
    """Without hosts, the route took every host's requests on its Gateway: a second ModelDeployment's route
    there met it, and the older of the two answered for both."""
    router = GatewayAPIRouter()
    route = router.desired(CTX, parsed(), TrafficPlan(STABLE), {})[-1]
    assert route["spec"]["hostnames"] == ["iris-models.example.com"]  # as KServe names an InferenceService's host
    assert router.url(CTX, parsed()) == "http://iris-models.example.com"
    other = RenderContext("fraud", "models", ingress_domain="models.internal")
    assert router.desired(other, parsed(), TrafficPlan(STABLE), {})[-1]["spec"]["hostnames"] == [
        "fraud-models.models.internal"
    ]
    named = parsed(gateway={"hostnames": ["*.ml.example.com", "iris.ml.example.com"]})
    route = router.desired(CTX, named, TrafficPlan(STABLE, CANARY, 30), {})[-1]
    validate_custom_resource(route)
    assert route["spec"]["hostnames"] == ["*.ml.example.com", "iris.ml.example.com"]
    assert router.url(CTX, named) == "http://iris.ml.example.com"  # the first that is no wildcard
    assert router.url(CTX, parsed(gateway={"hostnames": ["*.ml.example.com"]})) is None
    assert KServeRouter().url(CTX, parsed()) is None  # the InferenceService's own URL


def test_a_default_host_that_is_no_dns_name_is_refused_at_render() -> None:
    """<name>-<namespace> past 63 characters is no DNS label (KServe refuses such a host for its own)."""
    ctx = RenderContext("a" * 45, "b" * 20)
    with pytest.raises(InvalidSpec, match=r"spec\.rollout\.gateway\.hostnames: .* 66 characters, over DNS's 63"):
        GatewayAPIRouter().desired(ctx, parsed(), TrafficPlan(STABLE), {})
    named = parsed(gateway={"hostnames": ["iris.ml.example.com"]})
    assert GatewayAPIRouter().desired(ctx, named, TrafficPlan(STABLE), {})[-1]["spec"]["hostnames"] == [
        "iris.ml.example.com"
    ]


@pytest.mark.parametrize(
    "hostname", ["Iris.example.com", "iris_1.example.com", "*.*.example.com", "iris.", "", "a" * 64 + ".example.com"]
)
def test_a_hostname_the_gateway_api_refuses_is_refused(hostname: str) -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.rollout\.gateway\.hostnames\[0\]"):
        parsed(gateway={"hostnames": [hostname]})
    with pytest.raises(ManifestError, match=r"spec\.rollout\.gateway\.hostnames"):
        validate_custom_resource(document(spec(rollout={"router": "GatewayAPI", "gateway": {"hostnames": [hostname]}})))

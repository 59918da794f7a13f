"""Every object Esteira emits, and every transition between them, passes KServe v0.20's admission.

A broad matrix of ModelDeployments (both modes, every scaling metric, CPU/GPU/MIG, batching on either
runtime, both routers) is walked through a rollout's states as the operator drives them: the first
revision, a canary at each step, a promotion (also of a version-only change that keeps storageUri),
a rollback, and a rollback to an earlier revision. Each object goes through the API server's schema
check (the upstream CRD) and KServe's defaulting and validating webhooks (tests/emulator/kserve), and
each later state is the operator's merge patch applied to the stored object, checked on KServe's update
path. The renderer's own defects then show up here as KServe's refusal messages.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from esteira.api.spec import ModelDeploymentSpec
from esteira.render import Arm, RenderContext, TrafficPlan
from esteira.routing import ObjectKey, key_of, router_for
from esteira.state import merge_patch
from esteira.state.drift import drift_patch, with_last_applied
from tests.emulator.kserve.admission import AdmissionDenied, admit
from tests.support.schemas import validate_custom_resource
from tests.support.specs import model, spec

PROMETHEUS = "http://prometheus.monitoring:9090"
V1 = Arm(1, "1.0.0", "s3://models/iris/1.0.0")
V2 = Arm(2, "1.1.0", "s3://models/iris/1.1.0")
V2_SAME_BUILD = Arm(2, "1.0.1", V1.storage_uri)  # a version-only change: same storageUri
V3 = Arm(3, "1.2.0", "s3://models/iris/1.2.0")

SCALING = {
    "Standard": [{"metric": "cpu"}, {"metric": "memory", "target": 75}, {"metric": "gpu-utilization"}, {}],
    "Knative": [{"metric": "concurrency", "minReplicas": 0}, {"metric": "rps"}, {"metric": "cpu"}, {}],
}
PLACEMENT = [
    {},
    {"gpu": {"count": 1, "product": "NVIDIA-L4"}},
    {"gpu": {"count": 1, "resourceName": "nvidia.com/mig-1g.5gb"}},
]
BATCHING = [
    {},
    {"batching": {"maxBatchSize": 8, "maxBatchDelayMs": 5}},
    {"model": model(runtime="esteira-torchserve"), "batching": {"maxBatchSize": 8, "maxBatchDelayMs": 0}},
    {"model": model(runtime="esteira-kserve"), "batching": {"maxBatchSize": 8, "maxBatchDelayMs": 0}},
    {"model": model(runtime="esteira-kserve", workers=4)},
    {"model": model(runtime="esteira-torchserve", workers=2)},
]


@dataclass(frozen=True)
class Case:
    body: dict[str, Any]

    @property
    def id(self) -> str:
        rollout = self.body.get("rollout", {}).get("router", "KServe")
        metric = self.body.get("autoscaling", {}).get("metric", "default")
        gpu = self.body.get("gpu", {}).get("resourceName", "gpu" if "gpu" in self.body else "cpu")
        runtime = self.body["model"].get("runtime")
        batch = f"{runtime}-batch" if runtime else "batcher" if "batching" in self.body else "nobatch"
        if "workers" in self.body["model"]:
            batch = f"{runtime}-{self.body['model']['workers']}-workers"
        return f"{self.body.get('deploymentMode', 'Standard')}-{rollout}-{metric}-{gpu}-{batch}"


def _cases() -> Iterator[Case]:
    for mode, scalings in SCALING.items():
        routers = ["KServe", "GatewayAPI"] if mode == "Standard" else ["KServe"]
        for scaling, placement, batching, router in itertools.product(scalings, PLACEMENT, BATCHING, routers):
            if scaling.get("metric") == "gpu-utilization" and not placement:
                continue  # refused by the spec's own rules: nothing to render
            body = spec(
                deploymentMode=mode,
                autoscaling={"maxReplicas": 4, **scaling},
                rollout={"router": router, "steps": [10, 50, 100]},
                **placement,
                **batching,
            )
            if mode == "Standard" and batching:
                body["termination"] = {"drainSeconds": 15, "gracePeriodSeconds": 45}
            yield Case(body)


CASES = list(_cases())

# Rollout paths as the operator walks them: (plan, description) per state.
PATHS: dict[str, list[TrafficPlan]] = {
    "promote": [
        TrafficPlan(V1),
        TrafficPlan(V1, V2, 0),
        TrafficPlan(V1, V2, 10),
        TrafficPlan(V1, V2, 50),
        TrafficPlan(V1, V2, 100),
        TrafficPlan(V2),
    ],
    "promote-version-only": [TrafficPlan(V1), TrafficPlan(V1, V2_SAME_BUILD, 10), TrafficPlan(V2_SAME_BUILD)],
    "rollback": [TrafficPlan(V1), TrafficPlan(V1, V2, 50), TrafficPlan(V1), TrafficPlan(V1)],
    "rollback-to-earlier": [TrafficPlan(V1), TrafficPlan(V2), TrafficPlan(V3), TrafficPlan(V1)],
}


def _kserve_status(obj: dict[str, Any]) -> dict[str, Any]:
    """The part of status KServe's update validation reads (validateDeploymentMode): the mode it runs in,
    which KServe v0.20 writes as `Standard` or `Knative`."""
    return {"deploymentMode": obj["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]}


def _admit(stored: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server would store for the operator's create or merge patch, or the webhook's refusal."""
    candidate = desired if stored is None else merge_patch.apply(stored, drift_patch(stored, desired) or {})
    validate_custom_resource(candidate)
    try:
        admitted = admit(stored, candidate)
    except AdmissionDenied as exc:
        pytest.fail(f"KServe refuses {candidate['metadata']['name']}: {exc.message}")
    return {**admitted, "status": _kserve_status(admitted)}


def stored_keys(stored: dict[str, dict[str, Any]]) -> dict[ObjectKey, dict[str, Any]]:
    """The live objects as the router sees them (by apiVersion, kind, name)."""
    return {key_of(obj): obj for obj in stored.values()}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_state_and_transition_is_admitted(case: Case, path: str) -> None:
    parsed = ModelDeploymentSpec.parse(case.body)
    router = router_for(parsed.rollout.router)
    ctx = RenderContext("iris", "models", PROMETHEUS)
    stored: dict[str, dict[str, Any]] = {}
    for plan in PATHS[path]:
        for obj in router.desired(ctx, parsed, plan, stored_keys(stored)):
            if obj["kind"] != "InferenceService":
                validate_custom_resource(obj)
                continue
            name = obj["metadata"]["name"]
            stored[name] = _admit(stored.get(name), with_last_applied(obj))


def test_the_matrix_is_broad() -> None:
    ids = {c.id for c in CASES}
    assert len(ids) == len(CASES) >= 50
    assert {i.split("-")[0] for i in ids} == {"Standard", "Knative"}
    assert any("GatewayAPI" in i for i in ids) and any("mig" in i for i in ids)


def test_the_matrix_catches_a_named_stable_model_container() -> None:
    ctx = RenderContext("iris", "models", PROMETHEUS)
    (isvc,) = router_for("KServe").desired(ctx, ModelDeploymentSpec.parse(spec()), TrafficPlan(V1), {})
    isvc["spec"]["predictor"]["model"]["name"] = "kserve-container"
    with pytest.raises(AdmissionDenied, match="the 'name' field is not allowed in standard predictor"):
        admit(None, isvc)


def test_the_matrix_catches_a_predictor_rename_without_a_new_model() -> None:
    ctx = RenderContext("iris", "models", PROMETHEUS)
    parsed = ModelDeploymentSpec.parse(spec())
    (old,) = router_for("KServe").desired(ctx, parsed, TrafficPlan(V1), {})
    stored = {**admit(None, old), "status": _kserve_status(old)}
    (new,) = router_for("KServe").desired(ctx, parsed, TrafficPlan(V2_SAME_BUILD), {})
    new["spec"]["predictor"]["name"] = "rev-2"
    with pytest.raises(AdmissionDenied, match=r"predictor\.name change requires a model change"):
        admit(stored, new)

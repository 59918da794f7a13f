"""A resync or rollout tick plans from what the watches delivered: with nothing to do it reads nothing from the API
server; a plan that acts is applied only to the versions it was made from (else made again from what the API
server has); a full read comes due after ``full_read_seconds``; retraining Jobs come from the watches too."""

from __future__ import annotations

import asyncio
import copy
import random
from collections import Counter
from typing import Any

import pytest

from esteira.controller import reconciler as reconciler_module
from esteira.controller.observed import FullReads, Observed, child_entry
from esteira.controller.reconciler import Reconciler
from esteira.routing import ObjectKey, key_of
from tests.support.specs import document, spec
from tests.unit.test_reconcile_plan import apply as merge_patch
from tests.unit.test_reconcile_plan import kserve_ready
from tests.unit.test_retrain_plan import JOB

RETRAINING = {"triggers": {"drift": True}, "job": JOB}


class ClusterAPI:
    """A ModelDeployment and its children as the API server holds them, each write bumping a resourceVersion;
    counts every call by method."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.md: dict[str, Any] | None = document(body)
        self.md["metadata"].update(uid="uid-iris", generation=1)
        self.children: dict[ObjectKey, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.calls: Counter[str] = Counter()
        self._version = 0
        self._bump(self.md)

    def _bump(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)

    async def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls["get_model_deployment"] += 1
        return copy.deepcopy(self.md)

    async def list_children(self, namespace: str, owner: str) -> dict[ObjectKey, dict[str, Any]]:
        self.calls["list_children"] += 1
        return copy.deepcopy(self.children)

    async def list_rollout_commands(self, namespace: str) -> list[dict[str, Any]]:
        self.calls["list_rollout_commands"] += 1
        return []

    async def patch_model_deployment_status(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls["patch_model_deployment_status"] += 1
        assert self.md is not None
        self.md = merge_patch(self.md, {"status": patch})
        self._bump(self.md)
        return copy.deepcopy(self.md)

    async def create_child(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls["create_child"] += 1
        child = copy.deepcopy(body)
        self._bump(child)
        self.children[key_of(child)] = child
        return copy.deepcopy(child)

    async def patch_child(self, namespace: str, key: ObjectKey, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls["patch_child"] += 1
        self.children[key] = merge_patch(self.children[key], patch)
        self._bump(self.children[key])
        return copy.deepcopy(self.children[key])

    async def list_retrain_jobs(self, namespace: str, owner: str) -> dict[str, dict[str, Any]]:
        self.calls["list_retrain_jobs"] += 1
        return copy.deepcopy(self.jobs)

    def serve(self) -> None:
        """KServe reports every InferenceService Ready (a status write, so a new version)."""
        for key, child in self.children.items():
            self.children[key] = kserve_ready(child)
            self._bump(self.children[key])

    def observed(self) -> Observed:
        """What the watches deliver once they caught up with the API server."""
        assert self.md is not None
        children = [child_entry(child, *key[:2]) for key, child in self.children.items()]
        return Observed.of(self.md, children, self.jobs.values())

    def writes(self) -> int:
        return sum(n for call, n in self.calls.items() if not call.startswith(("get_", "list_")))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_kubernetes_events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Kopf posts Events through its running operator; here they are only collected."""
    posted: list[str] = []
    monkeypatch.setattr(reconciler_module.kopf, "event", lambda *_, reason, **__: posted.append(reason))
    return posted


def reconciler_for(api: ClusterAPI, clock: Clock, full_read_seconds: float = 600.0) -> Reconciler:
    reconciler = Reconciler(api, None)  # type: ignore[arg-type]
    reconciler.full_reads = FullReads(full_read_seconds, clock=clock)
    return reconciler


def converged(body: dict[str, Any] | None = None) -> tuple[ClusterAPI, Clock, Reconciler]:
    """A ModelDeployment whose InferenceService KServe serves, reconciled from the API server until Ready."""
    api, clock = ClusterAPI(body or spec()), Clock()
    reconciler = reconciler_for(api, clock)
    asyncio.run(reconciler.reconcile("models", "iris"))
    api.serve()
    asyncio.run(reconciler.reconcile("models", "iris"))
    assert api.md is not None and api.md["status"]["phase"] == "Ready"
    api.calls.clear()
    return api, clock, reconciler


def test_a_resync_with_nothing_to_do_reads_nothing() -> None:
    api, _, reconciler = converged()
    assert asyncio.run(reconciler.reconcile("models", "iris", api.observed())) == "unchanged"
    assert api.calls == Counter(), "planned from the watches, and nothing to write"


def test_a_retraining_deployment_takes_its_jobs_from_the_watches_too() -> None:
    api, _, reconciler = converged(spec(retraining=RETRAINING))
    api.jobs["retrain-1"] = {"metadata": {"name": "retrain-1", "resourceVersion": "7"}, "status": {"succeeded": 1}}
    assert asyncio.run(reconciler.reconcile("models", "iris", api.observed())) == "unchanged"
    assert api.calls == Counter()


def test_a_plan_that_acts_is_applied_to_the_versions_it_was_made_from() -> None:
    api, _, reconciler = converged()
    isvc = next(iter(api.children))
    api.children[isvc]["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": "PodsCrashing"}]
    api._bump(api.children[isvc])
    asyncio.run(reconciler.reconcile("models", "iris", api.observed()))
    assert api.calls["get_model_deployment"] == 1 and api.calls["list_children"] == 1
    assert api.calls["patch_model_deployment_status"] == 1, "the status follows KServe's, written once"
    assert api.md is not None and api.md["status"]["phase"] != "Ready"


def test_a_stale_observation_is_planned_again_from_the_api_server() -> None:
    api, _, reconciler = converged()
    behind = api.observed()
    isvc = next(iter(api.children))
    behind.children[isvc]["status"] = {}  # the watches have not delivered KServe's Ready yet
    behind.children[isvc]["metadata"]["resourceVersion"] = "1"
    before = reconciler_module.telemetry.RECONCILE_READS.labels("stale")._value.get()
    assert asyncio.run(reconciler.reconcile("models", "iris", behind)) == "unchanged"
    assert api.writes() == 0, "the stale plan (not Ready) was not applied"
    assert api.calls["get_model_deployment"] == 1 and api.calls["list_children"] == 1, "read once, planned again"
    assert reconciler_module.telemetry.RECONCILE_READS.labels("stale")._value.get() == before + 1


def test_a_deployment_gone_when_the_plan_would_act_changes_nothing() -> None:
    api, _, reconciler = converged()
    stale = api.observed()
    stale.md["status"] = {}  # a plan from this would write a status
    api.md = None
    assert asyncio.run(reconciler.reconcile("models", "iris", stale)) is None
    assert api.writes() == 0


def test_the_api_server_is_read_again_once_full_read_seconds_have_passed() -> None:
    api, clock, reconciler = converged()
    clock.now += 299.0  # the first half of the period is never due
    asyncio.run(reconciler.reconcile("models", "iris", api.observed()))
    assert api.calls == Counter()
    clock.now += 301.0
    asyncio.run(reconciler.reconcile("models", "iris", api.observed()))
    assert (api.calls["get_model_deployment"], api.calls["list_children"]) == (1, 1)
    api.calls.clear()
    asyncio.run(reconciler.reconcile("models", "iris", api.observed()))
    assert api.calls == Counter(), "the full read starts a new period"


def test_deployments_read_together_come_due_apart() -> None:
    clock = Clock()
    reads = FullReads(600.0, clock=clock, rng=random.Random(7))
    deployments = [("models", f"m{index}") for index in range(100)]
    for deployment in deployments:
        reads.read(deployment)

    def due_after(seconds: float) -> int:
        clock.now = 1000.0 + seconds
        return sum(reads.due(deployment) for deployment in deployments)

    due_by = {seconds: due_after(seconds) for seconds in (299.0, 450.0, 600.0)}
    assert due_by[299.0] == 0 and due_by[600.0] == 100
    assert 20 < due_by[450.0] < 80, "spread over the second half of the period, not one burst"


def test_full_read_seconds_zero_reads_every_time() -> None:
    api, clock, _ = converged()
    reconciler = reconciler_for(api, clock, full_read_seconds=0)
    for _ in range(2):
        asyncio.run(reconciler.reconcile("models", "iris", api.observed()))
    assert (api.calls["get_model_deployment"], api.calls["list_children"]) == (2, 2)


def test_a_deployment_never_read_is_read_first() -> None:
    api, clock, _ = converged()
    fresh = reconciler_for(api, clock)  # an operator just started: Kopf's index is full, its own reads are not
    asyncio.run(fresh.reconcile("models", "iris", api.observed()))
    assert (api.calls["get_model_deployment"], api.calls["list_children"]) == (1, 1)


def test_an_observation_matches_only_the_same_versions() -> None:
    api, _, _ = converged()
    observed = api.observed()
    assert observed.matches(api.observed())
    assert not observed.matches(Observed(observed.md, {}, {})), "a child the watches showed is gone"
    extra = {**observed.children, ("v1", "Other", "x"): {"metadata": {"resourceVersion": "9"}}}
    assert not observed.matches(Observed(observed.md, extra, {})), "a child the watches did not show"
    job = {"metadata": {"name": "retrain-1", "resourceVersion": "9"}}
    assert not observed.matches(Observed(observed.md, observed.children, {"retrain-1": job})), "a Job"
    newer = copy.deepcopy(observed.md)
    newer["metadata"]["resourceVersion"] = "99"
    assert not observed.matches(Observed(newer, observed.children, {}))


def test_retraining_jobs_count_only_where_the_spec_retrains() -> None:
    job = {"metadata": {"name": "retrain-1", "resourceVersion": "9"}}
    without = Observed.of(document(spec()), [], [job])
    assert without.jobs == {}, "left over from a spec that retrained: not what this plan reads"
    retraining = document(spec(retraining=RETRAINING))
    assert Observed.of(retraining, [], [job]).jobs == {"retrain-1": job}


def test_an_observation_is_a_copy() -> None:
    api, _, _ = converged()
    observed = api.observed()
    observed.md["status"]["phase"] = "Changed"
    next(iter(observed.children.values()))["spec"]["changed"] = True
    assert api.md is not None and api.md["status"]["phase"] == "Ready"
    assert "changed" not in next(iter(api.children.values()))["spec"]


def test_a_child_without_its_owner_is_adopted_once_and_kept_otherwise_as_it_was(
    no_kubernetes_events: list[str],
) -> None:
    """A child left by `kubectl delete --cascade=orphan` of an earlier ModelDeployment of the same name was patched
    to the spec but never named its new owner: deleting this one would have left it behind."""
    api, _, reconciler = converged()
    assert api.md is not None
    key = next(iter(api.children))
    child = api.children[key]
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "keeper", "uid": "uid-other"}
    earlier = {**child["metadata"]["ownerReferences"][0]}  # the ModelDeployment of this name before, a controller
    child["metadata"]["ownerReferences"] = [other, earlier]  # someone else's reference is kept; the earlier life's
    # is dropped: two controller references, the API server refuses the patch
    api._bump(child)
    api.md["metadata"]["uid"] = "uid-iris-new"
    api._bump(api.md)
    assert asyncio.run(reconciler.reconcile("models", "iris", api.observed())) == "updated"
    owners = api.children[key]["metadata"]["ownerReferences"]
    assert [owner["uid"] for owner in owners] == ["uid-other", "uid-iris-new"]
    assert "Adopted" in no_kubernetes_events
    api.calls.clear()
    assert asyncio.run(reconciler.reconcile("models", "iris", api.observed())) == "unchanged"
    assert api.calls == Counter()

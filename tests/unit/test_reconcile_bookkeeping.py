"""Bookkeeping per ModelDeployment: child events for one owner are left to the reconcile already waiting to start,
and a gone object's lock goes (but never while a reconcile holds or waits for it)."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest

from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus, RevisionRecord
from esteira.controller import handlers
from esteira.controller import reconciler as reconciler_module
from esteira.controller.reconciler import Reconciler
from esteira.controller.retry import ApiError
from esteira.quality.scores import Tally
from tests.support.specs import spec
from tests.unit.test_observed_reads import ClusterAPI


class GatedReconciler:
    """Counts reconciles; each holds until the test lets it start."""

    def __init__(self) -> None:
        self.calls, self.gate = 0, asyncio.Event()

    async def reconcile(self, namespace: str, name: str, started: Any = None) -> str:
        self.calls += 1
        await self.gate.wait()
        started()
        return "unchanged"

    def due(self, namespace: str, name: str) -> None:
        return None  # nothing time-based: no early reconcile


def child(owner: str) -> kopf.Body:
    return kopf.Body(
        {"metadata": {"namespace": "models", "name": "x", "labels": {"serving.esteira.io/deployment": owner}}}
    )


def test_child_events_for_an_owner_whose_reconcile_waits_are_left_to_it() -> None:
    async def scenario() -> None:
        reconciler = GatedReconciler()
        memo = kopf.Memo(reconciler=reconciler, background=set(), waiting=set())
        for _ in range(50):  # a watch listing again after a reconnect: every child at once
            await handlers.child_event(memo, child("iris"))
        await handlers.child_event(memo, child("other"))
        assert len(memo.background) == 2, "one reconcile for iris, one for other"
        reconciler.gate.set()
        await asyncio.gather(*memo.background)
        assert reconciler.calls == 2
        await handlers.child_event(memo, child("iris"))  # after it started: a change it may not have read
        await asyncio.gather(*memo.background)
        assert reconciler.calls == 3 and not memo.waiting

    asyncio.run(scenario())


class SlowAPI(ClusterAPI):
    """Reads the ModelDeployment only once the test lets it."""

    gate: asyncio.Event
    entered: asyncio.Event  # set once a read is waiting at the gate

    async def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.entered.set()
        await self.gate.wait()
        return await super().get_model_deployment(namespace, name)


def test_a_gone_object_s_lock_goes_but_not_while_a_reconcile_holds_it() -> None:
    async def scenario() -> None:
        api = SlowAPI(spec())
        api.gate, api.entered = asyncio.Event(), asyncio.Event()
        reconciler = Reconciler(api, None)  # type: ignore[arg-type]
        api.md = None  # deleted
        api.gate.set()
        assert await reconciler.reconcile("models", "iris") is None
        assert ("models", "iris") not in reconciler._locks, "children's deletion events made it again, for good"

        api.gate.clear()
        api.entered.clear()
        running = asyncio.create_task(reconciler.reconcile("models", "iris"))
        await asyncio.wait_for(api.entered.wait(), 10)  # it holds the lock, reading
        held = reconciler._locks[("models", "iris")]
        assert held.locked()
        reconciler.forget("models", "iris")  # the deletion handler, while a reconcile holds the lock
        assert reconciler._locks.get(("models", "iris")) is held, "a second reconcile would take a new lock"
        api.gate.set()
        assert await running is None
        assert ("models", "iris") not in reconciler._locks

    asyncio.run(scenario())


class RefusingAPI(ClusterAPI):
    """Refuses child patches with ``refusal`` (a status) while it is set, as an admission policy would."""

    refusal: int | None = None

    async def patch_child(self, namespace: str, key: Any, patch: dict[str, Any]) -> dict[str, Any]:
        if self.refusal is not None:
            raise ApiError(self.refusal, 'admission webhook "policy.example.com" denied the request')
        return await super().patch_child(namespace, key, patch)


def test_a_child_write_refused_for_good_is_said_once_and_tried_again_at_the_next_reconcile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Raised, it was retried every five seconds with an error Event each time, for as long as it lasted."""
    posted: list[str] = []
    monkeypatch.setattr(reconciler_module.kopf, "event", lambda *_, reason, **__: posted.append(reason))
    api = RefusingAPI(spec())
    reconciler = Reconciler(api, None)  # type: ignore[arg-type]
    asyncio.run(reconciler.reconcile("models", "iris"))
    api.serve()
    asyncio.run(reconciler.reconcile("models", "iris"))
    isvc = next(iter(api.children.values()))
    isvc["spec"]["predictor"]["minReplicas"] = 7  # a manual edit, which the operator puts back
    api.refusal, posted[:] = 403, []
    for _ in range(3):
        assert asyncio.run(reconciler.reconcile("models", "iris")) == "updated"
    assert posted.count("ChildRefused") == 1 and isvc["spec"]["predictor"]["minReplicas"] == 7
    api.refusal = None
    asyncio.run(reconciler.reconcile("models", "iris"))
    assert next(iter(api.children.values()))["spec"]["predictor"].get("minReplicas") != 7
    api.refusal = 404  # gone meanwhile: its deletion event reconciles; nothing refused
    next(iter(api.children.values()))["spec"]["predictor"]["minReplicas"] = 7
    asyncio.run(reconciler.reconcile("models", "iris"))
    assert posted.count("ChildRefused") == 1


def test_stable_s_accuracy_read_stands_until_the_next_read_is_due(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropped with a plan made again (its watch data stale) or not applied, a reading waited a whole minute."""
    reads: list[int] = []

    def tallies(client: Any) -> Any:
        async def read(namespace: str, name: str, revision: int, window: int) -> Tally:
            reads.append(revision)
            return Tally(200, 150, 0.0, 0.0)

        return read

    async def prometheus(self: Reconciler, md: dict[str, Any], spec: Any) -> tuple[object, None]:
        return object(), None

    monkeypatch.setattr(reconciler_module, "prometheus_tallies", tallies)
    monkeypatch.setattr(Reconciler, "_prometheus", prometheus)
    reconciler = Reconciler(ClusterAPI(spec()), None)  # type: ignore[arg-type]
    body = spec(retraining={"triggers": {"accuracyBelow": 0.9}, "command": ["train"]})
    md = {"metadata": {"namespace": "models", "name": "iris"}, "spec": body}

    def parsed(revision: int) -> Any:
        stable = RevisionRecord(revision=revision, model_version="1", storage_uri="s3://m/1", since="x")
        return ModelDeploymentSpec.parse(body), ModelDeploymentStatus(stable=stable)

    async def scenario() -> None:
        first = await reconciler._stable_accuracy(md, parsed(1))
        again = await reconciler._stable_accuracy(md, parsed(1))
        assert first is not None and again == first and reads == [1]
        assert await reconciler._stable_accuracy(md, parsed(2)) is not None and reads == [1, 2], "a new stable"

    asyncio.run(scenario())

"""Bookkeeping per ModelDeployment: child events for one owner are left to the reconcile already waiting to start,
and a gone object's lock goes (but never while a reconcile holds or waits for it)."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from esteira.controller import handlers
from esteira.controller.reconciler import Reconciler
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
        await asyncio.sleep(0)
        assert reconciler.calls == 2, "one for iris, one for other"
        reconciler.gate.set()
        await asyncio.gather(*memo.background)
        await handlers.child_event(memo, child("iris"))  # after it started: a change it may not have read
        await asyncio.gather(*memo.background)
        assert reconciler.calls == 3 and not memo.waiting

    asyncio.run(scenario())


class SlowAPI(ClusterAPI):
    """Reads the ModelDeployment only once the test lets it."""

    gate: asyncio.Event

    async def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        await self.gate.wait()
        return await super().get_model_deployment(namespace, name)


def test_a_gone_object_s_lock_goes_but_not_while_a_reconcile_holds_it() -> None:
    async def scenario() -> None:
        api = SlowAPI(spec())
        api.gate = asyncio.Event()
        reconciler = Reconciler(api, None)  # type: ignore[arg-type]
        api.md = None  # deleted
        api.gate.set()
        assert await reconciler.reconcile("models", "iris") is None
        assert ("models", "iris") not in reconciler._locks, "children's deletion events made it again, for good"

        api.gate.clear()
        running = asyncio.create_task(reconciler.reconcile("models", "iris"))
        await asyncio.sleep(0.01)
        held = reconciler._locks[("models", "iris")]
        assert held.locked()
        reconciler.forget("models", "iris")  # the deletion handler, while a reconcile holds the lock
        assert reconciler._locks.get(("models", "iris")) is held, "a second reconcile would take a new lock"
        api.gate.set()
        assert await running is None
        assert ("models", "iris") not in reconciler._locks

    asyncio.run(scenario())

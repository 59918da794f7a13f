"""Time-based work due before the next timer run gets a reconcile of its own: a drift interval shorter than the
resync interval is kept, and work due about when the timer runs anyway is left to it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import kopf
import pytest

from esteira.controller import handlers
from esteira.controller import reconciler as reconciler_module
from esteira.controller.wakes import Wakes
from tests.support.specs import spec
from tests.support.waiting import until
from tests.unit.test_observed_reads import converged


def recorder(runs: list[str], label: str) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        runs.append(label)

    return run


def test_a_wake_is_set_only_when_it_comes_before_the_timer() -> None:
    async def scenario() -> None:
        wakes, runs = Wakes(resync_seconds=60, rollout_tick_seconds=5), []
        assert not wakes.set(("models", "a"), 59.0, False, recorder(runs, "a")), "the resync comes about as soon"
        assert not wakes.set(("models", "a"), None, False, recorder(runs, "a"))
        assert not wakes.set(("models", "a"), 4.0, True, recorder(runs, "a")), "a rollout tick comes about as soon"
        assert wakes.set(("models", "b"), 0.01, True, recorder(runs, "b"))
        assert wakes.set(("models", "c"), 0.05, False, recorder(runs, "c"))
        await until(lambda: runs == ["b", "c"], what="both wakes ran, in order")
        assert not wakes.pending(("models", "b")) and not wakes.pending(("models", "c"))

    asyncio.run(scenario())


def test_a_newer_wake_replaces_the_pending_one_and_a_cancelled_one_never_runs() -> None:
    async def scenario() -> None:
        wakes, runs = Wakes(resync_seconds=60, rollout_tick_seconds=5), []
        wakes.set(("models", "a"), 0.2, False, recorder(runs, "old"))
        wakes.set(("models", "a"), 0.01, False, recorder(runs, "new"))
        wakes.set(("models", "gone"), 0.01, False, recorder(runs, "gone"))
        wakes.cancel(("models", "gone"))
        wakes.set(("models", "later"), 0.01, False, recorder(runs, "later"))
        assert not wakes.set(("models", "later"), 59.0, False, recorder(runs, "later")), "its newer plan is not due"
        assert not wakes.pending(("models", "later"))
        wakes.set(("models", "marker"), 0.3, False, recorder(runs, "marker"))  # after the replaced one's time
        await until(lambda: "marker" in runs, what="the marker's wake ran")
        assert runs == ["new", "marker"], "the replaced and the cancelled wakes never ran"

    asyncio.run(scenario())


@pytest.fixture(autouse=True)
def no_kubernetes_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kopf posts Events through its running operator; here there is none."""
    monkeypatch.setattr(reconciler_module.kopf, "event", lambda *_, **__: None)


def memo_for(reconciler: Any, wakes: Wakes) -> kopf.Memo:
    return kopf.Memo(reconciler=reconciler, managed=set(), background=set(), waiting=set(), wakes=wakes)


def last_evaluation(api: Any) -> str | None:
    return (api.md["status"].get("monitoring") or {}).get("lastEvaluationTime")


def test_a_drift_interval_shorter_than_the_resync_is_kept() -> None:
    api, _, reconciler = converged(spec(monitoring={"drift": {"interval": "1s"}}))

    async def scenario() -> None:
        wakes = Wakes(resync_seconds=60, rollout_tick_seconds=5)
        memo = memo_for(reconciler, wakes)
        await handlers.resync(memo, "models", "iris", kopf.Body(api.md))
        first = last_evaluation(api)
        assert first is not None and wakes.pending(("models", "iris"))
        await until(lambda: last_evaluation(api) not in (None, first), what="a second evaluation before the resync")
        wakes.cancel(("models", "iris"))

    asyncio.run(scenario())


def test_a_drift_interval_as_long_as_the_resync_is_left_to_it() -> None:
    api, _, reconciler = converged(spec(monitoring={"drift": {"interval": "1m"}}))

    async def scenario() -> None:
        wakes = Wakes(resync_seconds=60, rollout_tick_seconds=5)
        await handlers.resync(memo_for(reconciler, wakes), "models", "iris", kopf.Body(api.md))
        assert last_evaluation(api) is not None, "evaluated"
        assert not wakes.pending(("models", "iris")), "the next resync evaluates it, with no reconcile between"

    asyncio.run(scenario())


def test_a_deleted_model_deployment_s_wake_is_cancelled() -> None:
    api, _, reconciler = converged(spec(monitoring={"drift": {"interval": "1s"}}))

    async def scenario() -> None:
        wakes = Wakes(resync_seconds=60, rollout_tick_seconds=5)
        memo = memo_for(reconciler, wakes)
        await handlers.resync(memo, "models", "iris", kopf.Body(api.md))
        assert wakes.pending(("models", "iris"))
        await handlers.model_deployment_deleted(memo, "models", "iris")
        assert not wakes.pending(("models", "iris"))

    asyncio.run(scenario())

"""The pod's front lets so many requests through to TorchServe at once and holds the rest: taken oldest first,
newest first once callers leave, a caller that left dropped, one whose deadline cannot be met refused."""

from __future__ import annotations

import asyncio

import pytest

from esteira.packaging import admission as admission_module
from esteira.packaging.admission import Admission, TooLate, at_once


def test_two_batches_a_worker_go_through_at_once() -> None:
    assert at_once([(8, 1)]) == 16
    assert at_once([(8, 2), (1, 1)]) == 34
    assert at_once([]) is None
    with pytest.raises(ValueError, match="at least 1"):
        Admission(0)


class Clock:
    """The admission's ``time``: a clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The admission's clock, moved by the test: how long each request waited is then known."""
    moved = Clock()
    monkeypatch.setattr(admission_module, "time", moved)
    return moved


async def entered(admission: Admission, name: str, order: list[str], deadline: float | None = None) -> str:
    await admission.enter(deadline)
    order.append(name)
    return name


async def queued(admission: Admission, count: int) -> None:
    """The tasks just made run to their waits (each waits as soon as it first runs), ``count`` of them."""
    await asyncio.sleep(0)
    assert admission.waiting == count


def test_below_the_limit_requests_go_straight_through_and_the_rest_wait_their_turn_oldest_first() -> None:
    async def scenario() -> list[str]:
        admission, order = Admission(2), []
        await entered(admission, "a", order)
        await entered(admission, "b", order)
        waiting = [asyncio.ensure_future(entered(admission, name, order)) for name in ("c", "d", "e")]
        await queued(admission, 3)
        assert order == ["a", "b"] and admission.through == 2
        admission.leave(0.01)
        admission.leave(0.01)
        await asyncio.gather(*waiting[:2])
        assert admission.through == 2 and admission.waiting == 1
        admission.leave(0.01)
        await waiting[2]
        return order

    assert asyncio.run(scenario()) == ["a", "b", "c", "d", "e"]


def test_a_caller_that_leaves_while_waiting_is_dropped_and_then_the_newest_go_first(clock: Clock) -> None:
    """A caller leaves after 200 ms: those that came after it, waiting less than that, go newest first."""

    async def scenario() -> list[str]:
        admission, order = Admission(1), []
        await entered(admission, "running", order)
        leaves = asyncio.ensure_future(entered(admission, "leaves", order))
        await queued(admission, 1)
        clock.now += 0.2
        rest = [asyncio.ensure_future(entered(admission, name, order)) for name in ("b", "c", "d")]
        await queued(admission, 4)
        leaves.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaves
        assert admission.abandoned == 1
        for _ in rest:
            admission.leave(0.01)
            await asyncio.sleep(0)
        await asyncio.gather(*rest)
        assert admission.through == 1
        return order

    assert asyncio.run(scenario()) == ["running", "d", "c", "b"]


def test_a_caller_let_through_as_it_leaves_gives_its_place_to_the_next() -> None:
    async def scenario() -> None:
        admission, order = Admission(1), []
        await entered(admission, "running", order)
        leaves = asyncio.ensure_future(entered(admission, "leaves", order))
        nxt = asyncio.ensure_future(entered(admission, "next", order))
        await queued(admission, 2)
        admission.leave(0.01)  # lets "leaves" through ...
        leaves.cancel()  # ... as its caller goes, before it runs
        with pytest.raises(asyncio.CancelledError):
            await leaves
        assert await asyncio.wait_for(nxt, 10) == "next"  # never, were the place kept by the caller that left
        assert admission.through == 1 and order == ["running", "next"]

    asyncio.run(scenario())


def test_a_request_whose_deadline_falls_before_the_fastest_recent_answer_is_refused(clock: Clock) -> None:
    """The recent answers took 50 ms at the fastest: a request due in 10 ms that would wait is refused at once;
    one due in 60 ms waits, and is refused when its turn comes 20 ms later; one due in a minute goes."""

    async def scenario() -> list[str]:
        admission, order = Admission(1), []
        await entered(admission, "first", order)
        admission.leave(0.05)
        await entered(admission, "running", order)
        with pytest.raises(TooLate):
            await admission.enter(clock.now + 0.01)
        hurried = asyncio.ensure_future(entered(admission, "hurried", order, clock.now + 0.06))
        patient = asyncio.ensure_future(entered(admission, "patient", order, clock.now + 60))
        await queued(admission, 2)
        clock.now += 0.02
        admission.leave(0.05)
        with pytest.raises(TooLate):
            await hurried
        await patient
        assert admission.late == 2 and admission.through == 1
        return order

    assert asyncio.run(scenario()) == ["first", "running", "patient"]

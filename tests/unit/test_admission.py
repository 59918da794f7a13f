"""The pod's front lets so many requests through to TorchServe at once, while callers give up or say their
deadlines, and holds the rest: taken oldest first, newest first once callers leave, a caller that left dropped,
one whose deadline cannot be met refused."""

from __future__ import annotations

import asyncio

import pytest

from esteira.packaging import admission as admission_module
from esteira.packaging.admission import Admission, TooLate, at_once
from esteira.packaging.caller_queue import LEAVING_WINDOW_SECONDS


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


def test_patient_callers_go_straight_through_past_the_limit() -> None:
    """Nobody gives up and nobody says a deadline: the limit does not hold, TorchServe's own queue takes all."""

    async def scenario() -> list[str]:
        admission, order = Admission(1), []
        for name in ("a", "b", "c"):
            await entered(admission, name, order)
        assert admission.through == 3 and admission.waiting == 0
        return order

    assert asyncio.run(scenario()) == ["a", "b", "c"]


def test_requests_that_say_their_deadline_are_held_to_the_limit_and_go_oldest_first(clock: Clock) -> None:
    due = clock.now + 60

    async def scenario() -> list[str]:
        admission, order = Admission(2), []
        await entered(admission, "a", order, due)
        await entered(admission, "b", order, due)
        waiting = [asyncio.ensure_future(entered(admission, name, order, due)) for name in ("c", "d", "e")]
        await queued(admission, 3)
        assert order == ["a", "b"] and admission.through == 2
        admission.leave(0.01)
        admission.leave(0.01)
        await asyncio.gather(*waiting[:2])
        assert admission.through == 2 and admission.waiting == 1
        admission.leave(0.01)
        await waiting[2]
        clock.now += LEAVING_WINDOW_SECONDS  # no deadline said for that long: the limit no longer holds
        await entered(admission, "f", order)
        assert admission.through == 3
        return order

    assert asyncio.run(scenario()) == ["a", "b", "c", "d", "e", "f"]


def test_once_a_caller_leaves_a_request_at_torchserve_the_limit_holds_and_the_newest_go_first(clock: Clock) -> None:
    """The caller of the request at TorchServe leaves after 200 ms: callers are giving up, so the next wait;
    one of them leaves while waiting and is dropped; those that waited less than 200 ms go newest first."""

    async def scenario() -> list[str]:
        admission, order = Admission(1), []
        await entered(admission, "running", order)
        clock.now += 0.2
        admission.left_after(0.2)
        leaves = asyncio.ensure_future(entered(admission, "leaves", order))
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


def test_a_caller_let_through_as_it_leaves_gives_its_place_to_the_next(clock: Clock) -> None:
    due = clock.now + 60

    async def scenario() -> None:
        admission, order = Admission(1), []
        await entered(admission, "running", order, due)
        leaves = asyncio.ensure_future(entered(admission, "leaves", order, due))
        nxt = asyncio.ensure_future(entered(admission, "next", order, due))
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

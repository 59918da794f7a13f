"""Requests joined before TorchServe (``esteira.packaging.joiner``), against a stand-in that frames its answers as
Esteira's handler does: a lone request goes as it is, those that come while the model server is busy go together
as one, each caller gets its own answer, and refusals, failures and callers that leave are each handled.

The same before a real TorchServe, through the pod's front, is in test_front_joined.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import uvloop
from aiohttp import web

from esteira.local.server import free_port
from esteira.packaging import joiner as joiner_module
from esteira.packaging.joiner import EXPECTATIONS_KEPT, Joiner, Joining
from esteira.packaging.upstream import Malformed, Reply, Unreachable, Upstream
from esteira.vocabulary import EXPECTED_TIMEOUT_HEADER
from model_handlers.joined import JOINED_HEADER, answer_entry, frame, request_headers_of, unframe

PATH = "/v1/models/iris:predict"


@dataclass
class StandIn:
    """Answers each request it is sent (joined or not) with its own body and ``x-seen: <request's headers>``;
    ``gate`` holds requests until set; ``joined_as`` says how it answers a joined request."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[tuple[str, int]] = field(default_factory=list)  # (path, requests joined in it; 0: not joined)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    joined_as: str = "joined"  # "joined", "refused", "one answer"
    time_left: list[str | None] = field(default_factory=list)  # what each request or joined one was told is left
    takes: float = 0.0  # seconds each request takes once let through, as a model's time

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        count = request.headers.get(JOINED_HEADER)
        async with self.arrived:
            self.received.append((request.path, int(count or 0)))
            self.arrived.notify_all()
        if count is None:
            self.time_left.append(request.headers.get(EXPECTED_TIMEOUT_HEADER))
        else:
            self.time_left += [
                request_headers_of(entry).get(EXPECTED_TIMEOUT_HEADER) for entry in unframe(body, int(count))
            ]
        await self.gate.wait()
        if self.takes:
            await asyncio.sleep(self.takes)
        if count is None:
            return web.Response(body=body, headers={"x-seen": request.headers.get("x-caller", "")})
        if self.joined_as == "refused":
            return web.json_response({"code": 503, "message": "busy"}, status=503, headers={"Retry-After": "2"})
        if self.joined_as == "one answer":
            return web.Response(body=b"{}", content_type="application/json")
        if self.joined_as == "a count past reading":  # more digits than int() converts
            return web.Response(body=b"", headers={JOINED_HEADER: "9" * 5000})
        if self.joined_as == "a header nested too deeply":
            nested = b"[" * 100_000 + b"]" * 100_000
            entry = b"".join((len(nested).to_bytes(4, "big"), nested, (0).to_bytes(4, "big")))
            return web.Response(body=entry * int(count), headers={JOINED_HEADER: count})
        entries = unframe(body, int(count))
        answers = [
            answer_entry(
                json.loads(entry.body).get("status", 200), {"X-Seen": request_headers_of(entry)["x-caller"]}, entry.body
            )
            for entry in entries
        ]
        return web.Response(body=frame(answers), headers={JOINED_HEADER: count})

    async def until_received(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.received) >= count), 10)


@asynccontextmanager
async def joiner(joining: Joining) -> AsyncIterator[tuple[Joiner, StandIn]]:
    stand_in = StandIn()
    app = web.Application()
    app.router.add_post("/{tail:.*}", stand_in.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    upstream = Upstream(f"http://127.0.0.1:{port}")
    try:
        yield Joiner(upstream, joining), stand_in
    finally:
        upstream.close()
        await runner.cleanup()


def post(
    joined: Joiner, caller: int, path: str = PATH, connection: object = None, due: float | None = None, **fields: object
) -> asyncio.Task[Reply]:
    """``caller``'s request, on ``connection`` where a test says which (None: unknown to the joiner), its caller
    giving up at ``due`` where a test says when."""
    body = json.dumps({"caller": caller, **fields}).encode()
    headers = {"content-type": "application/json", "x-caller": str(caller)}
    return asyncio.ensure_future(joined.post(path, body, headers, connection, due))


def own(reply: Reply, caller: int) -> bool:
    """Whether ``reply`` is the answer to ``caller``'s request."""
    return json.loads(reply.body)["caller"] == caller and reply.headers["x-seen"] == str(caller)


def test_requests_that_come_while_the_server_is_busy_go_together_and_each_caller_gets_its_own_answer() -> None:
    async def scenario() -> None:
        async with joiner(Joining(most=3, at_once=1, max_body=1 << 20)) as (joined, stand_in):
            first = post(joined, 0)
            await stand_in.until_received(1)  # a lone request goes at once, as it is
            waiting = [post(joined, caller) for caller in range(1, 6)]
            other_path = post(joined, 6, "/v2/models/iris/infer")
            await asyncio.sleep(0)  # a turn of the loop: each has come to the joiner
            assert (joined.sending, joined.waiting) == (1, 6)  # nothing is sent while the one at the server is there
            stand_in.gate.set()
            replies = await asyncio.gather(first, *waiting, other_path)
            assert all(own(reply, caller) for caller, reply in enumerate(replies))
            assert all(reply.status == 200 for reply in replies)
            # Oldest first, at most three of one path in one request; the other path's alone (sent as it is).
            assert stand_in.received == [(PATH, 0), (PATH, 3), (PATH, 2), ("/v2/models/iris/infer", 0)]
            assert (joined.sending, joined.waiting) == (0, 0)

    uvloop.run(scenario())


def test_each_joined_request_gets_its_own_status() -> None:
    async def scenario() -> None:
        async with joiner(Joining(most=8, at_once=1, max_body=1 << 20)) as (joined, stand_in):
            first = post(joined, 0)
            await stand_in.until_received(1)
            good, bad = post(joined, 1), post(joined, 2, status=400)
            await asyncio.sleep(0)
            stand_in.gate.set()
            replies = await asyncio.gather(first, good, bad)
            assert [reply.status for reply in replies] == [200, 200, 400]
            assert replies[2].reason == "Bad Request" and own(replies[2], 2)

    uvloop.run(scenario())


def test_requests_that_would_pass_the_body_limit_joined_go_in_another_request() -> None:
    async def scenario() -> None:
        async with joiner(Joining(most=8, at_once=1, max_body=450)) as (joined, stand_in):
            first = post(joined, 0)
            await stand_in.until_received(1)
            filler = "x" * 120  # each framed request is about 205 bytes: two fit in 450, three do not
            waiting = [post(joined, caller, filler=filler) for caller in range(1, 6)]
            await asyncio.sleep(0)
            stand_in.gate.set()
            replies = await asyncio.gather(first, *waiting)
            assert all(own(reply, caller) for caller, reply in enumerate(replies))
            assert [count for _, count in stand_in.received] == [0, 2, 2, 0]

    uvloop.run(scenario())


def test_requests_left_for_the_next_joined_request_say_what_is_left_as_that_one_goes() -> None:
    """Requests that did not fit in a joined request go in the next one, a model's time later: each says what is
    left of its caller's time when it goes, not what was left when it was weighed for the one before."""

    async def scenario() -> None:
        async with joiner(Joining(most=8, at_once=1, max_body=600)) as (joined, stand_in):
            stand_in.takes = 0.03
            due = time.perf_counter() + 5.0
            first = post(joined, 0, due=due)
            await stand_in.until_received(1)
            filler = "x" * 120  # each framed request is about 270 bytes with its deadline: two fit in 600
            waiting = [post(joined, caller, due=due, filler=filler) for caller in range(1, 5)]
            await asyncio.sleep(0)
            stand_in.gate.set()
            replies = await asyncio.wait_for(asyncio.gather(first, *waiting), 5)
            assert all(own(reply, caller) for caller, reply in enumerate(replies))
            assert [count for _, count in stand_in.received] == [0, 2, 2]
            told = [int(left or 0) for left in stand_in.time_left]
            assert told[1] == told[2] and told[3] == told[4], "a joined request's entries go at one moment"
            assert told[3] <= told[1] - 20, f"the second joined request was told {told[3]} ms, the first {told[1]}"

    uvloop.run(scenario())


MALFORMED = {
    "one answer": "with one answer",
    "a count past reading": "must be a count",
    "a header nested too deeply": "nested too deeply",
}


@pytest.mark.parametrize("joined_as", ["refused", *MALFORMED])
def test_a_joined_request_refused_or_answered_as_one_is_answered_so_to_each_caller(joined_as: str) -> None:
    """A refusal reaches every caller joined in the request; an answer that cannot be taken apart is a 502 for
    each (it left them waiting for ever where reading it raised other than a framing error)."""

    async def scenario() -> None:
        async with joiner(Joining(most=8, at_once=1, max_body=1 << 20)) as (joined, stand_in):
            stand_in.joined_as = joined_as
            first = post(joined, 0)
            await stand_in.until_received(1)
            waiting = [post(joined, caller) for caller in (1, 2)]
            await asyncio.sleep(0)
            stand_in.gate.set()
            assert own(await first, 0)
            if joined_as == "refused":
                replies = await asyncio.gather(*waiting)
                assert [(r.status, r.headers["retry-after"]) for r in replies] == [(503, "2"), (503, "2")]
            else:
                for task in waiting:
                    with pytest.raises(Malformed, match=MALFORMED[joined_as]):
                        await asyncio.wait_for(task, 10)

    uvloop.run(scenario())


def test_a_fault_in_reading_a_joined_answer_fails_its_callers_rather_than_leaving_them_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def faulty(*_: object) -> list[Reply]:
        raise RuntimeError("a bug")

    async def scenario() -> None:
        async with joiner(Joining(most=8, at_once=1, max_body=1 << 20)) as (joined, stand_in):
            first = post(joined, 0)
            await stand_in.until_received(1)
            waiting = [post(joined, caller) for caller in (1, 2)]
            await asyncio.sleep(0)
            monkeypatch.setattr(joiner_module, "_answers", faulty)
            stand_in.gate.set()
            assert own(await first, 0)
            for task in waiting:
                with pytest.raises(Malformed, match="could not be read: RuntimeError"):
                    await asyncio.wait_for(task, 10)
            assert joined.sending == 0

    uvloop.run(scenario())


def test_a_caller_that_leaves_while_waiting_is_not_sent_and_counted() -> None:
    async def scenario() -> None:
        async with joiner(Joining(most=8, at_once=1, max_body=1 << 20)) as (joined, stand_in):
            first = post(joined, 0)
            await stand_in.until_received(1)
            leaving, staying = post(joined, 1), post(joined, 2)
            await asyncio.sleep(0)
            leaving.cancel()
            stand_in.gate.set()
            assert own(await first, 0) and own(await staying, 2)
            assert stand_in.received == [(PATH, 0), (PATH, 0)]  # the one left waiting went alone, as it is
            assert joined.abandoned == 1

    uvloop.run(scenario())


def test_a_server_that_cannot_be_reached_fails_every_joined_caller() -> None:
    async def scenario() -> None:
        joined = Joiner(Upstream(f"http://127.0.0.1:{free_port()}"), Joining(most=8, at_once=1, max_body=1 << 20))
        tasks = [post(joined, caller) for caller in range(3)]
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(outcome, Unreachable) for outcome in outcomes), outcomes
        assert len({id(outcome) for outcome in outcomes}) == 3  # one exception each
        assert joined.sending == 0

    uvloop.run(scenario())


def test_joining_is_for_models_that_batch() -> None:
    assert Joining.for_model(1, 4, 100) is None
    assert Joining.for_model(8, 2, 100) == Joining(most=8, at_once=4, max_body=100)
    assert Joining.for_model(8, 1, 100, delay_ms=5) == Joining(most=8, at_once=2, max_body=100, linger=0.005)


def test_with_a_delay_a_lone_request_waits_it_for_company_then_goes_with_those_that_came() -> None:
    """``linger`` 50 ms: the server idle, the first request waits; two more come within the delay and the three go
    as one request when it ends, counted from the first's arrival."""

    async def scenario() -> None:
        async with joiner(Joining(most=8, at_once=2, max_body=1 << 20, linger=0.05)) as (joined, stand_in):
            stand_in.gate.set()
            loop = asyncio.get_running_loop()
            began = loop.time()
            first = post(joined, 0)
            await asyncio.sleep(0.01)
            assert (joined.sending, joined.waiting, stand_in.received) == (0, 1, []), "it waits for company"
            others = [post(joined, caller) for caller in (1, 2)]
            replies = await asyncio.wait_for(asyncio.gather(first, *others), 5)
            assert loop.time() - began >= 0.045  # the delay, on the loop's millisecond clock
            assert all(own(reply, caller) for caller, reply in enumerate(replies))
            assert stand_in.received == [(PATH, 3)]
            late = await asyncio.wait_for(post(joined, 3), 5)  # alone when the next delay ends: as it is
            assert own(late, 3) and stand_in.received[-1] == (PATH, 0)

    uvloop.run(scenario())


def test_a_delay_shorter_than_the_loops_clock_step_still_answers_every_caller() -> None:
    """uvloop's clock moves in milliseconds and its ``call_at`` for a time that is due gives a plain handle: a
    delay of half a millisecond must neither fail nor strand a caller."""

    async def scenario() -> None:
        async with joiner(Joining(most=8, at_once=2, max_body=1 << 20, linger=0.0004)) as (joined, stand_in):
            stand_in.gate.set()
            for _ in range(3):
                callers = [post(joined, caller) for caller in range(5)]
                replies = await asyncio.wait_for(asyncio.gather(*callers), 5)
                assert all(own(reply, caller) for caller, reply in enumerate(replies))
            assert sum(count or 1 for _, count in stand_in.received) == 15

    uvloop.run(scenario())


def test_with_a_delay_a_full_request_goes_without_waiting_it_out() -> None:
    async def scenario() -> None:
        async with joiner(Joining(most=3, at_once=2, max_body=1 << 20, linger=10.0)) as (joined, stand_in):
            stand_in.gate.set()
            replies = await asyncio.wait_for(asyncio.gather(*(post(joined, caller) for caller in range(3))), 5)
            assert all(own(reply, caller) for caller, reply in enumerate(replies))
            assert stand_in.received == [(PATH, 3)]

    uvloop.run(scenario())


def test_two_at_once_go_alone_until_requests_go_joined_then_one_waits_to_be_joined() -> None:
    """``at_once`` 2: two requests go at once, alone, and the two after them wait and go joined; from then on a
    request that finds one at the server waits to be joined instead of going alone beside it, until the waiting
    go alone again."""

    async def scenario() -> None:
        async with joiner(Joining(most=8, at_once=2, max_body=1 << 20)) as (joined, stand_in):
            first, second = post(joined, 0), post(joined, 1)
            await stand_in.until_received(2)
            third, fourth = post(joined, 2), post(joined, 3)
            await asyncio.sleep(0)
            assert (joined.sending, joined.waiting) == (2, 2)
            stand_in.gate.set()
            replies = await asyncio.gather(first, second, third, fourth)
            assert all(own(reply, caller) for caller, reply in enumerate(replies))
            assert [count for _, count in stand_in.received] == [0, 0, 2]
            stand_in.gate.clear()
            fifth = post(joined, 4)
            await stand_in.until_received(4)
            sixth = post(joined, 5)
            await asyncio.sleep(0)
            assert (joined.sending, joined.waiting) == (1, 1)  # two may be at once, but requests go joined now
            stand_in.gate.set()
            assert own(await fifth, 4) and own(await sixth, 5)
            assert [count for _, count in stand_in.received] == [0, 0, 2, 0, 0]
            stand_in.gate.clear()
            seventh = post(joined, 6)
            await stand_in.until_received(6)
            eighth = post(joined, 7)
            await stand_in.until_received(7)  # the last went alone from the wait: two at once again
            stand_in.gate.set()
            assert own(await seventh, 6) and own(await eighth, 7)

    uvloop.run(scenario())


def test_while_requests_go_joined_a_full_one_goes_beside_the_one_at_the_server() -> None:
    """Requests going joined and one at the server: those that come wait until they fill a joined request (three
    here), which then goes to the server's queue at once; fewer would wait for the one at the server."""

    async def scenario() -> None:
        async with joiner(Joining(most=3, at_once=2, max_body=1 << 20)) as (joined, stand_in):
            first, second = post(joined, 0), post(joined, 1)
            await stand_in.until_received(2)
            more = [post(joined, caller) for caller in (2, 3, 4)]
            stand_in.gate.set()
            assert all(own(reply, caller) for caller, reply in enumerate(await asyncio.gather(first, second, *more)))
            assert [count for _, count in stand_in.received] == [0, 0, 3]  # requests go joined now
            stand_in.gate.clear()
            alone = post(joined, 5)
            await stand_in.until_received(4)
            two = [post(joined, caller) for caller in (6, 7)]
            await asyncio.sleep(0)
            assert (joined.sending, joined.waiting) == (1, 2)
            third = post(joined, 8)
            await stand_in.until_received(5)
            assert stand_in.received[-1] == (PATH, 3) and joined.sending == 2
            stand_in.gate.set()
            replies = await asyncio.gather(alone, *two, third)
            assert all(own(reply, caller) for caller, reply in zip((5, 6, 7, 8), replies, strict=True))

    uvloop.run(scenario())


async def closed_loop(joined: Joiner, callers: int, rounds: int) -> None:
    """``callers`` that each send again as soon as they are answered, each on its own connection."""
    for _ in range(rounds):
        replies = await asyncio.wait_for(
            asyncio.gather(*(post(joined, caller, connection=caller) for caller in range(callers))), 5
        )
        assert all(own(reply, caller) for caller, reply in enumerate(replies))


WARM_ROUNDS = EXPECTATIONS_KEPT // 4 + 4  # enough answered callers of four to judge whether they come back


def test_callers_that_come_straight_back_are_waited_for_and_go_in_one_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four callers in a closed loop: once they have been coming back within the window, three that are back wait
    for the fourth, answered a moment ago, and the four go as one request, instead of two of them going alone."""
    monkeypatch.setattr(joiner_module, "RETURN_WINDOW", 0.5)  # a loaded test machine's callers still come in time

    async def scenario() -> None:
        async with joiner(Joining(most=4, at_once=2, max_body=1 << 20)) as (joined, stand_in):
            stand_in.gate.set()
            await closed_loop(joined, 4, WARM_ROUNDS)
            sent = len(stand_in.received)
            three = [post(joined, caller, connection=caller) for caller in range(3)]
            await asyncio.sleep(0)  # a turn of the loop: each has come to the joiner
            assert (joined.sending, joined.waiting) == (0, 3), "the server is idle, yet they wait for the fourth"
            fourth = post(joined, 3, connection=3)
            replies = await asyncio.wait_for(asyncio.gather(*three, fourth), 5)
            assert all(own(reply, caller) for caller, reply in enumerate(replies))
            assert stand_in.received[sent:] == [(PATH, 4)]

    uvloop.run(scenario())


def test_before_esteira_kserve_callers_coming_straight_back_go_at_once_up_to_two_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """esteira-kserve's batcher batches what queued meanwhile: three closed-loop callers that are back go at once
    (two batches of 4 may be at it), none waits for the fourth, and a request beyond two batches is joined."""
    monkeypatch.setattr(joiner_module, "RETURN_WINDOW", 0.5)
    joining = Joining.for_batcher(4, 1, 1 << 20)
    assert joining is not None and (joining.at_once, joining.for_callers) == (8, False)

    async def scenario() -> None:
        async with joiner(joining) as (joined, stand_in):
            stand_in.gate.set()
            await closed_loop(joined, 4, WARM_ROUNDS)
            sent = len(stand_in.received)
            stand_in.gate.clear()
            three = [post(joined, caller, connection=caller) for caller in range(3)]
            await asyncio.sleep(0)  # a turn of the loop: each has come to the joiner
            assert (joined.sending, joined.waiting) == (3, 0), "each goes at once, none waits for the fourth"
            more = [post(joined, caller, connection=caller) for caller in range(3, 12)]
            await stand_in.until_received(sent + 8)
            assert (joined.sending, joined.waiting) == (8, 4), "two batches' worth at the server, the rest held"
            stand_in.gate.set()
            replies = await asyncio.wait_for(asyncio.gather(*three, *more), 5)
            assert all(own(reply, caller) for caller, reply in enumerate(replies))
            assert stand_in.received[sent:] == [(PATH, 0)] * 8 + [(PATH, 4)]

    uvloop.run(scenario())


def test_callers_expected_back_that_do_not_come_are_waited_for_no_longer_than_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(joiner_module, "RETURN_WINDOW", 0.2)

    async def scenario() -> None:
        async with joiner(Joining(most=4, at_once=2, max_body=1 << 20)) as (joined, stand_in):
            stand_in.gate.set()
            await closed_loop(joined, 4, WARM_ROUNDS)
            sent = len(stand_in.received)
            three = [post(joined, caller, connection=caller) for caller in range(3)]
            await asyncio.sleep(0)  # a turn of the loop: each has come to the joiner
            assert (joined.sending, joined.waiting) == (0, 3), "held for the fourth"
            replies = await asyncio.wait_for(asyncio.gather(*three), 5)  # they go when the window ends
            assert all(own(reply, caller) for caller, reply in enumerate(replies))
            assert stand_in.received[sent:] == [(PATH, 3)]

    uvloop.run(scenario())


@pytest.mark.parametrize(
    ("window", "rounds"),
    [(1e-9, WARM_ROUNDS), (0.5, 2)],
    ids=["callers come back later than the window", "too few answered callers seen yet"],
)
def test_callers_not_known_to_come_back_in_time_are_not_waited_for(
    monkeypatch: pytest.MonkeyPatch, window: float, rounds: int
) -> None:
    """Independent callers (a gateway's connections carry whoever comes next) come back late or not at all, and
    a few that came back are no evidence: a request that finds the server idle goes at once, as before."""
    monkeypatch.setattr(joiner_module, "RETURN_WINDOW", window)

    async def scenario() -> None:
        async with joiner(Joining(most=4, at_once=2, max_body=1 << 20)) as (joined, stand_in):
            stand_in.gate.set()
            await closed_loop(joined, 4, rounds)
            stand_in.gate.clear()
            three = [post(joined, caller, connection=caller) for caller in range(3)]
            await asyncio.sleep(0)
            assert (joined.sending, joined.waiting) == (1, 2), "the first goes at once to an idle server"
            stand_in.gate.set()
            assert all(own(reply, c) for c, reply in enumerate(await asyncio.wait_for(asyncio.gather(*three), 5)))

    uvloop.run(scenario())


def test_a_lone_caller_in_a_closed_loop_waits_for_no_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(joiner_module, "RETURN_WINDOW", 0.5)

    async def scenario() -> None:
        async with joiner(Joining(most=4, at_once=2, max_body=1 << 20)) as (joined, stand_in):
            stand_in.gate.set()
            await closed_loop(joined, 1, EXPECTATIONS_KEPT + 4)
            stand_in.gate.clear()
            alone = post(joined, 0, connection=0)
            await stand_in.until_received(EXPECTATIONS_KEPT + 5)  # at once: it is the caller it would wait for
            stand_in.gate.set()
            assert own(await asyncio.wait_for(alone, 5), 0)

    uvloop.run(scenario())


def test_requests_are_told_what_is_left_of_their_callers_time_as_they_go_not_as_they_came() -> None:
    """A request held to be joined has less time left when it goes: each joined request says so (as Envoy says
    it), so esteira-kserve refuses at once what it could not answer in time; one without a deadline says nothing."""

    async def scenario() -> None:
        async with joiner(Joining(most=4, at_once=1, max_body=1 << 20)) as (joined, stand_in):
            due = time.perf_counter() + 5.0
            first = post(joined, 0, due=due)
            await stand_in.until_received(1)
            held = [post(joined, 1, due=due), post(joined, 2)]
            # time passes while they wait to be joined: 20 ms, of which the check below asks for 10 (uvloop's
            # timers run on a millisecond clock, so a sleep may end up to a millisecond early)
            await asyncio.sleep(0.02)
            stand_in.gate.set()
            await asyncio.wait_for(asyncio.gather(first, *held), 5)
            alone, held_one, without = stand_in.time_left
            assert alone is not None and held_one is not None and without is None
            assert 0 < int(held_one) <= int(alone) - 10 and int(alone) <= 5_000

    uvloop.run(scenario())

"""Callers' requests to TorchServe joined in one while its workers are busy: the pod's front and ``esteira up``'s
router send TorchServe, registered unbatched, fewer and fuller requests, and Esteira's handler answers each joined
request on its own (:mod:`model_handlers.joined`). ``esteira up``'s router joins what would queue at esteira-kserve
beyond two of its batches too (below).

Why: TorchServe spends about 850 us of its CPU on every HTTP request whatever it carries, and its own batching
still takes in, queues, hands over and answers each request alone; one request of eight iris instances cost it
what one of one does (``benchmarks/README.md``, "What TorchServe spends a request"). Joined here, eight callers'
requests cost it that once.

When: adaptively, as esteira-kserve's batcher batches. A request that finds fewer than ``at_once`` requests at
TorchServe goes at once, as it is (a lone caller waits for no one, and no fixed delay is paid); two a worker are
at TorchServe at once, one running and the next in its queue, so a worker never waits for the front between two.
Those that come while ``at_once`` are there wait here, and when one is answered the waiting go as one request:
up to ``most`` of them (the archive's batch size), within TorchServe's ``max_request_size`` joined, of one path.
Once requests go joined, the front stops filling TorchServe's queue with small ones: a request that comes goes
at once only to an idle TorchServe, and while TorchServe has one to run, only as many as fill a joined request
go to its queue; the rest join the next. Let through alone beside a joined request, 8 callers settled into
requests of 1, 1 and 6 and got 2,300 answers a second, against 2,700-2,800 in requests of 4; and callers that
give up, whose places in the front's admission come free one by one, made requests of 6.6 on average that left
a model of 20 ms a batch running 234-300 requests a second of its 400 (``benchmarks/README.md``).

Callers that each send their next request as soon as they are answered (a closed loop: a batch job's workers, a
client with a fixed number of threads) move in lock step with the joined requests: with 8 of them, two requests
of 4 took turns at TorchServe, one running while the other's callers waited, and never joined into one of 8. So
while answered callers have been coming back within ``RETURN_WINDOW`` (``RELIABLE_SHARE`` of the last
``EXPECTATIONS_KEPT``), the requests TorchServe has room for wait, up to the window from the oldest answer, for
the callers answered a moment ago, and go together once they are back. Requests from independent callers do not
come back so (a gateway's connections carry whoever arrives next: 33-65 % within the window here), so they never
wait for that. With 4 and 8 such callers the pod answered 1.4-1.6 times the requests a second, at 0.6-0.7 of the
CPU a request (``benchmarks/README.md``, "Requests joined before TorchServe").

A ModelDeployment may trade a caller's wait for TorchServe's CPU: with ``batching.maxBatchDelayMs`` set, a request
that TorchServe has room for waits up to that long, counted from the oldest waiting, for others to go with it
(``linger``), as TorchServe's own batch delay made requests wait. Left out, nothing waits: a request that finds
TorchServe idle goes alone and costs it a whole request, so a pod at a moderate rate spends more CPU than with a
delay (``benchmarks/README.md``, "Latency at a fixed offered load").

Before esteira-kserve (``Joining.for_batcher``; ``esteira up``'s router, on the server's Unix socket) the same
joiner serves another end. esteira-kserve's own batcher batches whatever queued while its last batch ran, and
costs a request far less than TorchServe (its HTTP stack about 55 us of CPU), so requests go one by one while
fewer than two batches' worth are at it, overlapping the router's work with the server's, and only those beyond
are joined; nobody waits for callers expected back. Joined with two requests at a time, as before TorchServe, 8
closed-loop callers went in lock step, one joined request at a time, and got 0.60-0.62 of the server's rate through
the router against 0.76 one by one; joined beyond two batches, 32 callers got 1.11-1.12 of the server's rate
through the router against 0.99-1.02 one by one, at 138 us of the two processes' CPU a request against 160
(``benchmarks/README.md``, "The router and the pod's front"). Joined oldest first, requests whose callers give up
were answered after their callers had left (3 answers a second in time against 335 before joining), so while
callers give up or say their deadlines the router holds what is past two batches in the caller queue's order
(:mod:`esteira.packaging.admission`), as before TorchServe, and nothing is joined then.

A request whose caller has a deadline (``due``: the router's) tells the server what is left of it as it goes,
after its wait here, not as it came, so esteira-kserve refuses at once, by the time its caller really has, what it
could not answer in time. A request whose caller leaves while it waits here goes nowhere and is counted as
abandoned; once sent, it is part of a request other callers wait for and runs. A joined request that TorchServe
refuses or fails to answer is answered so to each of its callers.
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from esteira.packaging.caller_queue import with_time_left
from esteira.packaging.upstream import Malformed, Reply, Upstream, UpstreamError
from model_handlers.joined import (
    JOINED_CONTENT_TYPE,
    JOINED_HEADER,
    FramingError,
    answer_of,
    framed,
    joined_count,
    request_entry,
    unframe,
)

logger = logging.getLogger(__name__)

A_WORKER = 2  # joined requests at TorchServe at once for each worker: one running, the next in its queue
RETURN_WINDOW = 0.001  # seconds: a caller answered this recently may be about to send its next request
EXPECTATIONS_KEPT = 64  # answered callers remembered, to judge whether callers come back within the window
RELIABLE_SHARE = 0.95  # of those, the share that came back in time before requests wait for the rest


@dataclass(frozen=True)
class Joining:
    """How requests are joined for one model server: ``most`` in one, ``at_once`` sent at once, the largest body
    it takes (TorchServe's ``max_request_size``), how long a request it has room for waits for others (``linger``,
    seconds; 0: not at all), and whether requests wait for callers expected straight back (``for_callers``)."""

    most: int
    at_once: int
    max_body: int
    linger: float = 0.0
    for_callers: bool = True

    @classmethod
    def for_model(cls, batch_size: int, workers: int, max_body: int, delay_ms: int | None = None) -> Joining | None:
        """Joining for a model TorchServe would batch by ``batch_size`` on ``workers``, waiting ``delay_ms`` for
        company where a ModelDeployment asks; None where it would not batch (requests then go one by one)."""
        if batch_size < 2:
            return None
        return cls(batch_size, A_WORKER * max(workers, 1), max_body, (delay_ms or 0) / 1e3)

    @classmethod
    def for_batcher(cls, batch_size: int, workers: int, max_body: int) -> Joining | None:
        """Joining for esteira-kserve, whose batcher batches ``batch_size`` on each of ``workers`` from what queued
        while the last batch ran: requests go one by one while fewer than two batches' worth are at it (one
        running, the next queued), so they overlap with the router's work, and only the rest are joined, saving
        its HTTP stack a request each; nobody waits for callers expected back, which would send callers in lock
        step, one joined request at a time. None where it does not batch."""
        if batch_size < 2:
            return None
        return cls(batch_size, A_WORKER * batch_size * max(workers, 1), max_body, for_callers=False)


@dataclass
class _Waiting:
    target: str
    body: bytes
    headers: Mapping[str, str]
    reply: asyncio.Future[Reply]
    arrived: float
    caller: object = None
    due: float | None = None  # when its caller gives up (time.perf_counter)
    sent: bool = False
    _piece: bytes | None = field(default=None, repr=False)

    def sent_headers(self, now: float | None = None) -> Mapping[str, str]:
        """Its headers as it goes on, saying what is left of its caller's time at ``now`` (else this moment)."""
        return with_time_left(self.headers, self.due, time.perf_counter() if now is None else now)

    def piece(self, now: float) -> bytes:
        """This request as it stands in a joined body (made once, as it is taken to be sent at ``now``: the
        requests of one joined request go at one moment, and say what is left as of it)."""
        if self._piece is None:
            self._piece = framed(request_entry(self.sent_headers(now), self.body))
        return self._piece

    def forget_piece(self) -> None:
        """Weighed for a joined request it did not fit in: its piece is made again when it goes, saying what is
        left of its caller's time then."""
        self._piece = None

    def settle(self, reply: Reply | UpstreamError) -> None:
        if self.reply.done():  # its caller left after it was sent
            return
        if isinstance(reply, UpstreamError):
            self.reply.set_exception(type(reply)(str(reply)))  # one exception each: raising one mutates it
        else:
            self.reply.set_result(reply)


class Joiner:
    """POSTs to one TorchServe through ``upstream``, joined as the module says."""

    def __init__(self, upstream: Upstream, joining: Joining) -> None:
        self.upstream = upstream
        self.joining = joining
        self.sending = 0  # requests at TorchServe now, joined or not
        self.abandoned = 0  # requests whose callers left while they waited here
        self._waiting: deque[_Waiting] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._joining_now = False  # the last requests taken from the queue went joined: see the module's docstring
        self._linger_timer: asyncio.Handle | None = None  # uvloop's call_at gives a plain Handle for a due time
        self._linger_until = 0.0
        self._answered: dict[object, float] = {}  # callers answered and not back yet: when (oldest first)
        self._came_back: deque[bool] = deque(maxlen=EXPECTATIONS_KEPT)  # whether each came back within the window
        self._in_time = 0  # how many of those did
        self._expect_timer: asyncio.Handle | None = None  # uvloop runs a delay under half a millisecond as call_soon
        self._expect_for = 0.0  # when the oldest caller the timer is set for was answered

    @property
    def waiting(self) -> int:
        """Requests waiting to be sent (callers that left included, until they are come to)."""
        return len(self._waiting)

    async def post(
        self, target: str, body: bytes, headers: Mapping[str, str], caller: object = None, due: float | None = None
    ) -> Reply:
        """The answer to one request, sent on its own or joined; UpstreamError as ``Upstream.request`` raises.
        ``caller`` (the connection it came on) tells a caller's next request from another's; None: unknown.
        ``due``, when its caller gives up (``time.perf_counter``): the server is told what is left of it as the
        request goes, after its wait here (:func:`esteira.packaging.caller_queue.with_time_left`)."""
        if caller is not None:
            self._back(caller)
        if (
            self.sending < self._alone_limit()
            and not self._waiting
            and not self.joining.linger
            and not self._awaiting_callers()
        ):
            self.sending += 1
            try:
                return await self.upstream.request(
                    "POST", target, body, with_time_left(headers, due, time.perf_counter())
                )
            finally:
                self._expect([caller])
                self._done()
        loop = asyncio.get_running_loop()
        waiting = _Waiting(target, body, headers, loop.create_future(), loop.time(), caller, due)
        self._waiting.append(waiting)
        self._send_waiting()
        try:
            return await waiting.reply
        except asyncio.CancelledError:
            if not waiting.sent:
                self.abandoned += 1
            raise

    def _done(self) -> None:
        self.sending -= 1
        self._send_waiting()

    def _alone_limit(self) -> int:
        """Requests at TorchServe below which a request that comes goes at once, alone or with the few waiting."""
        return 1 if self._joining_now else self.joining.at_once

    def _send_waiting(self) -> None:
        """What waits, joined, while TorchServe has room: any number below :meth:`_alone_limit`, else only as many
        as one request carries (fewer join the next, and TorchServe has the one it is running meanwhile)."""
        while self.sending < self.joining.at_once and self._waiting:
            if self.sending >= self._alone_limit() and len(self._waiting) < self.joining.most:
                return
            if self._lingering() or self._awaiting_callers():
                return
            taken = self._take()
            if not taken:
                return
            self.sending += 1
            task = asyncio.get_running_loop().create_task(self._send(taken))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _lingering(self) -> bool:
        """Whether the waiting, fewer than fill a request, still wait for company (``Joining.linger`` from the
        oldest's arrival); a timer sends them when that ends."""
        if not self.joining.linger or len(self._waiting) >= self.joining.most:
            return False
        loop = asyncio.get_running_loop()
        until = self._waiting[0].arrived + self.joining.linger
        if loop.time() >= until:
            return False
        if self._linger_timer is None or self._linger_until != until:
            if self._linger_timer is not None:
                self._linger_timer.cancel()
            self._linger_timer, self._linger_until = loop.call_at(until, self._linger_ended), until
        return True

    def _linger_ended(self) -> None:
        self._linger_timer = None
        self._send_waiting()

    def _back(self, caller: object) -> None:
        """A caller sends again: whether it came within the window of its last answer is kept."""
        answered = self._answered.pop(caller, None)
        if answered is not None:
            self._kept(time.perf_counter() - answered <= RETURN_WINDOW)

    def _kept(self, in_time: bool) -> None:
        if len(self._came_back) == EXPECTATIONS_KEPT:
            self._in_time -= self._came_back[0]
        self._came_back.append(in_time)
        self._in_time += in_time

    def _expect(self, callers: list[object]) -> None:
        """Callers about to be answered: each expected back within the window."""
        now = time.perf_counter()
        self._forget_late(now - RETURN_WINDOW)
        for caller in callers:
            if caller is not None:
                self._answered[caller] = now

    def _forget_late(self, answered_by: float) -> None:
        """Callers answered at or before ``answered_by`` did not come back in time (oldest first)."""
        answered = self._answered
        while answered:
            oldest = next(iter(answered))
            if answered[oldest] > answered_by:
                return
            del answered[oldest]
            self._kept(False)

    def _awaiting_callers(self) -> bool:
        """Whether the waiting, fewer than fill a request, wait for callers answered a moment ago: only while
        callers have been coming back within the window; a timer sends them once the window ends."""
        if not self.joining.for_callers or len(self._waiting) >= self.joining.most or not self._answered:
            return False
        now = time.perf_counter()
        self._forget_late(now - RETURN_WINDOW)
        if not self._answered or self._in_time < RELIABLE_SHARE * EXPECTATIONS_KEPT:
            return False
        if self._expect_timer is None:
            self._expect_for = next(iter(self._answered.values()))
            wait = self._expect_for + RETURN_WINDOW - now
            self._expect_timer = asyncio.get_running_loop().call_later(wait, self._expect_ended)
        return True

    def _expect_ended(self) -> None:
        """The window of the callers it was set for has ended, whatever the clock reads: they are late (uvloop
        runs a timer on its millisecond clock, or at once under half a millisecond, so the time may read early)."""
        self._expect_timer = None
        self._forget_late(self._expect_for)
        self._send_waiting()

    def _take(self) -> list[_Waiting]:
        """The oldest waiting request and those after it for the same path, as many as one request carries."""
        taken: list[_Waiting] = []
        kept: deque[_Waiting] = deque()
        size, now = 0, time.perf_counter()
        while self._waiting:
            waiting = self._waiting.popleft()
            if waiting.reply.done():  # its caller left
                continue
            if len(taken) == self.joining.most:
                kept.append(waiting)
                kept.extend(self._waiting)
                break
            if taken and waiting.target != taken[0].target:
                kept.append(waiting)
                continue
            piece = len(waiting.piece(now)) if taken or self._waiting else 0
            if taken and size + piece > self.joining.max_body:
                waiting.forget_piece()
                kept.append(waiting)
                continue
            taken.append(waiting)
            size += piece
        self._waiting = kept
        self._joining_now = len(taken) > 1
        for waiting in taken:
            waiting.sent = True
        return taken

    async def _send(self, taken: list[_Waiting]) -> None:
        """``taken`` as one request (a lone one as it is), and each its answer; the next waiting are sent before
        these answers are handed out, so TorchServe's worker does not wait for the front to answer callers."""
        try:
            answers = await self._exchange(taken)
        except UpstreamError as exc:
            answers = [exc] * len(taken)
        except Exception as exc:  # a fault of its own must not leave the callers waiting for ever: each gets a 502
            logger.exception("answering %d joined requests failed", len(taken))
            answers = [Malformed(f"the answer could not be read: {type(exc).__name__}")] * len(taken)
        finally:
            self._expect([waiting.caller for waiting in taken if not waiting.reply.done()])
            self._done()
        for waiting, answer in zip(taken, answers, strict=True):
            waiting.settle(answer)

    async def _exchange(self, taken: list[_Waiting]) -> list[Reply | UpstreamError]:
        if len(taken) == 1:
            only = taken[0]
            return [await self.upstream.request("POST", only.target, only.body, only.sent_headers())]
        now = time.perf_counter()  # the pieces weighed when taken are made already, at that one moment
        body = b"".join(waiting.piece(now) for waiting in taken)
        headers = {"content-type": JOINED_CONTENT_TYPE, JOINED_HEADER: str(len(taken))}
        return _answers(await self.upstream.request("POST", taken[0].target, body, headers), len(taken))

    def close(self) -> None:
        for timer in (self._linger_timer, self._expect_timer):
            if timer is not None:
                timer.cancel()
        for task in self._tasks:
            task.cancel()


def _answers(reply: Reply, count: int) -> list[Reply | UpstreamError]:
    """Each joined request's answer: its own from a joined answer, else TorchServe's for all."""
    try:
        said = joined_count(reply.headers) if reply.status == 200 else None
        if said is None:
            if reply.status == 200:
                raise FramingError("the model server answered requests joined in one with one answer")
            return [reply] * count
        if said != count:
            raise FramingError(f"the model server answered {said} of {count} requests joined in one")
        answers: list[Reply | UpstreamError] = []
        for entry in unframe(reply.body, count):
            status, headers, body = answer_of(entry)
            answers.append(Reply(status, _phrase(status), headers, body))
        return answers
    except FramingError as exc:
        return [Malformed(str(exc))] * count


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""

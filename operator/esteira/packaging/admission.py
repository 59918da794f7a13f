"""How many inference requests the pod's front lets through to TorchServe at once; the rest wait in the front
(``esteira up``'s router holds requests to a TorchServe revision the same way, and to an esteira-kserve one whose
requests it joins, :mod:`esteira.packaging.joiner`).

Why: TorchServe runs its queue oldest first, runs a request whose caller has gone, and refuses with a 503 once
``job_queue_size`` (100) wait. Past its model's capacity, with callers that give up, the request it runs is the
one whose caller is about to leave, and almost nothing is answered in time (``benchmarks/README.md``). The
front cannot reach into TorchServe's queue, but it can keep that queue short and hold the rest itself: at most
``limit`` requests are at TorchServe at once (the entrypoint asks for two batches a worker, one running and
one filling, so TorchServe's batches stay full), and those waiting in the front are taken in a
:class:`~esteira.packaging.caller_queue.CallerQueue`'s order: oldest first, newest first while callers are
giving up. A request whose caller leaves while it waits here is dropped (the HTTP server cancels it) and goes
nowhere; one whose proxy said how long it waits is refused with :class:`TooLate` where the fastest of the
recent requests at TorchServe would still end after that.

The limit holds only while it is needed: while callers are giving up (one left, waiting here or at TorchServe,
within ``LEAVING_WINDOW_SECONDS``) or say how long they wait (a deadline came within as long). Otherwise every
request goes straight on, as it went before, and TorchServe's queue takes them: holding patient callers' requests
in the front cost its Python a wake-up and a hand-over each, a twentieth of its rate at 32 callers
(``benchmarks/README.md``), for nothing. Below the limit a request goes straight on as well: a counter.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from esteira.packaging.caller_queue import LEAVING_WINDOW_SECONDS, CallerQueue

Sent = TypeVar("Sent")
RECENT = 16  # requests at TorchServe whose times are remembered: the fastest says how long the next will take
BATCHES_A_WORKER = 2  # at TorchServe at once: one batch running and the next filling, for each worker


def at_once(batches_and_workers: Sequence[tuple[int, int]]) -> int | None:
    """How many requests go through to TorchServe at once, for its models' batch sizes and workers; None where
    it serves none."""
    return sum(BATCHES_A_WORKER * batch * workers for batch, workers in batches_and_workers) or None


class TooLate(Exception):
    """The request would be answered after its caller's deadline, so it is not sent."""


class Admission:
    """At most ``limit`` requests through at once; :meth:`enter` before sending one, :meth:`leave` after."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the limit of requests at once must be at least 1, got {limit}")
        self.limit = limit
        self.through = 0  # requests entered and not yet left
        self.abandoned = 0  # requests whose callers left while they waited here
        self.late = 0  # requests refused as too late
        self._waiting: CallerQueue[tuple[asyncio.Future[None], float | None]] = CallerQueue()
        self._recent: deque[float] = deque(maxlen=RECENT)
        self._last_deadline = -LEAVING_WINDOW_SECONDS  # when a request last said its deadline

    @property
    def waiting(self) -> int:
        """Requests waiting to go through (callers that left included, until they are come to)."""
        return len(self._waiting)

    async def enter(self, deadline: float | None = None) -> None:
        """Returns once the request may go through; raises :class:`TooLate` where it would be answered after
        ``deadline`` (``time.perf_counter``). A caller cancelled while waiting leaves nothing behind."""
        now = time.perf_counter()
        if deadline is not None:
            self._last_deadline = now
        if not self._waiting and (self.through < self.limit or not self.holding(now)):
            self.through += 1
            return
        if deadline is not None and self._ends(now) > deadline:
            self.late += 1
            raise TooLate
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.put((turn, deadline), now)
        try:
            await turn
        except asyncio.CancelledError:  # its caller left (the wait for its turn is cancelled with it)
            if turn.cancelled() or not turn.done():
                turn.cancel()
                self.abandoned += 1
                left = time.perf_counter()
                self._waiting.left(left - now, left)
            elif turn.exception() is None:
                self.leave()  # let through as its caller left: the place goes to the next
            raise

    async def send(
        self,
        deadline: float | None,
        began: float,
        request: Callable[[], Awaitable[Sent]],
        answered: Callable[[Sent], bool],
    ) -> Sent:
        """``request()`` once let through, and the place given up after it; raises :class:`TooLate` where refused.
        The time of an ``answered`` request (a prediction) says how long the next will take; a caller that leaves
        meanwhile (its wait counted from ``began``), that callers are giving up."""
        await self.enter(deadline)
        sent, seconds = time.perf_counter(), None
        try:
            result = await request()
            if answered(result):
                seconds = time.perf_counter() - sent
            return result
        except asyncio.CancelledError:
            self.left_after(time.perf_counter() - began)
            raise
        finally:
            self.leave(seconds)

    def holding(self, now: float) -> bool:
        """Whether the limit holds: callers are giving up, or saying how long they wait (see the module's
        docstring)."""
        return self._waiting.leaving(now) or now - self._last_deadline < LEAVING_WINDOW_SECONDS

    def left_after(self, waited: float) -> None:
        """The caller of a request that went through left after waiting ``waited`` seconds in all."""
        now = time.perf_counter()
        self._waiting.left(waited, now)

    def leave(self, seconds: float | None = None) -> None:
        """A request that went through is done, after ``seconds`` there where it was answered."""
        if seconds is not None:
            self._recent.append(seconds)
        self.through -= 1
        if self._waiting:
            self._let_through()

    def _let_through(self) -> None:
        now = time.perf_counter()
        ends = self._ends(now)

        def wanted(entry: tuple[asyncio.Future[None], float | None], queued: float) -> bool:
            turn, deadline = entry
            if turn.done():  # its caller left
                return False
            if deadline is not None and ends > deadline:
                self.late += 1
                turn.set_exception(TooLate())
                return False
            return True

        while self._waiting:
            room = self.limit - self.through if self.holding(now) else len(self._waiting)
            if room <= 0:
                return
            taken = self._waiting.take(room, now, wanted)
            if not taken:
                return
            for turn, _ in taken:
                turn.set_result(None)
                self.through += 1

    def _ends(self, now: float) -> float:
        """When a request sent now is expected to be answered."""
        return now + (min(self._recent) if self._recent else 0.0)

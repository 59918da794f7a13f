"""The order in which a model server takes requests that wait: oldest first, or newest first while callers are
giving up.

Why: past its capacity a server's queue grows until every request waits about as long as its caller will.
Oldest first, the request taken then is the one whose caller is about to leave, and its answer mostly comes too
late: callers that gave up at 100 ms without saying so got 18 answers a second in time from a model that ran
365 (``benchmarks/README.md``). Newest first, a request runs while its caller still waits, as Facebook's adaptive
LIFO serves under a standing queue. So while a caller has left within the last ``LEAVING_WINDOW_SECONDS``, the
newest are taken first; what is left at the back is mostly gone by the time it would be taken, and is dropped
as it is found. A request there that has waited longer than the callers who left waited (the median of the last
``WAITS_BEFORE_LEAVING``, each from its arrival to its caller's leaving) has a patient caller: it is taken ahead
of the newest, so patient callers wait about that long and are not starved. Callers that wait however long
leave nobody gone behind them and are taken oldest first.

The queue only orders: which of its items are still wanted (their callers there, their deadlines not passed) is
the caller of :meth:`CallerQueue.take`'s to say, and telling it when a caller left is the server's
(:meth:`CallerQueue.left`). esteira-kserve's batcher takes its batches from one
(:mod:`model_handlers.batcher`), the pod's front before TorchServe its requests for TorchServe.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

from esteira.vocabulary import EXPECTED_TIMEOUT_HEADER

Item = TypeVar("Item")
LEAVING_WINDOW_SECONDS = 1.0  # newest first while a caller has left within this long
WAITS_BEFORE_LEAVING = 32  # how many of the recent callers' waits before they left make the median
MAX_TIMEOUT_DIGITS = 12  # 31 years in milliseconds: a longer wait says nothing a client could mean


class CallerQueue(Generic[Item]):
    """Items waiting, each with when it was queued (``time.perf_counter``), in arrival order."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Item, float]] = []
        self._waits_before_leaving: deque[float] = deque(maxlen=WAITS_BEFORE_LEAVING)
        self._last_left = -LEAVING_WINDOW_SECONDS  # when a caller last left
        self.newest_first = 0  # takes made newest first, callers giving up

    def __len__(self) -> int:
        return len(self._waiting)

    def put(self, item: Item, now: float) -> None:
        self._waiting.append((item, now))

    def put_first(self, item: Item, now: float) -> None:
        """An item that came before every one waiting (it was read in the same turn and went ahead of them)."""
        self._waiting.insert(0, (item, now))

    def left(self, waited: float, now: float) -> None:
        """A waiting item's caller left after waiting ``waited`` seconds; seen at ``now``."""
        self._waits_before_leaving.append(waited)
        self._last_left = now

    def leaving(self, now: float) -> bool:
        """Whether callers are giving up: one has left within ``LEAVING_WINDOW_SECONDS``."""
        return now - self._last_left < LEAVING_WINDOW_SECONDS

    def take(self, count: int, now: float, wanted: Callable[[Item, float], bool]) -> list[Item]:
        """Up to ``count`` items still ``wanted`` (asked of each item considered, with when it was queued; one
        it is not is dropped), oldest first, or newest first while callers are giving up (see the module's
        docstring)."""
        waiting = self._waiting
        taken: list[Item] = []
        leaving = self.leaving(now)
        patient_after = statistics.median(self._waits_before_leaving) if leaving else 0.0
        front = 0  # from the front: everything, oldest first; newest first, the unwanted and the patient
        while front < len(waiting) and len(taken) < count:
            item, queued = waiting[front]
            if wanted(item, queued):
                if now - queued < patient_after:  # it has not waited as long as those who left
                    break
                taken.append(item)
            front += 1
        back = len(waiting)
        if leaving:
            self.newest_first += 1
            while back > front and len(taken) < count:
                back -= 1
                item, queued = waiting[back]
                if wanted(item, queued):
                    taken.append(item)
        self._waiting = waiting[front:back]
        return taken

    def clear(self) -> list[Item]:
        """Every item waiting, oldest first; the queue is left empty."""
        items, self._waiting = [item for item, _ in self._waiting], []
        return items


def deadline(arrived: float, headers: Mapping[str, str]) -> float | None:
    """When the caller gives up, where the proxy in front said how long it waits (``EXPECTED_TIMEOUT_HEADER``, a
    positive whole number of milliseconds in ASCII digits, at most ``MAX_TIMEOUT_DIGITS`` of them; anything else
    says nothing). ``str.isdigit`` alone let through what ``int`` refuses (a header's ``²``, read as Latin-1, and
    more digits than Python converts), and the request failed with a server error."""
    waits = headers.get(EXPECTED_TIMEOUT_HEADER, "")
    if not (waits.isascii() and waits.isdigit() and len(waits) <= MAX_TIMEOUT_DIGITS):
        return None
    milliseconds = int(waits)
    return arrived + milliseconds / 1000 if milliseconds > 0 else None


def with_time_left(headers: Mapping[str, str], due: float | None, now: float) -> Mapping[str, str]:
    """``headers`` saying what is left at ``now`` of a caller's ``due`` time (both ``time.perf_counter``), as Envoy
    says it to the server behind it (``EXPECTED_TIMEOUT_HEADER``, whole milliseconds, at least 1); as they are
    without one. Said as a request goes on, not as it came: a request held on the way has less left."""
    if due is None:
        return headers
    return {**headers, EXPECTED_TIMEOUT_HEADER: str(max(1, math.ceil(1000 * (due - now))))}

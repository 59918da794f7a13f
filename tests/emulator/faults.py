"""Runtime fault injection: server errors, conflicts, dropped or expired watch streams, slow answers and
writes held until a test lets them fail.

Selection rule: a fault is only ever injected into a request whose ``User-Agent`` starts with one of
``FaultPlan.agents``: by default ``kopf/`` (Kopf's own HTTP client) and ``esteira-operator/`` (the
agent the operator's ``kubernetes`` client should announce). Requests made by tests and test helpers
(``esteira-tests``, ``fake-kserve``, or the ``kubernetes`` client's default ``OpenAPI-Generator/...``)
are never faulted, so setup and assertions stay deterministic. Each targeted request draws from one seeded RNG, so a run
with the same seed and the same request order injects the same faults.

Conflicts are only injected where a real server could answer one: a write that carries a precondition
(a PUT or merge patch with ``metadata.resourceVersion``, a JSON patch with a ``test`` operation, a DELETE
with ``preconditions``). A JSON patch then gets 422 (how a failed ``test`` answers), the others 409.
The object is first given a new resourceVersion (a MODIFIED event, as from a concurrent writer), so the
conflict is true: a client that re-reads and retries succeeds, and a watcher gets an event to retry on.
Kopf's own merge patches carry no resourceVersion, can never conflict on a real cluster, and so are left
alone; ``conflict_any_write=True`` lifts that limit to answer any write with 409.

An expired watch (``gone_watch_rate``) ends, after ``drop_watch_after`` seconds, with the in-stream
``ERROR`` event carrying a 410 Gone Status, as kube-apiserver ends a watch whose resourceVersion has left
its cache: the client must list again and start a new watch from the list's resourceVersion.

A held write (:meth:`FaultInjector.hold`) is parked before anything is applied, so a test can kill its
client there: the crash happens after the client decided and before the server stored anything.
Released, it fails with 500 and is never applied.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

FaultKind = Literal["error", "conflict", "drop_watch", "gone_watch", "slow", "held"]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject and how often; every rate is a probability in [0, 1]."""

    error_rate: float = 0.0  # answer HTTP 500 (a Status object) instead of serving the request
    conflict_rate: float = 0.0  # answer preconditioned writes as stale (409, or 422 for a JSON-patch test)
    conflict_any_write: bool = False  # let conflicts hit every write, preconditioned or not
    drop_watch_rate: float = 0.0  # close a watch stream early ...
    drop_watch_after: float = 0.2  # ... this many seconds after it starts
    gone_watch_rate: float = 0.0  # end a watch stream that long after it starts with an ERROR 410 Gone event
    slow_rate: float = 0.0  # delay a response ...
    delay: float = 0.0  # ... by this many seconds
    seed: int = 0
    agents: tuple[str, ...] = ("kopf/", "esteira-operator/")

    def __post_init__(self) -> None:
        for field in ("error_rate", "conflict_rate", "drop_watch_rate", "gone_watch_rate", "slow_rate"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"{field} must be within [0, 1]")

    @property
    def active(self) -> bool:
        return any(
            (
                self.error_rate,
                self.conflict_rate,
                self.drop_watch_rate,
                self.gone_watch_rate,
                self.slow_rate and self.delay,
            )
        )


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request; the default decision does nothing."""

    delay: float = 0.0
    error: bool = False
    conflict: bool = False
    drop_watch_after: float | None = None
    gone_watch: bool = False  # the stream ends with ERROR 410 Gone (after `drop_watch_after`)


# (method, path, parsed body: a dict, a list for a JSON patch, or None) -> whether to hold the write
WriteMatcher = Callable[[str, str, Any], bool]


class HeldWrite:
    """A write parked before it is applied; `arrived` is set once one matching request is waiting."""

    def __init__(self, matches: WriteMatcher) -> None:
        self.matches = matches
        self.arrived = threading.Event()
        self.released = threading.Event()
        self.request: tuple[str, str, Any] | None = None

    def release(self) -> None:
        """Answer the parked request (and any later one) with 500; it is never applied."""
        self.released.set()


class FaultInjector:
    """Draws decisions for requests and counts what it injected, so tests can assert faults happened."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self._lock = threading.Lock()
        self.injected: collections.Counter[FaultKind] = collections.Counter()
        self.plan = plan or FaultPlan()
        self._holds: list[HeldWrite] = []

    @property
    def plan(self) -> FaultPlan:
        return self._plan

    @plan.setter
    def plan(self, plan: FaultPlan) -> None:
        with self._lock:
            self._plan = plan
            self._rng = random.Random(plan.seed)

    def update(self, **changes: Any) -> FaultPlan:
        """Replace some fields of the current plan (and reseed); return the new plan."""
        self.plan = dataclasses.replace(self.plan, **changes)
        return self.plan

    def clear(self) -> None:
        """Stop injecting faults and release held writes; the counters are kept."""
        self.plan = FaultPlan()
        with self._lock:
            holds, self._holds = self._holds, []
        for held in holds:
            held.release()

    def hold(self, matches: WriteMatcher) -> HeldWrite:
        """Park the first write (of a targeted agent) that `matches`, until released; later ones pass."""
        held = HeldWrite(matches)
        with self._lock:
            self._holds.append(held)
        return held

    def held_write(self, *, user_agent: str, method: str, path: str, body: Any) -> HeldWrite | None:
        """The hold that parks this request, if any (each hold takes one request)."""
        if method not in WRITE_METHODS:
            return None
        with self._lock:
            if not user_agent.startswith(self._plan.agents):
                return None
            for held in self._holds:
                if held.request is None and held.matches(method, path, body):
                    held.request = (method, path, body)
                    self.injected["held"] += 1
                    return held
        return None

    def decide(self, *, user_agent: str, method: str, watch: bool, preconditioned: bool = False) -> FaultDecision:
        """Draw the faults for one request (no draw at all for requests that are not targeted)."""
        with self._lock:
            plan = self._plan
            if not plan.active or not user_agent.startswith(plan.agents):
                return FaultDecision()
            delay = plan.delay if plan.delay and self._rng.random() < plan.slow_rate else 0.0
            error = self._rng.random() < plan.error_rate
            eligible = method in WRITE_METHODS and (preconditioned or plan.conflict_any_write)
            conflict = not error and eligible and self._rng.random() < plan.conflict_rate
            drop = watch and not error and self._rng.random() < plan.drop_watch_rate
            gone = watch and not error and not drop and self._rng.random() < plan.gone_watch_rate
            ends = plan.drop_watch_after if drop or gone else None
            decision = FaultDecision(delay, error, conflict, ends, gone)
            drawn: list[tuple[FaultKind, bool]] = [
                ("slow", bool(delay)),
                ("error", error),
                ("conflict", conflict),
                ("drop_watch", drop),
                ("gone_watch", gone),
            ]
            self.injected.update(kind for kind, happened in drawn if happened)
            return decision

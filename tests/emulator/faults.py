"""Runtime fault injection: server errors, conflicts, dropped watch streams and slow answers.

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
"""

from __future__ import annotations

import collections
import dataclasses
import random
import threading
from dataclasses import dataclass
from typing import Any, Literal

FaultKind = Literal["error", "conflict", "drop_watch", "slow"]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject and how often; every rate is a probability in [0, 1]."""

    error_rate: float = 0.0  # answer HTTP 500 (a Status object) instead of serving the request
    conflict_rate: float = 0.0  # answer preconditioned writes as stale (409, or 422 for a JSON-patch test)
    conflict_any_write: bool = False  # let conflicts hit every write, preconditioned or not
    drop_watch_rate: float = 0.0  # close a watch stream early ...
    drop_watch_after: float = 0.2  # ... this many seconds after it starts
    slow_rate: float = 0.0  # delay a response ...
    delay: float = 0.0  # ... by this many seconds
    seed: int = 0
    agents: tuple[str, ...] = ("kopf/", "esteira-operator/")

    def __post_init__(self) -> None:
        for field in ("error_rate", "conflict_rate", "drop_watch_rate", "slow_rate"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"{field} must be within [0, 1]")

    @property
    def active(self) -> bool:
        return any((self.error_rate, self.conflict_rate, self.drop_watch_rate, self.slow_rate and self.delay))


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request; the default decision does nothing."""

    delay: float = 0.0
    error: bool = False
    conflict: bool = False
    drop_watch_after: float | None = None


class FaultInjector:
    """Draws decisions for requests and counts what it injected, so tests can assert faults happened."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self._lock = threading.Lock()
        self.injected: collections.Counter[FaultKind] = collections.Counter()
        self.plan = plan or FaultPlan()

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
        """Stop injecting faults; the counters are kept."""
        self.plan = FaultPlan()

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
            decision = FaultDecision(delay, error, conflict, plan.drop_watch_after if drop else None)
            drawn: list[tuple[FaultKind, bool]] = [
                ("slow", bool(delay)),
                ("error", error),
                ("conflict", conflict),
                ("drop_watch", drop),
            ]
            self.injected.update(kind for kind, happened in drawn if happened)
            return decision

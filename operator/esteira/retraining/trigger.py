"""When to retrain: one trigger per incident, at most one run at a time, never more often than allowed.

Signals come from monitoring (a drift or data-quality incident), from labelled feedback (accuracy below a
floor over a window) or from the clock (a schedule). Each carries its evidence, which travels with the
trigger to whatever runs the retraining, so the run knows why it was started and what data to read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from esteira.vocabulary import parse_duration, parse_time

SignalKind = Literal["Drift", "DataQuality", "Accuracy", "Schedule"]


@dataclass(frozen=True)
class Signal:
    """A reason to retrain. `incident` names one occurrence (its start time, say): the same incident seen
    on every reconcile triggers once."""

    kind: SignalKind
    incident: str
    summary: str
    evidence: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """What the spec allows: which signals count, how often, and whether a run may start while one runs."""

    kinds: frozenset[SignalKind]
    min_interval: str
    schedule: str | None = None  # a duration: retrain at least this often


@dataclass(frozen=True)
class History:
    """What status remembers: incidents already acted on, the last trigger, and the run in progress."""

    handled: frozenset[str] = frozenset()
    last_triggered_at: str | None = None
    running: str | None = None  # the run (Job name, command id) still going


@dataclass(frozen=True)
class Verdict:
    """Fire a trigger for `signal`, or say why not (shown in status, never an Event storm)."""

    fire: bool
    signal: Signal | None
    reason: str


def schedule_signal(policy: Policy, history: History, now: datetime) -> Signal | None:
    """The clock's signal once the schedule's period has passed since the last trigger (or at once if none)."""
    if policy.schedule is None:
        return None
    period = parse_duration(policy.schedule)
    if history.last_triggered_at is not None and now - parse_time(history.last_triggered_at) < period:
        return None
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Signal("Schedule", f"schedule-{stamp}", f"scheduled every {policy.schedule}")


def decide(policy: Policy, history: History, signals: list[Signal], now: datetime) -> Verdict:
    """Pick the first new signal the policy counts, unless a run is going or the last trigger is too recent."""
    candidates = [s for s in signals if s.kind in policy.kinds and s.incident not in history.handled]
    scheduled = schedule_signal(policy, history, now)
    if scheduled is not None:
        candidates.append(scheduled)
    if not candidates:
        return Verdict(False, None, "no new incident")
    first = candidates[0]
    if history.running is not None:
        return Verdict(False, first, f"retraining {history.running} is still running")
    if history.last_triggered_at is not None:
        elapsed = now - parse_time(history.last_triggered_at)
        if elapsed < parse_duration(policy.min_interval):
            return Verdict(
                False,
                first,
                f"last retraining started {int(elapsed.total_seconds())}s ago, minInterval is {policy.min_interval}",
            )
    return Verdict(True, first, first.summary)

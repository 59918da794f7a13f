"""Per-revision request counters and latency histograms kept by the router, and their Prometheus text."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from esteira.packaging.exposition import bucket_of, histogram_lines
from esteira.vocabulary import LATENCY_TOP_SECONDS
from model_handlers.metrics import ABANDONED_REQUESTS, ABANDONED_REQUESTS_HELP

# Prometheus client's default buckets, as TorchServe's handler histograms use.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, LATENCY_TOP_SECONDS)
OUTCOMES = ("ok", "client_error", "server_error")


def outcome_of(status: int) -> str:
    """Only server errors count against a revision; bad input is the caller's."""
    if status < 400:
        return "ok"
    return "client_error" if status < 500 else "server_error"


@dataclass(frozen=True)
class Counters:
    """Cumulative totals of one arm at one moment: requests by outcome, latency histogram (per bucket)."""

    outcomes: dict[str, float] = field(default_factory=dict)
    buckets: tuple[float, ...] = (0.0,) * (len(BUCKETS) + 1)  # last is +Inf; not cumulative
    classes: dict[str, float] = field(default_factory=dict)
    launch: int = 0  # the model server process the classes were counted by (its launch number)

    @property
    def requests(self) -> float:
        return sum(self.outcomes.values())


@dataclass(slots=True)
class ArmStats:
    """Mutable counters for one revision (the router's event loop is the only writer)."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    duration_sum: float = 0.0
    mirrored: int = 0

    def observe(self, status: int, seconds: float, mirrored: bool = False) -> None:
        self.outcomes[outcome_of(status)] += 1
        self.buckets[bucket_of(BUCKETS, seconds)] += 1
        self.duration_sum += seconds
        self.mirrored += int(mirrored)

    def counters(self) -> Counters:
        return Counters(
            outcomes={k: float(v) for k, v in self.outcomes.items()}, buckets=tuple(map(float, self.buckets))
        )


def exposition(model: str, arms: dict[int, ArmStats], abandoned: Mapping[int, int]) -> str:
    """Prometheus text for the router's counters, labelled like the handlers' series; ``abandoned``, the requests
    the router held for a revision whose callers left before they were sent (they went nowhere)."""
    lines = [
        "# HELP esteira_router_requests_total Requests the local router sent to each revision, by outcome.",
        "# TYPE esteira_router_requests_total counter",
    ]
    for revision, arm in sorted(arms.items()):
        for outcome, count in arm.outcomes.items():
            labels = f'ModelName="{model}",Revision="{revision}",outcome="{outcome}"'
            lines.append(f"esteira_router_requests_total{{{labels}}} {count}")
    lines += [
        "# HELP esteira_router_mirrored_total Copies of stable's requests sent to the canary.",
        "# TYPE esteira_router_mirrored_total counter",
    ]
    lines += [
        f'esteira_router_mirrored_total{{ModelName="{model}",Revision="{r}"}} {a.mirrored}' for r, a in arms.items()
    ]
    lines += [
        "# HELP esteira_router_request_duration_seconds Time from the router to the model server and back.",
        "# TYPE esteira_router_request_duration_seconds histogram",
    ]
    for revision, arm in sorted(arms.items()):
        labels = f'ModelName="{model}",Revision="{revision}"'
        lines += histogram_lines(
            "esteira_router_request_duration_seconds", labels, BUCKETS, arm.buckets, arm.duration_sum
        )
    name = f"{ABANDONED_REQUESTS}_total"
    lines += [f"# HELP {name} {ABANDONED_REQUESTS_HELP}", f"# TYPE {name} counter"]
    lines += [f'{name}{{ModelName="{model}",Revision="{r}"}} {abandoned.get(r, 0)}' for r in sorted(arms)]
    return "\n".join(lines) + "\n"

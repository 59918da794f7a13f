"""Whether a retrained candidate may roll out: its validation score against stable's, with a margin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher", "lower"]  # accuracy-like scores are better higher, error-like ones lower


@dataclass(frozen=True)
class Candidate:
    version: str
    metric: str
    score: float


@dataclass(frozen=True)
class GateVerdict:
    proposed: bool
    reason: str


def judge_candidate(
    candidate: Candidate, stable_score: float | None, margin: float, better: Direction = "higher", basis: str = ""
) -> GateVerdict:
    """Propose the candidate when it is at least as good as stable (within `margin`); say both scores, and where
    stable's was measured (`basis`), either way.

    Without a stable score (a first model, or a card without one) there is nothing to beat: propose it and
    let the canary's own checks judge it on traffic.
    """
    if stable_score is None:
        return GateVerdict(True, f"{candidate.metric} {candidate.score:g}: no stable score to compare with")
    ok = candidate.score >= stable_score - margin if better == "higher" else candidate.score <= stable_score + margin
    relation = "at least as good as" if ok else "worse than"
    reason = (
        f"{candidate.metric} {candidate.score:g} is {relation} stable's {stable_score:g}{basis and ' ' + basis} "
        f"(margin {margin:g}, {better} is better)"
    )
    return GateVerdict(ok, reason)

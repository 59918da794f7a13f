"""One rollout step, the only place a canary's fate is decided: what the operator and `esteira up` both run.

Input: the spec, the status, the time, what the backend reports for the canary, the evidence (or why
there is none) and a person's command. Output: the new status, the decisions worth an Event, when to
run again, and the traffic plan the router must serve. The order inside is fixed: a command's effect
on revisions (retry, rollback to a revision), then revision tracking (a new build becomes a canary or
stable), then the engine (readiness, the router's weight, analysis, steps, promotion or rollback).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from esteira.api.status import ModelDeploymentStatus
from esteira.render.traffic import TrafficPlan
from esteira.rollout.engine import advance
from esteira.rollout.inputs import RolloutInput
from esteira.rollout.revisions import track_revisions, traffic_plan
from esteira.vocabulary import Command, Decision, format_time


@dataclass
class RolloutOutput:
    status: ModelDeploymentStatus
    plan: TrafficPlan
    decisions: list[Decision] = field(default_factory=list)
    requeue_after: float | None = None  # seconds until the step wants to run again


def command_effects(command: Command | None, status: ModelDeploymentStatus) -> tuple[bool, int | None]:
    """(retry, rollback_to) asked by a command not carried out yet; the engine records its id."""
    if command is None or status.carried_out(command.id):
        return False, None
    return command.action == "retry", command.revision if command.action == "rollback" else None


def rollout_step(inp: RolloutInput) -> RolloutOutput:
    """Decide where the rollout goes now; pure, so running it twice on the same input gives the same answer."""
    retry, rollback_to = command_effects(inp.command, inp.status)
    change = track_revisions(inp.spec, inp.status, format_time(inp.now), retry=retry, rollback_to=rollback_to)
    status, decisions, requeue_after = change.status, list(change.decisions), None
    if status.canary is not None or inp.command is not None:
        engine = advance(inp, status)
        status, requeue_after = engine.status, engine.requeue_after
        decisions += engine.decisions
    return RolloutOutput(status, traffic_plan(status), decisions, requeue_after)

"""What a RolloutCommand's record says it came to."""

from __future__ import annotations

from esteira.controller.reconciler import command_outcome
from esteira.state.reconcile import ReconcilePlan
from esteira.vocabulary import Command, Decision

PROMOTE = Command("uid-1", "promote")


def test_a_command_on_a_model_deployment_whose_invalid_spec_was_already_reported_says_why_it_was_not_carried_out() -> (
    None
):
    """The plan says nothing new (the spec was reported invalid before): 'promote carried out' was its record."""
    ready = {"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": "spec.model.version: required"}
    plan = ReconcilePlan("invalid", {"phase": "Invalid", "conditions": [ready]}, False)
    assert command_outcome(plan, PROMOTE) == ("Ignored", "promote not carried out: spec.model.version: required")


def test_a_command_carried_out_says_so_or_what_it_did() -> None:
    done = ReconcilePlan("updated", {"lastCommand": "uid-1"}, True)
    assert command_outcome(done, PROMOTE) == ("Done", "promote carried out")
    done.decisions.append(Decision("Promoted", "Revision 2 promoted"))
    assert command_outcome(done, PROMOTE) == ("Done", "Revision 2 promoted")

"""The RolloutCommand requester policy: `spec.requestedBy` must be the creator's user name."""

from __future__ import annotations

from typing import Any

import celpy
import pytest

from tests.chart.helm import render


def evaluate(expression: str, requested_by: str, username: str) -> Any:
    environment = celpy.Environment()
    program = environment.program(environment.compile(expression))
    activation = {
        "object": celpy.json_to_cel({"spec": {"requestedBy": requested_by}}),
        "request": celpy.json_to_cel({"userInfo": {"username": username}}),
    }
    return program.evaluate(activation)


def test_policy_checks_the_requester_on_create() -> None:
    rendered = render({})
    policy = rendered.one("ValidatingAdmissionPolicy")
    binding = rendered.one("ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert (rule["apiGroups"], rule["resources"], rule["operations"]) == (
        ["serving.esteira.io"],
        ["rolloutcommands"],
        ["CREATE"],
    )
    assert policy["spec"]["failurePolicy"] == "Fail"
    (validation,) = policy["spec"]["validations"]
    assert evaluate(validation["expression"], "alice", "alice") is True or evaluate(
        validation["expression"], "alice", "alice"
    ) == celpy.celtypes.BoolType(True)
    assert not evaluate(validation["expression"], "alice", "mallory")
    assert "mallory" in str(evaluate(validation["messageExpression"], "alice", "mallory"))


@pytest.mark.parametrize("enabled", [True, False])
def test_policy_can_be_left_out(enabled: bool) -> None:
    kinds = render({"rolloutCommands": {"requesterPolicy": enabled}}).kinds()
    assert ("ValidatingAdmissionPolicy" in kinds) is enabled
    assert ("ValidatingAdmissionPolicyBinding" in kinds) is enabled

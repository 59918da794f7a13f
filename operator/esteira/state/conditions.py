"""Kubernetes-style conditions whose lastTransitionTime moves only when the status value changes."""

from __future__ import annotations

from esteira.api.status import CONDITION_MESSAGE_LIMIT, Condition, ConditionType, ModelDeploymentStatus


def set_condition(
    status: ModelDeploymentStatus,
    type_: ConditionType,
    value: bool | None,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> None:
    """Insert or update one condition in place (status objects are working copies). A message past the
    condition's limit (a model server's traceback in KServe's status) is cut, not refused: refused, the status
    was never written again."""
    text = "Unknown" if value is None else ("True" if value else "False")
    if len(message) > CONDITION_MESSAGE_LIMIT:
        message = message[: CONDITION_MESSAGE_LIMIT - 1] + "\u2026"
    index = next((i for i, c in enumerate(status.conditions) if c.type == type_), None)
    previous = status.conditions[index] if index is not None else None
    condition = Condition(
        type=type_,
        status=text,
        reason=reason,
        message=message,
        last_transition_time=previous.last_transition_time if previous and previous.status == text else now,
        observed_generation=generation,
    )
    if index is None:
        status.conditions.append(condition)
    else:
        status.conditions[index] = condition


def get_condition(status: ModelDeploymentStatus, type_: ConditionType) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)

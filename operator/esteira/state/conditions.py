"""Kubernetes-style conditions whose lastTransitionTime moves only when the status value changes."""

from __future__ import annotations

from esteira.api.status import Condition, ConditionType, ModelDeploymentStatus


def set_condition(
    status: ModelDeploymentStatus,
    type_: ConditionType,
    value: bool | None,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> None:
    """Insert or update one condition in place (status objects are working copies)."""
    text = "Unknown" if value is None else ("True" if value else "False")
    for index, existing in enumerate(status.conditions):
        if existing.type == type_:
            since = existing.last_transition_time if existing.status == text else now
            status.conditions[index] = Condition(
                type=type_,
                status=text,
                reason=reason,
                message=message,
                last_transition_time=since,
                observed_generation=generation,
            )
            return
    status.conditions.append(
        Condition(
            type=type_,
            status=text,
            reason=reason,
            message=message,
            last_transition_time=now,
            observed_generation=generation,
        )
    )


def get_condition(status: ModelDeploymentStatus, type_: ConditionType) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)

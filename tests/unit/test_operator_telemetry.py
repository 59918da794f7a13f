"""The operator's per-deployment gauges follow the written status, and leave with the deployment."""

from __future__ import annotations

from prometheus_client import REGISTRY

from esteira.controller import telemetry


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def status(*, ready: bool, drifted: bool, weight: int | None = None, hold: str | None = None) -> dict[str, object]:
    conditions = [
        {"type": "Ready", "status": "True" if ready else "False"},
        {"type": "DataDrifted", "status": "True" if drifted else "False"},
    ]
    canary = None if weight is None else {"weight": weight, **({"hold": hold} if hold else {})}
    return {"conditions": conditions, **({"canary": canary} if canary else {})}


def test_gauges_follow_the_status() -> None:
    key = {"namespace": "models", "deployment": "gauged"}
    telemetry.record_status("models", "gauged", status(ready=True, drifted=False))
    assert sample("esteira_operator_deployment_ready", **key) == 1
    assert sample("esteira_operator_data_drifted", **key) == 0
    assert sample("esteira_operator_canary_weight", **key) == 0

    telemetry.record_status("models", "gauged", status(ready=False, drifted=True, weight=20, hold="LowTraffic"))
    assert sample("esteira_operator_deployment_ready", **key) == 0
    assert sample("esteira_operator_data_drifted", **key) == 1
    assert sample("esteira_operator_canary_weight", **key) == 20
    assert sample("esteira_operator_canary_held", **key, hold="LowTraffic") == 1

    # A new hold replaces the old series (the alert's pending time restarts); no hold removes it.
    telemetry.record_status("models", "gauged", status(ready=True, drifted=True, weight=20, hold="InputsDrifting"))
    assert sample("esteira_operator_canary_held", **key, hold="LowTraffic") is None
    assert sample("esteira_operator_canary_held", **key, hold="InputsDrifting") == 1
    telemetry.record_status("models", "gauged", status(ready=True, drifted=False, weight=50))
    assert sample("esteira_operator_canary_held", **key, hold="InputsDrifting") is None


def test_a_deleted_deployment_leaves_no_series() -> None:
    key = {"namespace": "models", "deployment": "deleted"}
    telemetry.record_status("models", "deleted", status(ready=True, drifted=True, weight=10, hold="LowTraffic"))
    telemetry.record_drift("models", "deleted", {"age": 0.4})
    telemetry.forget_deployment("models", "deleted")
    for name in (
        "esteira_operator_deployment_ready",
        "esteira_operator_data_drifted",
        "esteira_operator_canary_weight",
    ):
        assert sample(name, **key) is None
    assert sample("esteira_operator_canary_held", **key, hold="LowTraffic") is None
    assert sample("esteira_operator_drift_score", **key, feature="age") is None
    telemetry.forget_deployment("models", "deleted")  # twice is harmless (a delete event seen again)

"""Drift end to end: the real operator reads the model server's drift counters from a real Prometheus (an
exporter plays them, binned by the core's own profile code) and raises DataDrifted, holding a canary with
BlockRollouts; unshifted traffic too light to judge raises nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.test_rollouts import rollout_md, rollout_operator, telemetry
from tests.support.cluster import Esteira, eventually, model_source
from tests.support.drift_exporter import DriftPlayer
from tests.support.model_exporter import ModelExporter
from tests.support.prometheus_server import PrometheusServer

__all__ = ["rollout_operator", "telemetry"]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rollout_operator")]


def drift_md(namespace: str, version: str, min_sample: int) -> dict[str, Any]:
    body = rollout_md(namespace, version)
    body["spec"]["monitoring"] = {
        "drift": {"window": "20s", "interval": "2s", "minSample": min_sample, "actions": ["Alert", "BlockRollouts"]}
    }
    return body


def monitoring(esteira: Esteira, namespace: str) -> dict[str, Any]:
    return (esteira.get_md(namespace, "iris").get("status") or {}).get("monitoring") or {}


def test_shifted_inputs_raise_data_drifted_and_hold_the_canary(
    esteira: Esteira, kube_namespace: str, telemetry: tuple[ModelExporter, PrometheusServer]
) -> None:
    exporter, _ = telemetry
    exporter.set_arm(1, 1.0)
    player = DriftPlayer(exporter.registry, (kube_namespace, "iris", "1"), rate=50.0).start()
    try:
        esteira.create_md(kube_namespace, drift_md(kube_namespace, "1.0.0", min_sample=100))
        eventually(lambda: monitoring(esteira, kube_namespace).get("verdict") == "Stable", 90, "a Stable verdict")
        assert (
            esteira.condition(kube_namespace, "iris", "DataDrifted") in (None, {})
            or (esteira.condition(kube_namespace, "iris", "DataDrifted") or {}).get("status") != "True"
        )

        player.shift = 2.0  # two standard deviations: every input feature moves

        def drifting(*features: str) -> dict[str, Any] | None:
            found = monitoring(esteira, kube_namespace)
            said = (esteira.condition(kube_namespace, "iris", "DataDrifted") or {}).get("status") == "True"
            names = {f["name"] for f in found.get("features") or [] if f["verdict"] == "Drift"}
            return found if said and set(features) <= names else None

        # The incident starts at the first evaluation that finds drift, which may come while the window still holds
        # unshifted traffic: one feature may drift first, and every one once the window holds only shifted traffic.
        first = eventually(lambda: drifting(), 90, "DataDrifted")
        assert first["verdict"] == "Drifted"
        events = eventually(  # posted after the status write that recorded the incident
            lambda: [e for e in esteira.events_for(kube_namespace, "iris") if e["reason"] == "DataDrifted"],
            30,
            "the DataDrifted event",
        )
        assert events[0]["type"] == "Warning"
        assert any(f["name"] in events[0]["message"] for f in first["features"] if f["verdict"] == "Drift")
        drifted = eventually(lambda: drifting("sepal_length", "petal_length"), 60, "both features drifting")
        assert {f["name"] for f in drifted["features"] if f["verdict"] == "Drift"} == {"sepal_length", "petal_length"}

        canary = drift_md(kube_namespace, "2.0.0", min_sample=100)["spec"]["model"]
        esteira.patch_md(kube_namespace, "iris", {"spec": {"model": {**canary, **model_source("2.0.0", "s3://m/2")}}})
        exporter.set_arm(2, 0.0)
        held = eventually(
            lambda: (
                ((esteira.get_md(kube_namespace, "iris").get("status") or {}).get("canary") or {}).get("hold")
                == "InputsDrifting"
                and esteira.get_md(kube_namespace, "iris")["status"]["canary"]
            ),
            60,
            "the canary held while inputs drift",
        )
        assert held["weight"] == 0
    finally:
        player.stop()


def test_light_unshifted_traffic_raises_nothing(
    esteira: Esteira, kube_namespace: str, telemetry: tuple[ModelExporter, PrometheusServer]
) -> None:
    exporter, _ = telemetry
    player = DriftPlayer(exporter.registry, (kube_namespace, "iris", "1"), rate=1.0).start()
    try:
        esteira.create_md(kube_namespace, drift_md(kube_namespace, "1.0.0", min_sample=100))
        first = eventually(lambda: monitoring(esteira, kube_namespace).get("lastEvaluationTime"), 60, "an evaluation")
        later = eventually(
            lambda: (m := monitoring(esteira, kube_namespace)).get("lastEvaluationTime", first) > first and m,
            60,
            "a later evaluation",
        )
        assert later["verdict"] == "NoData"
        assert (esteira.condition(kube_namespace, "iris", "DataDrifted") or {}).get("status") != "True"
        assert not [e for e in esteira.events_for(kube_namespace, "iris") if e["reason"] == "DataDrifted"]
    finally:
        player.stop()

"""KServe's report of the stable revision read per deployment mode: its observedGeneration is a child's."""

from __future__ import annotations

from typing import Any

import pytest

from esteira.state.observe import Observation, serving_state


def isvc(generation: int, observed: int, ready: str = "True") -> dict[str, Any]:
    return {
        "metadata": {"name": "iris", "generation": generation},
        "status": {"observedGeneration": observed, "conditions": [{"type": "Ready", "status": ready}]},
    }


def observation(obj: dict[str, Any], touched: bool = False) -> Observation:
    return Observation("iris", obj, touched, 1, "2026-01-01T00:00:00Z")


def test_standard_mode_reads_ready_whatever_the_stable_deployment_s_generation() -> None:
    """Standard: the stable Deployment's generation, left at 1 by three canary steps, is no sign of a stale status."""
    assert serving_state(observation(isvc(4, 1)), "Standard")[0] == "ready"
    assert serving_state(observation(isvc(4, 1, "False")), "Standard")[0] == "pending"


@pytest.mark.parametrize(("observed", "expected"), [(3, "pending"), (4, "ready")])
def test_knative_mode_waits_for_a_status_about_the_latest_spec(observed: int, expected: str) -> None:
    assert serving_state(observation(isvc(4, observed)), "Knative")[0] == expected


@pytest.mark.parametrize("mode", ["Standard", "Knative"])
def test_a_status_read_while_the_spec_is_being_written_is_pending(mode: str) -> None:
    assert serving_state(observation(isvc(1, 1), touched=True), mode)[0] == "pending"

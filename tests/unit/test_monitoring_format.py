"""`kubectl esteira status` and `esteira status` show status.monitoring: verdict, sample, top features, quality."""

from __future__ import annotations

from typing import Any

from esteira.api.status import MonitoringStatus
from esteira.kubectl import format_status
from esteira.local.cli import render_status
from tests.support.specs import document, spec


def monitoring() -> dict[str, Any]:
    """A status.monitoring as the operator writes it (validated by the status model, so the keys are real)."""
    return MonitoringStatus.model_validate(
        {
            "lastEvaluationTime": "2026-01-01T00:10:00Z",
            "revision": 3,
            "window": "1h",
            "sampleSize": 1800,
            "verdict": "Drifted",
            "driftedShare": 0.5,
            "drifting_since": "2026-01-01T00:05:00Z",
            "features": [
                {
                    "name": "petal_length",
                    "method": "psi",
                    "score": 0.4123,
                    "threshold": 0.2,
                    "pValue": 0.00001,
                    "sampleSize": 1800,
                    "verdict": "Drift",
                },
                {
                    "name": "sepal_width",
                    "method": "psi",
                    "score": 0.01,
                    "threshold": 0.2,
                    "sampleSize": 1800,
                    "verdict": "NoDrift",
                },
            ],
            "predictions": {
                "name": "predictions",
                "method": "jensen_shannon",
                "threshold": 0.1,
                "sampleSize": 12,
                "verdict": "NoData",
            },
            "dataQuality": [{"feature": "sepal_width", "kind": "missing", "rate": 0.034}],
        }
    ).to_wire()


def row(text: str, first: str) -> list[str]:
    (line,) = [line for line in text.splitlines() if line.split()[:1] == [first]]
    return line.split()


def check_monitoring_shown(text: str) -> None:
    assert "monitoring: Drifted (50% of features drifted)  revision 3  window 1h  sample 1800" in text
    assert "drifting since 2026-01-01T00:05:00Z" in text
    assert row(text, "petal_length") == ["petal_length", "psi", "0.4123", "0.2", "1e-05", "1800", "Drift"]
    assert row(text, "predictions") == ["predictions", "jensen_shannon", "-", "0.1", "-", "12", "NoData"]
    assert ["sepal_width", "missing", "3.40%"] in [line.split() for line in text.splitlines()]
    # The most drifted feature comes first, as the status orders them.
    assert text.index("petal_length") < text.index("sepal_width")


def test_kubectl_status_shows_monitoring() -> None:
    md = document(spec(), namespace="models")
    md["status"] = {"phase": "Ready", "monitoring": monitoring()}
    check_monitoring_shown(format_status(md))


def test_local_status_shows_monitoring() -> None:
    view = {"name": "iris", "phase": "Ready", "url": "http://127.0.0.1:8080", "weights": {"3": 100}}
    check_monitoring_shown(render_status({**view, "status": {"monitoring": monitoring()}}))


def test_no_monitoring_no_section() -> None:
    md = document(spec(), namespace="models")
    md["status"] = {"phase": "Ready"}
    assert "monitoring" not in format_status(md)
    assert "monitoring" not in render_status({"name": "iris", "phase": "Ready", "status": {}})

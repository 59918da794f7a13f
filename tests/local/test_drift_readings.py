"""`esteira up` reads drift from TorchServe's metrics text and windows it like Prometheus' increase()."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from esteira.local.drift import DriftReadings, drift_totals

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def exposition(low: int, high: int, instances: int, revision: int = 1) -> str:
    labels = f'ModelName="iris",Revision="{revision}",Hostname="h"'
    return "\n".join(
        [
            "# TYPE esteira_drift_bin_total counter",
            f'esteira_drift_bin_total{{{labels},feature="age",bin="0"}} {low}',
            f'esteira_drift_bin_total{{{labels},feature="age",bin="1"}} {high}',
            f'esteira_drift_reference{{{labels},feature="age",bin="0"}} 50',
            f'esteira_drift_reference{{{labels},feature="age",bin="1"}} 50',
            f"esteira_drift_instances_total{{{labels}}} {instances}",
            f'esteira_data_quality_violations_total{{{labels},feature="age",kind="missing"}} 3',
            'esteira_drift_bin_total{ModelName="iris",Revision="9",Hostname="h",feature="age",bin="0"} 1000',
        ]
    )


def test_totals_are_one_revisions_series() -> None:
    totals = drift_totals(exposition(10, 20, 30), 1)
    assert totals.bins == {("age", "0"): 10.0, ("age", "1"): 20.0}
    assert totals.reference == {("age", "0"): 50.0, ("age", "1"): 50.0}
    assert totals.instances == 30
    assert totals.violations == {("age", "missing"): 3.0}


def test_the_window_is_the_increase_since_a_window_ago() -> None:
    readings = DriftReadings()
    span = timedelta(minutes=10)
    first = readings.window(1, T0, drift_totals(exposition(10, 10, 20), 1), span)
    assert first.current == {"age": {"0": 10.0, "1": 10.0}}  # no older reading: since the server started
    readings.window(1, T0 + timedelta(minutes=10), drift_totals(exposition(15, 15, 30), 1), span)
    later = readings.window(1, T0 + timedelta(minutes=20), drift_totals(exposition(15, 115, 130), 1), span)
    assert later.current == {"age": {"0": 0.0, "1": 100.0}}
    assert later.instances == 100
    assert later.reference == {"age": {"0": 50.0, "1": 50.0}}
    # A restart (counters went down) counts from zero; a new stable revision starts over.
    restarted = readings.window(1, T0 + timedelta(minutes=30), drift_totals(exposition(1, 2, 3), 1), span)
    assert restarted.instances == 3
    other = readings.window(2, T0 + timedelta(minutes=31), drift_totals(exposition(4, 4, 8, revision=2), 2), span)
    assert other.instances == 8


def test_a_server_launched_again_inside_the_window_counts_its_newest_reading_whole() -> None:
    """Restarted, it counted past its value a window ago (130 -> 200 instances): as grown, 70 were judged of the
    200 it counted since it started again."""
    readings, span = DriftReadings(), timedelta(minutes=10)
    readings.window(1, T0, drift_totals(exposition(15, 115, 130), 1, launch=1), span)
    again = readings.window(1, T0 + timedelta(minutes=10), drift_totals(exposition(100, 100, 200), 1, launch=2), span)
    assert again.instances == 200 and again.current == {"age": {"0": 100.0, "1": 100.0}}
    later = readings.window(1, T0 + timedelta(minutes=20), drift_totals(exposition(110, 110, 220), 1, launch=2), span)
    assert later.instances == 20, "one launch: the growth"

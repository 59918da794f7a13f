"""The operator killed in the middle of a rollout, on the emulator with faults on: the next one resumes where
the last left off, with no step taken twice, no decision lost and no promotion without evidence.

Kills are SIGKILL (a lost node, an OOM kill): nothing is flushed. To crash between a decision and its status
write, the emulator holds that write, the operator is killed while it waits, and the write then fails
without being applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.prometheus_proxy import PrometheusProxy
from tests.e2e.test_rollouts import (
    ERRORS,
    GOOD,
    last_rollout,
    start_rollout,
    telemetry,  # noqa: F401 (a fixture)
    wait_for_weight,
)
from tests.emulator.cluster import KubeApi
from tests.emulator.server import EmulatorServer
from tests.support.cluster import Esteira, eventually
from tests.support.fake_kserve import FakeKServe
from tests.support.model_exporter import ArmProfile, ModelExporter
from tests.support.operator_process import OperatorProcess
from tests.support.prometheus_server import PrometheusServer
from tests.support.specs import document, spec
from tests.support.traffic import TrafficMirror

pytestmark = pytest.mark.slow

STATUS_PATH_END = "/modeldeployments/iris/status"
# Seeded faults on every operator request: API errors to retry, stale writes, watches dropped or expired.
FAULTS: dict[str, Any] = {
    "error_rate": 0.05,
    "conflict_rate": 0.1,
    "drop_watch_rate": 0.1,
    "gone_watch_rate": 0.2,
    "drop_watch_after": 2.0,
    "seed": 12,
}

Start = Callable[[], OperatorProcess]


@pytest.fixture
def proxy(telemetry: tuple[ModelExporter, PrometheusServer]) -> Iterator[PrometheusProxy]:  # noqa: F811
    with PrometheusProxy(telemetry[1].url) as front:
        yield front


@pytest.fixture
def start_operator(
    crds: KubeApi,
    kube_emulator: EmulatorServer,
    kube_namespace: str,
    tmp_path: Path,
    proxy: PrometheusProxy,
    fake_kserve: FakeKServe | None,
    request: pytest.FixtureRequest,
) -> Iterator[Start]:
    """Starts a fresh operator each call (the previous one must be dead); faults are on from the first."""
    kube_emulator.set_faults(**FAULTS)
    started: list[OperatorProcess] = []

    def start() -> OperatorProcess:
        assert all(p.process is None or p.process.poll() is not None for p in started), "one operator at a time"
        process = OperatorProcess(
            str(crds.kubeconfig),
            [kube_namespace],
            tmp_path / f"operator-{len(started)}.log",
            extra_args=["--prometheus-url", proxy.url, "--rollout-tick-seconds", "0.5"],
        )
        started.append(process)
        return process.start(timeout=90)  # Kopf starts slowly on a busy machine

    yield start
    for number, process in enumerate(started):
        process.stop()
        request.node.add_report_section("teardown", f"operator {number} log", process.log()[-15000:])
    kube_emulator.clear_faults()


def kill(process: OperatorProcess) -> None:
    assert process.process is not None
    process.process.kill()
    process.process.wait()


def isvc_canary_weights(esteira: Esteira, namespace: str) -> list[int]:
    isvc = esteira.get_isvc(namespace, "iris") or {}
    return [arm["trafficPercent"] for arm in isvc.get("spec", {}).get("canary") or []]


def step_events(esteira: Esteira, namespace: str) -> list[str]:
    return [e["message"] for e in esteira.events_for(namespace, "iris") if e["reason"] == "StepAdvanced"]


def finished(esteira: Esteira, namespace: str) -> dict[str, Any]:
    return eventually(lambda: last_rollout(esteira, namespace), timeout=90, what="rollout finished")


def assert_each_step_once(esteira: Esteira, namespace: str, mirror: TrafficMirror) -> None:
    assert [w for w in mirror.timeline.canary_weights() if w] == [20, 50, 100]
    messages = step_events(esteira, namespace)
    for weight in (20, 50, 100):
        assert sum(f" at {weight}% " in m for m in messages) <= 1, messages


def test_killed_while_waiting_at_a_step_resumes_there(
    start_operator: Start,
    esteira: Esteira,
    kube_namespace: str,
    telemetry: tuple[ModelExporter, PrometheusServer],  # noqa: F811
) -> None:
    exporter, prometheus = telemetry
    first = start_operator()
    with TrafficMirror(esteira, kube_namespace, exporter, {1: GOOD, 2: GOOD}) as mirror:
        start_rollout(esteira, kube_namespace, prometheus)
        wait_for_weight(esteira, kube_namespace, 50)
        kill(first)
        start_operator()
        outcome = finished(esteira, kube_namespace)
    assert outcome["outcome"] == "Promoted", outcome
    assert_each_step_once(esteira, kube_namespace, mirror)
    history = {h["revision"]: h["outcome"] for h in esteira.get_md(kube_namespace, "iris")["status"]["history"]}
    assert history == {1: "Superseded", 2: "Promoted"}


def test_killed_mid_analysis_judges_again_and_steps_once(
    start_operator: Start,
    esteira: Esteira,
    kube_namespace: str,
    telemetry: tuple[ModelExporter, PrometheusServer],  # noqa: F811
    proxy: PrometheusProxy,
) -> None:
    exporter, prometheus = telemetry
    first = start_operator()
    with TrafficMirror(esteira, kube_namespace, exporter, {1: GOOD, 2: GOOD}) as mirror:
        start_rollout(esteira, kube_namespace, prometheus)
        wait_for_weight(esteira, kube_namespace, 20)
        proxy.gate.clear()
        eventually(lambda: proxy.waiting.is_set() or None, timeout=30, what="an analysis waiting on Prometheus")
        before = esteira.get_md(kube_namespace, "iris")["status"]["canary"]
        kill(first)
        proxy.gate.set()
        start_operator()
        outcome = finished(esteira, kube_namespace)
    assert outcome["outcome"] == "Promoted", outcome
    assert before["weight"] in (20, 50)
    assert_each_step_once(esteira, kube_namespace, mirror)


def status_in(body: Any) -> dict[str, Any]:
    """The status a merge patch writes (Kopf's own JSON patches are lists and write none)."""
    return (body.get("status") or {}) if isinstance(body, dict) else {}


def _steps_to(weight: int) -> Callable[[str, str, Any], bool]:
    def matches(method: str, path: str, body: Any) -> bool:
        canary = (status_in(body).get("canary")) or {}
        return method == "PATCH" and path.endswith(STATUS_PATH_END) and canary.get("weight") == weight

    return matches


def _rolls_back(method: str, path: str, body: Any) -> bool:
    last = status_in(body).get("lastRollout") or {}
    return method == "PATCH" and path.endswith(STATUS_PATH_END) and last.get("outcome") == "RolledBack"


@pytest.mark.parametrize(
    ("canary", "held", "outcome"),
    [(GOOD, _steps_to(50), "Promoted"), (ERRORS, _rolls_back, "RolledBack")],
    ids=["step", "rollback"],
)
def test_killed_after_a_decision_before_its_status_write(
    start_operator: Start,
    esteira: Esteira,
    kube_namespace: str,
    kube_emulator: EmulatorServer,
    telemetry: tuple[ModelExporter, PrometheusServer],  # noqa: F811
    canary: ArmProfile,
    held: Callable[[str, str, Any], bool],
    outcome: str,
) -> None:
    exporter, prometheus = telemetry
    write = kube_emulator.faults.hold(held)
    first = start_operator()
    with TrafficMirror(esteira, kube_namespace, exporter, {1: GOOD, 2: canary}) as mirror:
        start_rollout(esteira, kube_namespace, prometheus)
        eventually(lambda: write.arrived.is_set() or None, timeout=60, what="the decision's status write")
        # Nothing acts on a decision before status records it: the InferenceService still serves 20%.
        assert isvc_canary_weights(esteira, kube_namespace) == [20]
        kill(first)
        write.release()
        start_operator()
        result = finished(esteira, kube_namespace)
    assert result["outcome"] == outcome, result
    status = esteira.get_md(kube_namespace, "iris")["status"]
    if outcome == "Promoted":
        assert_each_step_once(esteira, kube_namespace, mirror)
        assert status["stable"]["revision"] == 2
    else:
        assert [w for w in mirror.timeline.canary_weights() if w] == [20], "the bad canary never advanced"
        assert status["stable"]["revision"] == 1
        # Status is written first, then the InferenceService and the Events: wait for both to follow.
        eventually(lambda: isvc_canary_weights(esteira, kube_namespace) == [], what="the canary arm removed")
        reasons = eventually(
            lambda: (
                (found := [e["reason"] for e in esteira.events_for(kube_namespace, "iris")])
                and "RolledBack" in found
                and found
            ),
            what="the RolledBack event",
        )
        assert reasons.count("RolledBack") == 1, reasons
    assert kube_emulator.faults.injected["held"] == 1


def test_operator_follows_changes_through_expired_watches(
    crds: KubeApi,
    kube_emulator: EmulatorServer,
    kube_namespace: str,
    esteira: Esteira,
    fake_kserve: FakeKServe | None,
    tmp_path: Path,
) -> None:
    """Every watch ends with 410 Gone within a second: Kopf lists again and sees each change, with the resync
    timer too slow to be what saves it."""
    kube_emulator.set_faults(gone_watch_rate=1.0, drop_watch_after=0.5, seed=3)
    operator = OperatorProcess(str(crds.kubeconfig), [kube_namespace], tmp_path / "operator.log", resync_seconds=3600)
    body = spec()
    with operator:
        esteira.create_md(kube_namespace, document(body, namespace=kube_namespace))
        eventually(lambda: esteira.get_isvc(kube_namespace, "iris"), timeout=30, what="InferenceService created")
        esteira.patch_md(kube_namespace, "iris", {"spec": {"model": {"version": "2.0.0", "storageUri": "s3://m/2"}}})
        canary = eventually(
            lambda: (esteira.get_md(kube_namespace, "iris").get("status") or {}).get("canary"),
            timeout=30,
            what="the change seen through a re-listed watch",
        )
    assert canary["revision"] == 2
    assert kube_emulator.faults.injected["gone_watch"] >= 2
    assert "Error in the watch-stream" not in operator.log()

"""The rollout engine with a fake clock: promotion, rollback, low traffic, missing metrics, manual control,
and properties that must hold for any sequence of evidence and commands."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus
from esteira.rollout.cycle import RolloutOutput, rollout_step
from esteira.rollout.engine import analysis_due
from esteira.rollout.evidence import ArmSample, Evidence
from esteira.rollout.inputs import ObservedRoute, RolloutInput
from esteira.rollout.phase import phase_of
from esteira.rollout.revisions import track_revisions, traffic_plan
from esteira.vocabulary import Command, format_time
from tests.support.specs import model, spec

T0 = datetime(2026, 1, 1, 12, 0, 0)
MINUTE = timedelta(minutes=1)
GOOD = Evidence(
    canary=ArmSample(requests=200, errors=0, latency_p95=0.05, class_counts={"a": 100, "b": 100}),
    stable=ArmSample(requests=800, errors=1, latency_p95=0.05, class_counts={"a": 400, "b": 400}),
)
ERRORS = Evidence(canary=ArmSample(requests=200, errors=40, latency_p95=0.05), stable=GOOD.stable)
SLOW = Evidence(canary=ArmSample(requests=200, errors=0, latency_p95=2.0), stable=GOOD.stable)
SHIFTED = Evidence(
    canary=ArmSample(requests=200, errors=0, latency_p95=0.05, class_counts={"a": 190, "b": 10}), stable=GOOD.stable
)
QUIET = Evidence(canary=ArmSample(requests=3, errors=0, latency_p95=0.05), stable=GOOD.stable)


def parsed(rollout: dict[str, Any] | None = None, version: str = "2") -> ModelDeploymentSpec:
    analysis = {
        "minRequests": 50,
        "lowTrafficDeadline": "5m",
        "errorRate": {"max": 0.05},
        "latency": {"p95MaxSeconds": 0.5},
        "predictionShift": {"method": "JensenShannon", "max": 0.2},
    }
    body = {"steps": [10, 50, 100], "interval": "1m", "threshold": 2, "analysis": analysis, **(rollout or {})}
    return ModelDeploymentSpec.parse(spec(model=model(version=version, storageUri=f"s3://m/{version}"), rollout=body))


def with_canary(md: ModelDeploymentSpec) -> ModelDeploymentStatus:
    first = track_revisions(
        parsed(md.rollout.model_dump(by_alias=True), version="1"), ModelDeploymentStatus(), "2026-01-01T11:00:00Z"
    )
    return track_revisions(md, first.status, format_time(T0)).status


class Driver:
    """Runs the rollout step, as the operator and `esteira up` do, tick by tick on a fake clock."""

    def __init__(self, md: ModelDeploymentSpec) -> None:
        self.spec = md
        self.status = with_canary(md)
        self.now = T0
        self.log: list[RolloutOutput] = []
        self.router_copies = True

    def tick(
        self,
        evidence: Evidence | None = GOOD,
        *,
        after: timedelta = MINUTE,
        command: Command | None = None,
        ready: bool = True,
        error: str | None = None,
        observed: int | None = None,
        applied: bool = True,
    ) -> RolloutOutput:
        self.now += after
        revision = self.status.canary.revision if self.status.canary else None
        out = rollout_step(
            RolloutInput(
                spec=self.spec,
                status=self.status,
                now=self.now,
                route=ObservedRoute(revision, ready, observed, applied),
                evidence=evidence,
                metrics_error=error,
                command=command,
                router_copies=self.router_copies,
            )
        )
        self.status = out.status
        self.log.append(out)
        return out

    @property
    def weight(self) -> int | None:
        return None if self.status.canary is None else self.status.canary.weight

    def reasons(self) -> list[str]:
        return [d.reason for out in self.log for d in out.decisions]


def test_good_canary_is_promoted_through_every_step() -> None:
    driver = Driver(parsed())
    weights = []
    for _ in range(4):
        driver.tick()
        weights.append(driver.weight)
    assert weights == [10, 50, 100, None]
    assert driver.status.stable is not None and driver.status.stable.revision == 2
    assert driver.status.last_rollout is not None and driver.status.last_rollout.outcome == "Promoted"
    history = {h.revision: h.outcome for h in driver.status.history}
    assert history == {2: "Promoted", 1: "Superseded"}
    assert driver.reasons().count("AnalysisPassed") == 3


MIRROR = {"mirror": True, "router": "GatewayAPI"}


def test_a_mirrored_canary_is_judged_on_copies_before_it_takes_traffic() -> None:
    """With rollout.mirror the ready canary first gets copies of stable's requests at 0%; a passing analysis of
    them takes it to its first step, where the copies stop (a rule's mirror would send it its own requests twice)."""
    driver = Driver(parsed(MIRROR))
    seen = []
    for _ in range(5):
        driver.tick()
        canary = driver.status.canary
        seen.append((canary.weight, canary.mirroring, traffic_plan(driver.status).mirror) if canary else None)
    assert seen == [(0, True, True), (10, False, False), (50, False, False), (100, False, False), None]
    assert driver.reasons()[:3] == ["Mirroring", "AnalysisPassed", "StepAdvanced"]
    assert driver.status.last_rollout is not None and driver.status.last_rollout.outcome == "Promoted"


def test_a_mirrored_canary_failing_on_copies_is_rolled_back_before_serving_anyone() -> None:
    driver = Driver(parsed(MIRROR))
    driver.tick()
    driver.tick(SHIFTED)
    assert driver.weight == 0 and driver.status.canary is not None and driver.status.canary.mirroring
    driver.tick(SHIFTED)
    assert driver.status.canary is None
    assert driver.status.last_rollout is not None and "prediction-shift" in driver.status.last_rollout.reason
    assert "StepAdvanced" not in driver.reasons()


def test_promote_or_a_mirror_turned_off_ends_the_copies_at_the_first_step() -> None:
    driver = Driver(parsed(MIRROR))
    driver.tick()
    driver.tick(command=Command(id="c1", action="promote"))
    assert driver.weight == 10 and driver.status.canary is not None and not driver.status.canary.mirroring
    driver = Driver(parsed(MIRROR))
    driver.tick()
    driver.spec = parsed({"router": "GatewayAPI"})
    driver.tick(QUIET)
    assert driver.weight == 10 and driver.status.canary is not None and not driver.status.canary.mirroring
    driver = Driver(parsed(MIRROR))
    driver.tick()
    driver.router_copies = False  # the router changed to one that cannot copy: waiting, it would wait for ever
    driver.tick(QUIET)
    assert driver.weight == 10 and driver.status.canary is not None and driver.status.canary.copies is None


def test_a_canary_paused_while_getting_copies_resumes_them_and_stops_at_its_first_step_s_gate() -> None:
    driver = Driver(parsed({**MIRROR, "pauseBefore": [10]}))
    driver.tick()
    driver.tick(command=Command(id="c1", action="pause"))
    out = driver.tick(command=Command(id="c2", action="resume"))
    canary = driver.status.canary
    assert [d.reason for d in out.decisions] == ["Resumed"] and canary is not None
    assert canary.mirroring and not canary.paused
    driver.tick()
    canary = driver.status.canary
    assert canary is not None and canary.paused and canary.hold == "WaitingForPromotion"
    assert canary.weight == 0 and not canary.mirroring, "no copies while it waits at the gate"
    driver.tick(command=Command(id="c3", action="promote"))
    assert driver.weight == 10


def test_a_canary_paused_before_it_is_ready_resumes_into_its_copies_though_its_first_step_is_gated() -> None:
    """Not begun, it is at no gate yet: its copies come first (refused, only promote moved it on, unjudged)."""
    driver = Driver(parsed({**MIRROR, "pauseBefore": [10]}))
    driver.tick(ready=False, command=Command(id="c1", action="pause"))
    out = driver.tick(ready=False, command=Command(id="c2", action="resume"))
    assert [d.reason for d in out.decisions] == ["Resumed"]
    driver.tick()
    assert driver.status.canary is not None and driver.status.canary.mirroring and driver.weight == 0


def test_copies_that_passed_are_not_sent_again_when_the_gate_they_stopped_at_is_dropped() -> None:
    driver = Driver(parsed({**MIRROR, "pauseBefore": [10]}))
    driver.tick()
    driver.tick()
    canary = driver.status.canary
    assert canary is not None and canary.paused and canary.copies == "Passed" and driver.weight == 0
    driver.spec = parsed(MIRROR)
    driver.tick(command=Command(id="c1", action="resume"))
    assert driver.weight == 10 and driver.reasons().count("Mirroring") == 1


def test_a_router_that_cannot_copy_takes_the_first_step_at_once_and_says_so() -> None:
    driver = Driver(parsed(MIRROR))
    driver.router_copies = False
    out = driver.tick()
    assert [(d.reason, d.warning) for d in out.decisions] == [("MirrorUnsupported", True), ("StepAdvanced", False)]
    assert driver.weight == 10 and driver.status.canary is not None and driver.status.canary.copies is None


def test_erroring_canary_rolls_back_after_threshold() -> None:
    driver = Driver(parsed())
    driver.tick()  # 10%
    first = driver.tick(ERRORS)
    assert driver.weight == 10 and "AnalysisFailed" in [d.reason for d in first.decisions]
    driver.tick(ERRORS)
    assert driver.status.canary is None
    assert driver.status.last_rollout is not None and driver.status.last_rollout.outcome == "RolledBack"
    assert "error-rate=0.2 (wanted <= 0.05, n=" in driver.status.last_rollout.reason  # the sample it was judged on
    decided = {c.name: (c.verdict, c.sample_size) for c in driver.status.last_rollout.checks}
    assert decided["error-rate"][0] == "Fail" and decided["error-rate"][1] > 0  # every check of that analysis kept
    assert driver.status.stable is not None and driver.status.stable.revision == 1


def test_slow_and_shifted_canaries_roll_back() -> None:
    for bad, check in ((SLOW, "latency-p95"), (SHIFTED, "prediction-shift-jensenshannon")):
        driver = Driver(parsed())
        driver.tick()
        driver.tick(bad)
        driver.tick(bad)
        assert driver.status.canary is None
        assert driver.status.last_rollout is not None and check in driver.status.last_rollout.reason


def test_checks_record_value_threshold_sample_and_verdict() -> None:
    driver = Driver(parsed())
    driver.tick()
    driver.tick(ERRORS)
    assert driver.status.canary is not None
    checks = {c.name: c for c in driver.status.canary.checks}
    assert checks["error-rate"].value == 0.2
    assert checks["error-rate"].threshold == "<= 0.05"
    assert checks["error-rate"].sample_size == 200
    assert checks["error-rate"].verdict == "Fail"
    assert checks["latency-p95"].verdict == "Pass"


def test_low_traffic_extends_then_pauses_without_rolling_back() -> None:
    driver = Driver(parsed())
    driver.tick()
    for _ in range(4):
        out = driver.tick(QUIET)
        assert driver.weight == 10
        assert "LowTraffic" not in [d.reason for d in out.decisions]
        assert driver.status.canary is not None
        assert driver.status.canary.hold == "ExtendingStep"
        assert driver.status.canary.pause_reason == (
            "extending step: the canary served 3 requests in this 1m interval, 50 needed"
        )
    out = driver.tick(QUIET, after=2 * MINUTE)
    assert "LowTraffic" in [d.reason for d in out.decisions]
    assert driver.status.canary is not None and driver.weight == 10
    driver.tick(GOOD)
    assert driver.weight == 50  # traffic came back: the rollout goes on


def test_low_traffic_can_be_configured_to_fail() -> None:
    driver = Driver(parsed({"analysis": {"minRequests": 50, "lowTrafficDeadline": "2m", "lowTrafficAction": "Fail"}}))
    driver.tick()
    driver.tick(QUIET)
    driver.tick(QUIET)
    assert driver.status.canary is None
    assert driver.status.last_rollout is not None and "too little traffic" in driver.status.last_rollout.reason


def test_missing_metrics_never_promote() -> None:
    driver = Driver(parsed())
    driver.tick()
    for _ in range(10):
        out = driver.tick(None, error="Prometheus at http://p:9090: connection refused")
        assert driver.weight == 10
    assert driver.status.canary is not None
    assert driver.status.canary.hold == "MetricsUnavailable"
    assert "metrics unavailable" in (driver.status.canary.pause_reason or "")
    assert "MetricsUnavailable" in [d.reason for d in out.decisions]
    driver.tick(GOOD)
    assert driver.weight == 50


def test_waits_for_canary_readiness_and_the_router() -> None:
    driver = Driver(parsed())
    driver.tick(ready=False)
    assert driver.weight == 0
    driver.tick()
    assert driver.weight == 10
    driver.tick(observed=0)
    assert driver.weight == 10
    assert driver.status.canary is not None and driver.status.canary.hold == "WaitingForRouter"
    assert "waiting for the router" in (driver.status.canary.pause_reason or "")
    driver.tick(observed=10)
    assert driver.weight == 50
    assert driver.status.canary.hold is None


def test_a_step_the_router_applies_late_is_judged_from_when_it_does() -> None:
    """The router still sends 10% for 90 s after the canary entered 50%: the analysis due meanwhile would judge the
    50% step on the 10% step's traffic. The step's first interval starts once the router sends 50%."""
    driver = Driver(parsed())
    driver.tick()
    driver.tick(observed=10)
    assert driver.weight == 50
    driver.tick(observed=10, after=timedelta(seconds=90))
    assert driver.status.canary is not None and driver.status.canary.hold == "WaitingForRouter"
    out = driver.tick(observed=50, after=timedelta(seconds=1))
    assert driver.weight == 50 and "StepAdvanced" not in [d.reason for d in out.decisions]
    assert out.requeue_after is not None and out.requeue_after > 55
    driver.tick(observed=50)
    assert driver.weight == 100


def test_a_backend_that_has_not_acted_on_the_last_write_holds_the_step_for_the_router() -> None:
    """KServe's status about an earlier spec tells nothing of the split last written: the canary waits for the
    router, not for readiness, its step judged from when the router has acted; a router that does not act within
    rollout.progressDeadline (KServe down, a Gateway that never takes the route) has the canary rolled back."""
    driver = Driver(parsed({"progressDeadline": "3m"}))
    driver.tick(applied=False)
    assert driver.status.canary is not None and driver.status.canary.hold == "WaitingForRouter"
    assert driver.status.canary.unready_since is None
    driver.tick()
    assert driver.weight == 10 and driver.status.canary.router_behind_since is None
    for _ in range(2):  # within the deadline
        driver.tick(applied=False, ready=False)
    assert driver.weight == 10 and driver.status.canary.hold == "WaitingForRouter"
    out = driver.tick(observed=10, after=timedelta(seconds=5))
    assert driver.weight == 10 and driver.status.canary.hold is None and out.requeue_after is not None
    driver.tick(observed=10)
    assert driver.weight == 50
    for _ in range(3):
        driver.tick(observed=10)
    assert driver.weight == 50, "held for the router within the deadline"
    driver.tick(observed=10)  # three minutes since the router was first seen behind
    assert driver.status.canary is None and driver.status.last_rollout is not None
    assert driver.status.last_rollout.outcome == "RolledBack"
    assert "the router did not send the canary its weight for 3m" in driver.status.last_rollout.reason


def test_a_canary_never_ready_is_rolled_back_at_the_progress_deadline() -> None:
    driver = Driver(parsed({"progressDeadline": "5m"}))
    first = driver.tick(ready=False)
    assert driver.status.canary is not None and driver.status.canary.hold == "WaitingForReadiness"
    assert driver.status.canary.unready_since == format_time(T0 + MINUTE)
    assert first.requeue_after == 5.0
    driver.tick(ready=False, after=5 * MINUTE - timedelta(seconds=2))
    assert driver.status.canary is not None and driver.weight == 0, "held, not rolled back, within the deadline"
    assert "rolled back after 5m" in (driver.status.canary.pause_reason or "")
    assert driver.log[-1].requeue_after == 2.0, "the engine comes back when the deadline passes"
    last = driver.tick(ready=False, after=timedelta(seconds=2))
    assert driver.status.canary is None
    assert driver.status.last_rollout is not None and driver.status.last_rollout.outcome == "RolledBack"
    assert driver.status.last_rollout.reason == "not ready for 5m (rollout.progressDeadline)"
    assert driver.status.stable is not None and driver.status.stable.revision == 1
    assert [(d.reason, d.warning) for d in last.decisions] == [("RolledBack", True)]


def test_a_canary_that_stops_being_ready_after_taking_traffic_is_rolled_back() -> None:
    driver = Driver(parsed({"progressDeadline": "5m"}))
    driver.tick()
    assert driver.weight == 10
    driver.tick(ready=False)
    driver.tick(ready=False, after=4 * MINUTE)
    assert driver.weight == 10 and driver.status.canary is not None
    driver.tick(ready=True, after=timedelta(seconds=1))
    assert driver.status.canary is not None and driver.status.canary.unready_since is None
    driver.tick(ready=False, after=timedelta(seconds=1))
    driver.tick(ready=False, after=4 * MINUTE)
    assert driver.status.canary is not None, "the deadline counts from when it stopped being ready again"
    driver.tick(ready=False, after=MINUTE)
    assert driver.status.canary is None
    assert driver.status.last_rollout is not None and "progressDeadline" in driver.status.last_rollout.reason


def test_the_progress_deadline_waits_for_a_paused_canary_and_counts_again_from_its_resume() -> None:
    driver = Driver(parsed({"progressDeadline": "5m"}))
    driver.tick()
    driver.tick(ready=False)  # not ready before the pause: the clock had started
    driver.tick(ready=False, command=Command(id="p", action="pause"))
    driver.tick(ready=False, after=30 * MINUTE)
    assert driver.status.canary is not None and driver.status.canary.hold == "PausedByRequest"
    driver.tick(ready=False, command=Command(id="r", action="resume"))
    assert driver.status.canary is not None and driver.status.canary.hold == "WaitingForReadiness"
    driver.tick(ready=False, after=4 * MINUTE)
    assert driver.status.canary is not None
    driver.tick(ready=False, after=MINUTE)
    assert driver.status.canary is None


def test_a_promote_that_ends_a_pause_starts_the_progress_deadline_afresh() -> None:
    """Unready when paused, then promoted half an hour later: it moved a step and was rolled back in one tick."""
    driver = Driver(parsed({"progressDeadline": "5m"}))
    driver.tick()
    driver.tick(ready=False)
    driver.tick(ready=False, command=Command(id="p", action="pause"))
    out = driver.tick(ready=False, after=30 * MINUTE, command=Command(id="go", action="promote"))
    assert [d.reason for d in out.decisions] == ["StepAdvanced"]
    assert driver.status.canary is not None and driver.status.canary.hold == "WaitingForReadiness"
    driver.tick(ready=False, after=4 * MINUTE)
    assert driver.status.canary is not None
    driver.tick(ready=False, after=MINUTE)
    assert driver.status.canary is None


def test_a_report_about_another_revision_says_nothing_about_the_canary() -> None:
    driver = Driver(parsed())
    out = rollout_step(
        RolloutInput(spec=driver.spec, status=driver.status, now=T0 + MINUTE, route=ObservedRoute(99, True, 0))
    )
    assert out.status.canary is not None and out.status.canary.weight == 0
    assert out.status.canary.hold == "WaitingForReadiness"


def test_pause_is_a_phase_and_resume_leaves_it() -> None:
    driver = Driver(parsed())
    driver.tick()
    assert phase_of(driver.spec, driver.status, "ready") == "Progressing"
    driver.tick(command=Command(id="p", action="pause"))
    assert driver.status.canary is not None and driver.status.canary.hold == "PausedByRequest"
    assert phase_of(driver.spec, driver.status, "ready") == "Paused"
    assert phase_of(driver.spec, driver.status, "failed") == "Degraded"  # a failing server is shown first
    driver.tick(command=Command(id="r", action="resume"))
    assert phase_of(driver.spec, driver.status, "ready") == "Progressing"


def test_a_resume_after_a_long_pause_judges_the_traffic_from_the_resume_on() -> None:
    """The analysis was due at once: no evidence is read while paused, so it said the metrics were unavailable
    and cleared the checks, after every resume."""
    driver = Driver(parsed())
    driver.tick()
    driver.tick(command=Command(id="p", action="pause"))
    resumed = driver.tick(None, after=timedelta(hours=1), command=Command(id="r", action="resume"))
    assert [d.reason for d in resumed.decisions] == ["Resumed"]
    assert driver.status.canary is not None and driver.status.canary.last_analysis_at == format_time(driver.now)
    assert not analysis_due(driver.spec, driver.status, driver.now)


def test_pause_before_waits_for_promote() -> None:
    driver = Driver(parsed({"pauseBefore": [100]}))
    driver.tick()
    driver.tick()
    assert driver.weight == 50
    driver.tick()
    assert driver.weight == 50 and driver.status.canary is not None and driver.status.canary.paused
    for _ in range(3):
        driver.tick()
    assert driver.weight == 50
    driver.tick(command=Command(id="c1", action="promote"))
    assert driver.weight == 100
    driver.tick()
    assert driver.status.canary is None and driver.status.stable is not None and driver.status.stable.revision == 2


def test_resume_does_not_pass_a_pause_before_gate_even_after_a_pause() -> None:
    """At the gate the canary's step is the gated one and its weight the last one's: a resume there had the next
    passing analysis promote it from 50 % without serving 100 %."""
    driver = Driver(parsed({"steps": [10, 50, 100], "pauseBefore": [100]}))
    for _ in range(3):
        driver.tick()
    assert (
        driver.weight == 50 and driver.status.canary is not None and driver.status.canary.hold == "WaitingForPromotion"
    )
    out = driver.tick(command=Command(id="r1", action="resume"))
    assert [(d.reason, d.warning) for d in out.decisions] == [("WaitingForPromotion", True)]
    assert "resume does not pass rollout.pauseBefore" in out.decisions[0].message
    driver.tick(command=Command(id="p1", action="pause"))
    driver.tick(command=Command(id="r2", action="resume"))
    for _ in range(3):
        driver.tick()
    canary = driver.status.canary
    assert canary is not None and canary.paused and canary.hold == "WaitingForPromotion" and driver.weight == 50
    driver.tick(command=Command(id="c1", action="promote"))
    assert driver.weight == 100


def test_an_annotation_carried_out_stays_carried_out_after_a_rollout_command() -> None:
    """The annotation stays on the object: once a RolloutCommand was carried out after it, its id was no longer
    the last, and the old pause was carried out again on the next reconcile."""
    driver = Driver(parsed())
    driver.tick()
    pause = Command(id="ann-1", action="pause")
    driver.tick(command=pause)
    assert driver.status.canary is not None and driver.status.canary.paused
    driver.tick(command=Command(id="rolloutcommand/u1", action="resume"))
    assert not driver.status.canary.paused
    out = driver.tick(command=pause)  # the annotation, read again at the next reconcile
    assert not driver.status.canary.paused and "Paused" not in [d.reason for d in out.decisions]
    assert (driver.status.last_command, driver.status.last_annotation_command) == ("rolloutcommand/u1", "ann-1")


def test_manual_pause_resume_abort_and_full_promote() -> None:
    driver = Driver(parsed())
    driver.tick()
    driver.tick(command=Command(id="p", action="pause"))
    assert driver.status.canary is not None and driver.status.canary.paused
    driver.tick()
    assert driver.weight == 10
    driver.tick(command=Command(id="p", action="resume"))  # same id: already carried out, ignored
    assert driver.status.canary.paused
    driver.tick(command=Command(id="r", action="resume"))
    driver.tick()
    assert driver.weight == 50
    driver.tick(command=Command(id="a", action="abort"))
    assert driver.status.canary is None
    assert driver.status.last_rollout is not None and driver.status.last_rollout.reason == "aborted by request"

    other = Driver(parsed())
    other.tick(command=Command(id="f", action="promote", full=True))
    assert other.status.canary is None and other.status.stable is not None and other.status.stable.revision == 2


def test_rolled_back_build_is_not_retried_until_asked() -> None:
    driver = Driver(parsed())
    driver.tick()
    driver.tick(ERRORS)
    driver.tick(ERRORS)
    again = track_revisions(driver.spec, driver.status, format_time(driver.now))
    assert again.status.canary is None and again.decisions == []
    retried = track_revisions(driver.spec, driver.status, format_time(driver.now), retry=True)
    assert retried.status.canary is not None and retried.status.canary.revision == 3


EVIDENCE = st.sampled_from([GOOD, ERRORS, SLOW, SHIFTED, QUIET, None])
COMMANDS = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.builds(
        Command,
        id=st.uuids().map(str),
        action=st.sampled_from(["promote", "pause", "resume", "abort"]),
        full=st.booleans(),
    ),
)
# Weighted towards ticks that reach an analysis (ready, router agreeing, a full interval later).
STEP = st.tuples(
    EVIDENCE,
    COMMANDS,
    st.sampled_from([0, 30, 60, 60, 90, 400]),
    st.sampled_from([True, True, True, False]),
    st.sampled_from([None, None, None, 0, 10, 50]),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=40), st.booleans())
def test_invariants_hold_for_any_sequence(
    steps: list[tuple[Any, Command | None, int, bool, int | None]], mirror: bool
) -> None:
    driver = Driver(parsed(MIRROR if mirror else None))
    previous = 0
    for evidence, command, seconds, ready, observed in steps:
        out = driver.tick(evidence, after=timedelta(seconds=seconds), command=command, ready=ready, observed=observed)
        reasons = [d.reason for d in out.decisions]
        canary = driver.status.canary
        if canary is not None:
            assert 0 <= canary.weight <= 100
            assert canary.weight >= previous or command is not None, "weights only grow without a command"
            assert canary.weight in (0, *driver.spec.rollout.steps)
            assert not canary.mirroring or (mirror and canary.weight == 0), "copies only to a canary without traffic"
            previous = canary.weight
        if "RolledBack" in reasons:
            assert canary is None, "a rollback returns all traffic to stable"
            assert driver.status.stable is not None and driver.status.stable.revision == 1
        if "Promoted" in reasons:
            before_checks_passed = "AnalysisPassed" in reasons
            by_request = command is not None and command.action == "promote"
            assert before_checks_passed or by_request, "no promotion without passing checks or a person's promote"
            # Only evidence whose every check passes can promote (relative checks are skipped at 100%).
            assert by_request or evidence in (GOOD, SHIFTED)
        if canary is None:
            break


def test_steps_edited_during_a_rollout_are_followed_without_failing() -> None:
    """Steps emptied before the canary's first step (``Immediate`` for the next rollout) leave it the default steps,
    judged against stable before it is promoted; steps shortened below a canary's step leave promote moving it to
    their last."""
    driver = Driver(parsed())
    driver.spec = parsed({"steps": []})
    weights = []
    for _ in range(5):
        driver.tick()
        weights.append(driver.weight)
    assert weights == [10, 25, 50, 100, None]
    assert driver.status.last_rollout is not None and driver.status.last_rollout.outcome == "Promoted"
    assert driver.reasons().count("AnalysisPassed") == 4

    driver = Driver(parsed({"steps": [10, 20, 30, 100]}))
    for _ in range(3):
        driver.tick()
    assert driver.weight == 30 and driver.status.canary is not None and driver.status.canary.step == 2
    driver.spec = parsed({"steps": [50, 100]})
    driver.tick(command=Command(id="c1", action="promote"))
    assert driver.weight == 100
    driver.tick()
    assert driver.status.last_rollout is not None and driver.status.last_rollout.outcome == "Promoted"


def test_a_rollback_to_a_rolled_back_revision_makes_its_build_stable() -> None:
    """The spec names a rolled-back build, which is not tried again by itself; a person's rollback to it (the
    kubectl plugin's `rollback --to-revision`) makes it stable at once instead of being said Done for nothing."""
    driver = Driver(parsed())
    driver.tick()
    driver.tick(ERRORS)
    driver.tick(ERRORS)
    assert driver.status.last_rollout is not None and driver.status.last_rollout.outcome == "RolledBack"
    assert driver.status.stable is not None and driver.status.stable.model_version == "1"
    out = driver.tick(command=Command(id="back", action="rollback", revision=2))
    assert driver.status.stable is not None and driver.status.stable.model_version == "2"
    assert driver.status.canary is None and "CommandIgnored" not in [d.reason for d in out.decisions]


def test_a_rollback_to_the_build_already_stable_is_ignored_saying_why() -> None:
    driver = Driver(parsed())
    driver.spec = parsed(version="1")  # back to stable's build: the canary is superseded
    driver.tick()
    assert driver.status.canary is None and driver.status.stable is not None
    out = driver.tick(command=Command(id="back", action="rollback", revision=1))
    ignored = [d.message for d in out.decisions if d.reason == "CommandIgnored"]
    assert ignored == ["rollback: the spec names stable revision 1's build already"]
    assert driver.status.last_command == "back", "carried out once: not taken again"

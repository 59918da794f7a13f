"""The checks run at every canary step, each giving a value, a threshold, a sample size and a verdict.

A check with too little data says NoData, which never counts as a pass: the step waits for evidence.
Checks against stable are skipped once the canary takes all traffic (stable then serves nothing).
"""

from __future__ import annotations

from esteira.api.spec import AccuracyCheck, Analysis, DataDriftCheck
from esteira.api.status import CheckResult
from esteira.drift.evaluate import DriftPolicy, DriftWindow, evaluate
from esteira.quality.scores import Tally
from esteira.quality.significance import accuracy_drop_p_value, mae_rise_p_value
from esteira.rollout.distances import homogeneity_p_value, jensen_shannon_distance, population_stability_index
from esteira.rollout.evidence import ArmSample, Evidence
from esteira.vocabulary import LATENCY_TOP_SECONDS

# A prediction shift over its threshold fails only when a difference this large is this unlikely by chance.
SHIFT_SIGNIFICANCE = 0.01


def _result(name: str, value: float | None, limit: str, sample: float, ok: bool | None, note: str = "") -> CheckResult:
    verdict = "NoData" if ok is None else ("Pass" if ok else "Fail")
    return CheckResult(
        name=name,
        value=None if value is None else round(value, 6),
        threshold=limit,
        sample_size=int(sample),
        verdict=verdict,
        message=note,
    )


def data_drift_check(check: DataDriftCheck, window: DriftWindow | None, policy: DriftPolicy) -> CheckResult:
    """Share of the canary's input features that drift from the reference profile over the interval.

    NoData only when too few instances were counted (or the model server has no profile): the step waits.
    """
    if window is None or not window.reference:
        return _result("data-drift", None, f"<= {check.max}", 0, None, "no reference profile counted for the canary")
    report = evaluate(window, policy)
    if report.drifted_share is None:
        note = f"{report.sample_size} instances counted, {policy.min_sample} needed"
        return _result("data-drift", None, f"<= {check.max}", report.sample_size, None, note)
    drifted = ", ".join(f"{f.name} ({f.method} {f.score})" for f in report.drifted[:3])
    return _result(
        "data-drift",
        report.drifted_share,
        f"<= {check.max}",
        report.sample_size,
        report.drifted_share <= check.max,
        f"drifted: {drifted}" if drifted else "",
    )


def _stable_usable(stable: ArmSample | None, min_requests: int) -> bool:
    return stable is not None and stable.requests >= max(1, min_requests)


def quality_check(check: AccuracyCheck, canary: Tally | None, stable: Tally | None, labels_due: bool) -> CheckResult:
    """The canary's accuracy (or MAE) against stable's on labels that arrived over the same window.

    Too few labels, or a difference within what chance explains, says NoData: the step waits for labels
    instead of rolling back a canary on a handful of them.
    """
    name, tolerance = check.metric, check.tolerance
    labelled = canary.labelled if canary else 0
    if not labels_due:
        return _result(name, None, "", labelled, None, f"waiting {check.label_delay} (labelDelay) for labels")
    if canary is None or stable is None or min(canary.labelled, stable.labelled) < check.min_labels:
        counts = f"canary {labelled}, stable {stable.labelled if stable else 0}"
        return _result(
            name, None, "", labelled, None, f"not enough labels yet: {counts}, {check.min_labels} needed per arm"
        )
    if check.metric == "accuracy":
        mine, theirs = canary.accuracy or 0.0, stable.accuracy or 0.0
        limit, ok = theirs - tolerance, mine >= theirs - tolerance
        p_value = accuracy_drop_p_value(canary, stable, tolerance)
        threshold = f">= {limit:.4f} (stable {theirs:.4f} - {tolerance})"
    else:
        mine, theirs = canary.mae or 0.0, stable.mae or 0.0
        limit, ok = theirs + tolerance, mine <= theirs + tolerance
        p_value = mae_rise_p_value(canary, stable, tolerance)
        threshold = f"<= {limit:.4f} (stable {theirs:.4f} + {tolerance})"
    if ok:
        return _result(name, mine, threshold, labelled, True, f"stable n={stable.labelled}")
    if p_value < check.significance:
        return _result(
            name, mine, threshold, labelled, False, f"worse than stable (p={p_value:.4f}, n={stable.labelled})"
        )
    return _result(name, mine, threshold, labelled, None, f"not significant yet (p={p_value:.3f}): waiting for labels")


def run_checks(
    analysis: Analysis,
    evidence: Evidence,
    canary_weight: int,
    *,
    labels_due: bool = True,
    drift_policy: DriftPolicy | None = None,
) -> list[CheckResult]:
    canary, stable = evidence.canary, evidence.stable
    compare = _stable_usable(stable, analysis.min_requests)
    skip_relative = canary_weight >= 100
    results: list[CheckResult] = []

    rate = canary.error_rate
    limit = analysis.error_rate.max
    results.append(_result("error-rate", rate, f"<= {limit}", canary.requests, None if rate is None else rate <= limit))
    if analysis.error_rate.max_increase is not None and not skip_relative:
        increase = None
        if compare and rate is not None and stable is not None and stable.error_rate is not None:
            increase = rate - stable.error_rate
        bound = analysis.error_rate.max_increase
        results.append(
            _result(
                "error-rate-increase",
                increase,
                f"<= {bound}",
                canary.requests,
                None if increase is None else increase <= bound,
                "" if compare else "stable arm has too little traffic to compare",
            )
        )

    if analysis.latency is not None:
        p95 = canary.latency_p95
        cap = analysis.latency.p95_max_seconds
        # At the histograms' top bucket the p95 is that bound or anything past it: no cap at or over it is shown met.
        past_top = p95 is not None and p95 >= LATENCY_TOP_SECONDS
        met = None if p95 is None else p95 <= cap and not past_top
        note = f"p95 at or past {LATENCY_TOP_SECONDS:g}s, the top of the duration buckets" if past_top else ""
        results.append(_result("latency-p95", p95, f"<= {cap}s", canary.requests, met, note))
        ratio_cap = analysis.latency.max_increase_ratio
        if ratio_cap is not None and not skip_relative:
            ratio = None
            if compare and p95 is not None and stable is not None and stable.latency_p95:
                ratio = p95 / stable.latency_p95
            within = None if ratio is None else ratio <= ratio_cap
            if within and past_top:  # a lower bound of the ratio: under the cap says nothing
                within, ratio = None, None
            results.append(_result("latency-p95-ratio", ratio, f"<= {ratio_cap}", canary.requests, within, note))

    if analysis.prediction_shift is not None and not skip_relative:
        shift = analysis.prediction_shift
        predictions = sum(canary.class_counts.values())
        distance = None
        verdict: bool | None = None
        note = ""
        # Stable's counts may all be 0 (its classes published, none predicted in the interval): nothing to compare.
        stable_predicted = sum(stable.class_counts.values()) if stable is not None else 0
        if compare and stable is not None and predictions >= max(1, analysis.min_requests) and stable_predicted > 0:
            measure = population_stability_index if shift.method == "PSI" else jensen_shannon_distance
            distance = measure(stable.class_counts, canary.class_counts)
            p_value = homogeneity_p_value(stable.class_counts, canary.class_counts)
            if distance <= shift.max:
                verdict = True
            elif p_value < SHIFT_SIGNIFICANCE:
                verdict = False
            else:  # over the line, but small samples of one distribution look that different by chance
                note = f"not significant yet (chi-square p={p_value:.3f}): waiting for more predictions"
        results.append(
            _result(
                f"prediction-shift-{shift.method.lower()}",
                distance,
                f"<= {shift.max}",
                predictions,
                verdict,
                note,
            )
        )

    if analysis.data_drift is not None:
        results.append(data_drift_check(analysis.data_drift, canary.drift, drift_policy or DriftPolicy()))

    if analysis.accuracy is not None and not skip_relative:
        quality = stable.quality if stable is not None else None
        results.append(quality_check(analysis.accuracy, canary.quality, quality, labels_due))

    for custom in analysis.custom:
        value = evidence.custom.get(custom.name)
        bounds = []
        if custom.min is not None:
            bounds.append(f">= {custom.min}")
        if custom.max is not None:
            bounds.append(f"<= {custom.max}")
        ok = None
        if value is not None:
            ok = (custom.min is None or value >= custom.min) and (custom.max is None or value <= custom.max)
        results.append(_result(custom.name, value, " and ".join(bounds), canary.requests, ok))
    return results

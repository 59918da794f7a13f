"""Prediction-shift calibration: how often the check fails a good canary, per analysis.

A canary that predicts the same class mix as stable should fail the prediction-shift check in at most 1 % of
analyses (its chi-square significance gate, `checks.SHIFT_SIGNIFICANCE`), young canaries included. Exporters
play stable at 80 % and a fresh canary revision at 20 % of each model's traffic, the same mix for both, and a
real Prometheus scrapes them every second; every interval the operator's own provider (`PrometheusProvider`)
gathers the evidence and the core's `run_checks` judges it. Each canary revision serves a few analyses and
is replaced by a new one, so first windows, where series are young, are a fair share of the count.
Run with `make bench`; writes `benchmarks/results/shift.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from esteira.api.spec import ModelDeploymentSpec
from esteira.evidence.prometheus import PrometheusClient, PrometheusProvider
from esteira.rollout.checks import SHIFT_SIGNIFICANCE, run_checks
from tests.bench.results import record
from tests.support.cluster import eventually
from tests.support.model_exporter import ArmProfile, ModelExporter
from tests.support.prometheus_server import PrometheusServer
from tests.support.scratch import scratch
from tests.support.specs import model, spec

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "shift-bench"
CANARY_WEIGHT = 20
ANALYSES_PER_CANARY = 4
CHECK = "prediction-shift-jensenshannon"
MIN_PREDICTIONS = 10  # analysis.minRequests: below it the check does not test


def class_mix(classes: int) -> ArmProfile:
    """Iris's three even classes, or a long tail of `classes` (shares falling as 1/rank), as an image
    classifier's would be: most of them rare in a canary's first windows."""
    if classes == 3:
        return ArmProfile()
    shares = [1 / rank for rank in range(1, classes + 1)]
    return ArmProfile(classes={f"class-{i}": share / sum(shares) for i, share in enumerate(shares)})


def analysed(name: str, interval: int) -> ModelDeploymentSpec:
    analysis = {"minRequests": MIN_PREDICTIONS, "predictionShift": {"method": "JensenShannon", "max": 0.2}}
    body = spec(model=model(name=name), rollout={"interval": f"{interval}s", "analysis": analysis})
    return ModelDeploymentSpec.parse(body)


async def judge(
    provider: PrometheusProvider, specs: dict[str, ModelDeploymentSpec], canaries: dict[str, int]
) -> list[Any]:
    """One analysis of every model's current canary: the prediction-shift check's result for each."""
    evidence = await asyncio.gather(
        *(provider.collect(NAMESPACE, name, specs[name], 1, canaries[name]) for name in specs)
    )
    results = [
        run_checks(target.rollout.analysis, one, CANARY_WEIGHT)
        for target, one in zip(specs.values(), evidence, strict=True)
    ]
    return [next(r for r in checks if r.name == CHECK) for checks in results]


def run(models: int, interval: int, rate: float, classes: int, seconds: float) -> dict[str, Any]:
    names = [f"model-{i:02d}" for i in range(models)]
    specs = {name: analysed(name, interval) for name in names}
    with ExitStack() as stack:
        work = stack.enter_context(scratch("esteira-shift-bench-"))  # left last: the servers stop first
        exporters = {name: ModelExporter(NAMESPACE, name, rate=rate, seed=i).start() for i, name in enumerate(names)}
        for exporter in exporters.values():
            stack.callback(exporter.stop)
            exporter.set_arm(1, 1.0, class_mix(classes))
        prometheus = PrometheusServer(work, [f"127.0.0.1:{e.port}" for e in exporters.values()]).start()
        stack.callback(prometheus.stop)
        eventually(
            lambda: (
                len(prometheus.query(f'esteira_requests_total{{Revision="1",outcome="ok"}}[{interval}s]')) == models
            ),
            timeout=60,
            what="stable scraped",
        )
        time.sleep(interval)  # a whole interval of stable traffic before the first canary
        provider = PrometheusProvider(PrometheusClient(prometheus.url))
        canaries = dict.fromkeys(names, 1)
        verdicts: list[str] = []
        sizes: list[int] = []
        deadline = time.monotonic() + seconds
        analyses = 0
        while time.monotonic() < deadline:
            if analyses % ANALYSES_PER_CANARY == 0:  # a new canary revision, its series born now at zero
                for name, exporter in exporters.items():
                    exporter.set_arm(canaries[name], 0.0 if canaries[name] > 1 else 1 - CANARY_WEIGHT / 100)
                    canaries[name] += 1
                    exporter.set_arm(canaries[name], CANARY_WEIGHT / 100, class_mix(classes))
            time.sleep(interval)  # the analysis cadence itself, as the operator's interval
            for result in asyncio.run(judge(provider, specs, canaries)):
                verdicts.append(result.verdict)
                sizes.append(result.sample_size)
            analyses += 1
    # Under one class mix a Fail (over the line and p < significance) has at most that probability in every
    # analysis the test ran in, whether the others passed or waited (over the line, not significant).
    tested = [v for v, n in zip(verdicts, sizes, strict=True) if n >= MIN_PREDICTIONS]
    failed = tested.count("Fail")
    result = {
        "interval_seconds": interval,
        "requests_per_second": rate,
        "canary_weight": CANARY_WEIGHT,
        "classes": classes,
        "significance": SHIFT_SIGNIFICANCE,
        "analyses": len(verdicts),
        "tested": len(tested),
        "passed": tested.count("Pass"),
        "waiting": tested.count("NoData"),
        "failed": failed,
        "failed_share": round(failed / len(tested), 4) if tested else None,
        "canary_predictions_p50": statistics.median(sizes) if sizes else None,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--interval", type=int, default=3, help="rollout.interval in seconds")
    parser.add_argument("--rate", type=float, default=60.0, help="each model's requests a second")
    parser.add_argument("--classes", type=int, default=3, help="3: even, as iris; more: a long tail")
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "shift.json")
    args = parser.parse_args()
    record(run(args.models, args.interval, args.rate, args.classes, args.seconds), args.out)


if __name__ == "__main__":
    main()

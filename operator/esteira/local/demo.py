"""`python -m esteira.local.demo`: two rollouts on this machine, driven by the operator's rollout engine.

The iris model 1.0.0 serves; the same good build as version 1.0.1 rolls out and must be promoted; the
worse 1.1.0 (it mistakes most virginica for versicolor) rolls out and must be rolled back on the
prediction-shift check. A load generator sends iris-like traffic throughout. Exits 1 unless the outcomes
are exactly promoted, then rolled back.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from esteira.local.loadgen import LoadGenerator, request_rows
from esteira.local.manifest import write_whole
from esteira.local.runtime import Event, LocalRuntime
from esteira.local.server import free_port

MANIFEST = """\
apiVersion: serving.esteira.io/v1alpha1
kind: ModelDeployment
metadata: {{name: iris, namespace: demo}}
spec:
  model: {{name: iris, version: "{version}", storageUri: "{uri}", protocol: v1}}
  batching: {{maxBatchSize: 8, maxBatchDelayMs: 5}}
  rollout:
    strategy: Canary
    steps: [20, 50, 100]
    interval: {interval}
    threshold: 1
    analysis:
      minRequests: 20
      lowTrafficDeadline: 1m
      errorRate: {{max: 0.05}}
      latency: {{p95MaxSeconds: 2.0}}
      predictionShift: {{method: JensenShannon, max: 0.1}}
"""
TIMELINE_REASONS = {
    "Started",
    "RevisionCreated",
    "ServerReady",
    "SpecChanged",
    "CanaryCreated",
    "StepAdvanced",
    "AnalysisPassed",
    "AnalysisFailed",
    "MetricsUnavailable",
    "Promoted",
    "RolledBack",
    "ServerCrashed",
    "Stopped",
}


def write_manifest(path: Path, version: str, folder: Path, interval: str = "5s") -> None:
    write_whole(path, MANIFEST.format(version=version, uri=folder.resolve().as_uri(), interval=interval))


async def wait_outcome(runtime: LocalRuntime, revision: int, within: float) -> str | None:
    """The outcome of revision `revision`'s rollout, once it has one (None after `within` seconds)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        last = runtime.status.last_rollout
        if last is not None and last.revision == revision:
            return last.outcome
        await asyncio.sleep(0.5)
    return None


async def run_demo(models: Path, requests: Path | None, workdir: Path) -> tuple[list[str | None], list[Event]]:
    manifest = workdir / "iris.yaml"
    write_manifest(manifest, "1.0.0", models / "iris-1.0.0")
    runtime = LocalRuntime(manifest, port=free_port(), workdir=workdir / "run")
    stop = asyncio.Event()
    load = LoadGenerator(runtime.url, "iris", extra_rows=request_rows(requests))
    outcomes: list[str | None] = []
    try:
        await runtime.start()
        load.start()
        ticking = asyncio.create_task(runtime.run(stop))
        runtime.say("Demo", "rolling out the same good build as version 1.0.1: expect Promoted")
        write_manifest(manifest, "1.0.1", models / "iris-1.0.0")
        outcomes.append(await wait_outcome(runtime, 2, 150))
        runtime.say("Demo", "rolling out the worse build 1.1.0: expect RolledBack")
        write_manifest(manifest, "1.1.0", models / "iris-1.1.0")
        outcomes.append(await wait_outcome(runtime, 3, 150))
        stop.set()
        await ticking
        runtime.say("Demo", f"load: {dict(load.statuses)} by HTTP status, {dict(load.revisions)} by revision")
    finally:
        stop.set()
        await load.stop() if load._tasks else None
        await runtime.stop()
    return outcomes, runtime.timeline


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esteira.local.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("build/models"), help="Packaged models (make models).")
    parser.add_argument("--requests", type=Path, default=Path("build/demo/requests/iris-v1.json"))
    args = parser.parse_args(argv)
    for version in ("1.0.0", "1.1.0"):
        if not (args.models / f"iris-{version}" / "config" / "config.properties").is_file():
            print(f"{args.models}/iris-{version} is missing: run `make models` first", file=sys.stderr)
            return 2
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="esteira-demo-") as scratch:
        outcomes, timeline = asyncio.run(run_demo(args.models, args.requests, Path(scratch)))
    print("\nTimeline of decisions:")
    for event in timeline:
        if event.reason in TIMELINE_REASONS or event.reason == "Demo":
            print(f"  {event.at}  {event.reason:<18} {event.message}")
    elapsed = time.monotonic() - started
    ok = outcomes == ["Promoted", "RolledBack"]
    print(
        f"\nOutcomes: revision 2 (1.0.1) {outcomes[0] if outcomes else None}, revision 3 (1.1.0) "
        f"{outcomes[1] if len(outcomes) > 1 else None}; {elapsed:.0f}s. {'As expected.' if ok else 'NOT as expected.'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

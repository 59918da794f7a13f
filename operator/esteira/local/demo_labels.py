"""`python -m esteira.local.demo_labels`: a canary rolled back because its labelled accuracy is lower.

iris 1.0.0 serves; the worse 1.1.0 rolls out with only the delayed-label accuracy check. Clients send iris
rows with an `x-request-id`; the truth for each request reaches the built-in collector `--label-delay`
seconds later, in shuffled order, as labels do when people or downstream systems provide them. The step
waits for labels, compares both arms' accuracy on the same window with a significance test, and rolls the
canary back. Exits 1 unless revision 2 is rolled back on the accuracy check.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from esteira.local.demo import wait_outcome
from esteira.local.manifest import write_whole
from esteira.local.runtime import LocalRuntime
from esteira.local.server import free_port
from esteira.vocabulary import COLLECTOR_LABELS_PATH, REQUEST_ID_HEADER

MANIFEST = """\
apiVersion: serving.esteira.io/v1alpha1
kind: ModelDeployment
metadata: {{name: iris, namespace: demo}}
spec:
  model: {{name: iris, version: "{version}", storageUri: "{uri}", protocol: v1}}
  logging: {{mode: all, sampleRate: 1.0, redact: ["petal width (cm)"]}}
  rollout:
    steps: [50, 100]
    interval: 5s
    threshold: 1
    analysis:
      minRequests: 20
      lowTrafficDeadline: 2m
      accuracy: {{metric: accuracy, tolerance: 0.02, minLabels: 40, significance: 0.01, labelDelay: {delay}s}}
"""


def write_manifest(path: Path, version: str, folder: Path, delay: int) -> None:
    write_whole(path, MANIFEST.format(version=version, uri=folder.resolve().as_uri(), delay=delay))


class LabelledTraffic:
    """Requests with known truth; labels follow `delay` seconds later, out of order."""

    def __init__(self, url: str, collector: str, delay: float, seed: int = 11) -> None:
        from sklearn.datasets import load_iris  # bundled with scikit-learn: no download

        iris = load_iris()
        self.rows = [
            ([float(v) for v in x], str(iris.target_names[y])) for x, y in zip(iris.data, iris.target, strict=True)
        ]
        self.url, self.collector, self.delay = url, collector, delay
        self.rng = random.Random(seed)
        self.pending: list[tuple[float, str, str]] = []  # (sent at, request id, truth)
        self.sent = self.labelled = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(*(self._client(session) for _ in range(3)), self._labeller(session))

    def stop(self) -> None:
        self._stop.set()

    async def _client(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            row, truth = self.rng.choice(self.rows)
            request_id = uuid.uuid4().hex
            try:
                async with session.post(
                    f"{self.url}/v1/models/iris:predict",
                    json={"instances": [row]},
                    headers={REQUEST_ID_HEADER: request_id},
                ) as response:
                    await response.read()
                    if response.status == 200:
                        self.pending.append((time.monotonic(), request_id, truth))
                        self.sent += 1
            except aiohttp.ClientError:
                pass  # a server restarting: the next request tries again
            await asyncio.sleep(0.02)

    async def _labeller(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(1.0)
            now = time.monotonic()
            due = [p for p in self.pending if now - p[0] >= self.delay]
            self.pending = [p for p in self.pending if now - p[0] < self.delay]
            self.rng.shuffle(due)
            if not due:
                continue
            labels = [
                {"deployment": "iris", "namespace": "demo", "requestId": rid, "label": truth} for _, rid, truth in due
            ]
            try:
                async with session.post(self.collector + COLLECTOR_LABELS_PATH, json=labels) as response:
                    if response.status == 200:
                        self.labelled += len(labels)
            except aiohttp.ClientError:
                self.pending.extend(due)  # try again next round


async def run_demo(models: Path, workdir: Path, delay: int) -> tuple[str | None, LocalRuntime]:
    manifest = workdir / "iris.yaml"
    write_manifest(manifest, "1.0.0", models / "iris-1.0.0", delay)
    runtime = LocalRuntime(manifest, port=free_port(), workdir=workdir / "run")
    stop = asyncio.Event()
    outcome = None
    try:
        await runtime.start()
        traffic = LabelledTraffic(runtime.url, runtime.collector.url, delay)
        sending = asyncio.create_task(traffic.run())
        ticking = asyncio.create_task(runtime.run(stop))
        runtime.say("Demo", f"rolling out the worse build 1.1.0; labels arrive {delay}s late: expect RolledBack")
        write_manifest(manifest, "1.1.0", models / "iris-1.1.0", delay)
        outcome = await wait_outcome(runtime, 2, 240)
        traffic.stop()
        stop.set()
        await asyncio.gather(sending, ticking)
        runtime.say("Demo", f"{traffic.sent} requests answered, {traffic.labelled} labels sent")
    finally:
        stop.set()
        await runtime.stop()
    return outcome, runtime


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esteira.local.demo_labels", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("build/models"), help="Packaged models (make models).")
    parser.add_argument("--label-delay", type=int, default=10, help="Seconds before each request's label arrives.")
    args = parser.parse_args(argv)
    for version in ("1.0.0", "1.1.0"):
        if not (args.models / f"iris-{version}" / "config" / "config.properties").is_file():
            print(f"{args.models}/iris-{version} is missing: run `make models` first", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="esteira-demo-labels-") as scratch:
        outcome, runtime = asyncio.run(run_demo(args.models, Path(scratch), args.label_delay))
    print("\nTimeline of decisions:")
    for event in runtime.timeline:
        if event.reason in (
            "Started",
            "Demo",
            "StepAdvanced",
            "AnalysisPassed",
            "AnalysisFailed",
            "RolledBack",
            "Promoted",
        ):
            print(f"  {event.at}  {event.reason:<16} {event.message}")
    last = runtime.status.last_rollout
    ok = outcome == "RolledBack" and last is not None and "accuracy" in last.reason
    print(f"\nRevision 2 (1.1.0): {outcome}. {'As expected.' if ok else 'NOT as expected.'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

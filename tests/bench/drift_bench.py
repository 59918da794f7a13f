"""`make bench`: what drift counting costs the handler, and how long a shift takes to be detected.

Handler overhead: `TabularHandler.handle` called in this process (no TorchServe, no HTTP) on one-instance
requests, with a real `ts` metrics cache whose metric lines are formatted as the worker formats them, for a
linear model with 10, 50 and 200 features, without and with a reference profile beside it, their runs
alternating. The difference is what counting costs per request; the HTTP path adds the same absolute time on
top of a larger total.

Detection delay: a pure simulation with the core (`esteira.drift.evaluate`): requests arrive at a fixed rate
with every feature shifted by a known number of reference standard deviations; the operator evaluates every
`interval` over a trailing `window`; the delay is the time from the shift to the first evaluation whose dataset
verdict is Drifted, under the documented default policy. The rate, not the clock, is what it depends on.
"""

from __future__ import annotations

import io
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

import model_handlers
from esteira.drift.evaluate import DriftPolicy, DriftWindow, evaluate
from esteira.drift.profile import PROFILE_FILE, ReferenceProfile, numeric_feature
from model_handlers.tabular import TabularHandler
from tests.handlers.models import save_torchscript, write_config

REQUESTS = 1000
FEATURE_COUNTS = (10, 50, 200)
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "drift.md"


def _profile(features: int, rng: random.Random, rows: int = 2000) -> ReferenceProfile:
    columns = [[rng.gauss(0, 1) for _ in range(rows)] for _ in range(features)]
    return ReferenceProfile(rows=rows, features=[numeric_feature(f"f{i}", c, rows) for i, c in enumerate(columns)])


def _context(directory: Path, name: str) -> Context:
    cache = MetricsCacheYamlImpl(config_file_path=str(model_handlers.metrics_config()))
    cache.initialize_cache()
    cache.model_name = name
    manifest = {"model": {"modelName": name, "modelVersion": "1.0", "serializedFile": "model.pt"}}
    context = Context(name, str(directory), manifest, 1, None, "0.12.0", metrics=cache, model_yaml_config={})
    context.request_processor = [RequestProcessor({"body": {"content-type": "application/json"}})]
    context.request_ids = {0: "bench"}
    cache.set_request_ids(context.request_ids)
    return context


ROUNDS = 9


def _served(root: Path, features: int, with_profile: bool) -> tuple[TabularHandler, Context]:
    """A handler for a linear model with ``features`` inputs, with a reference profile beside it or not."""
    name = f"m{features}{'p' if with_profile else ''}"
    directory = root / name
    directory.mkdir()
    save_torchscript(nn.Linear(features, 3), directory / "model.pt")
    names = [f"f{i}" for i in range(features)]
    write_config(directory, {"kind": "tabular", "feature_names": names, "labels": ["a", "b", "c"]})
    if with_profile:
        (directory / PROFILE_FILE).write_text(_profile(features, random.Random(features)).to_json())
    handler = TabularHandler()
    context = _context(directory, name)
    handler.initialize(context)
    assert (handler.drift is not None) == with_profile
    return handler, context


def _run(handler: TabularHandler, context: Context, bodies: list[list[dict[str, Any]]]) -> float:
    """Microseconds per request of one run, with the metrics write that bins the run's held drift values."""
    started = time.perf_counter()
    for body in bodies:
        handler.handle(body, context)
    handler.metric_buffer.flush()
    return (time.perf_counter() - started) / len(bodies) * 1e6


def handler_microseconds(root: Path, features: int) -> tuple[float, float, float]:
    """(drift off, drift on, added) in microseconds per request: runs of REQUESTS one-instance requests, the
    two handlers alternating round by round (every other round in reverse), so a swing of the machine's speed
    falls on both; medians of the runs and of each round's difference."""
    rng = random.Random(features)
    bodies = [[{"body": [[rng.gauss(0, 1) for _ in range(features)]]}] for _ in range(REQUESTS)]
    off, on = _served(root, features, with_profile=False), _served(root, features, with_profile=True)
    runs: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(ROUNDS):
        for with_profile in (False, True) if round_ % 2 == 0 else (True, False):
            runs[with_profile].append(_run(*(on if with_profile else off), bodies))
    added = statistics.median(b - a for a, b in zip(runs[False], runs[True], strict=True))
    return statistics.median(runs[False]), statistics.median(runs[True]), added


def _bins(profile: ReferenceProfile, rows: list[list[float]]) -> dict[str, dict[str, float]]:
    current: dict[str, dict[str, float]] = {}
    for index, feature in enumerate(profile.features):
        assert feature.type == "numeric"
        counts = current.setdefault(feature.name, dict.fromkeys(feature.labels, 0.0))
        for row in rows:
            counts[feature.labels[feature.bin_of(row[index])]] += 1
    return current


def detection_delay(rate: float, shift: float, window_s: int = 600, interval_s: int = 60, features: int = 5) -> float:
    """Seconds from a shift of `shift` standard deviations on every feature to a Drifted verdict."""
    rng = random.Random(int(rate * 100 + shift * 10))
    profile = _profile(features, rng)
    reference = {f.name: dict(zip(f.labels, map(float, f.counts), strict=True)) for f in profile.features}
    before = [[rng.gauss(0, 1) for _ in range(features)] for _ in range(int(rate * window_s))]
    after: list[list[float]] = []
    for tick in range(1, 200):
        after += [[rng.gauss(shift, 1) for _ in range(features)] for _ in range(int(rate * interval_s))]
        recent = (before + after)[-int(rate * window_s) :]
        window = DriftWindow(reference=reference, current=_bins(profile, recent), instances=len(recent))
        if evaluate(window, DriftPolicy()).verdict == "Drifted":
            return float(tick * interval_s)
    return float("inf")


def main() -> None:
    metrics = logging.getLogger("ts.metrics.caching_metric")
    metrics.setLevel(logging.INFO)
    metrics.addHandler(logging.StreamHandler(io.StringIO()))  # the lines are formatted, as in the worker
    metrics.propagate = False
    torch.set_num_threads(1)
    lines = ["# Drift monitoring: handler overhead and detection delay", "", "Produced by `make bench`", ""]
    lines += [
        f"## Handler overhead per request (in-process `handle()`, one instance per request; {ROUNDS} runs of "
        f"{REQUESTS:,} each, with and without a profile alternating, each run ending with the metrics write that "
        "bins its drift values; medians, and the median of each round's difference)",
        "",
        "| features | drift off (us) | drift on (us) | added (us) |",
        "| ---: | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        for features in FEATURE_COUNTS:
            off, on, added = handler_microseconds(Path(scratch), features)
            lines.append(f"| {features} | {off:.0f} | {on:.0f} | {added:.0f} |")
    lines += [
        "",
        "## Detection delay (simulated with the core; window 10 min, evaluated every minute, default policy)",
        "",
        "| requests/s | shift (reference std) | delay (s) |",
        "| ---: | ---: | ---: |",
    ]
    for rate in (0.5, 2.0, 10.0):
        for shift in (0.25, 0.5, 1.0):
            delay = detection_delay(rate, shift)
            lines.append(f"| {rate} | {shift} | {'not within 200 min' if delay == float('inf') else f'{delay:.0f}'} |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()

"""Drift counting in the handler: bins and violations against a direct numpy computation, the series cap,
and the metrics a handler with a reference profile emits."""

from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from esteira.drift.profile import PROFILE_FILE, ReferenceProfile, categorical_feature, category_of, numeric_feature
from esteira.packaging.profiling import ProfileRequest, build_profile
from model_handlers.config import parse_config
from model_handlers.drift import ARRAY_VALUES, DriftCounter
from model_handlers.inprocess import PrometheusMetrics
from model_handlers.metrics import MetricBuffer
from model_handlers.protocol import Identity
from model_handlers.tabular import TabularHandler
from tests.handlers import models
from tests.handlers.conftest import ContextFactory, ModelDir, Recorded, json_headers, make_model_dir
from tests.handlers.test_handler import Recording

METRICS_LOGGER = "ts.metrics.caching_metric"
IDENTITY = Identity("m", "1", "3")


def observe(counter: DriftCounter, cache: Any, batch: torch.Tensor, config: Any, buffer: MetricBuffer) -> None:
    """What the handler does with a batch: a snapshot before the forward pass, held once it was answered."""
    values = counter.snapshot(batch, config)
    assert values is not None
    counter.observe(cache, values, None, config, buffer)


def _profile(rng: np.random.Generator, columns: int, rows: int = 2000) -> tuple[ReferenceProfile, np.ndarray]:
    data = rng.normal(size=(rows, columns)) * (1 + np.arange(columns))
    features = [numeric_feature(f"f{i}", data[:, i].tolist(), rows) for i in range(columns)]
    return ReferenceProfile(rows=rows, features=features), data


def test_bin_counts_match_a_direct_computation() -> None:
    rng = np.random.default_rng(7)
    profile, _ = _profile(rng, 5)
    counter = DriftCounter(profile, [f"f{i}" for i in range(5)], IDENTITY, cap=4096)
    live = rng.normal(loc=0.4, size=(3000, 5)) * 2
    bins, violations = counter.count(live.tolist())
    for i, feature in enumerate(profile.features):
        assert feature.type == "numeric"
        # bin i holds (edges[i-1], edges[i]]: numpy's searchsorted with side="left" gives the same index
        direct = np.bincount(np.searchsorted(feature.edges, live[:, i], side="left"), minlength=len(feature.labels))
        assert [bins[(feature.name, label)] for label in feature.labels] == direct.tolist()
        outside = int(((live[:, i] < feature.min) | (live[:, i] > feature.max)).sum())
        assert violations[(feature.name, "out_of_range")] == outside


def test_categories_missing_values_and_unknown_categories() -> None:
    profile = ReferenceProfile(
        rows=4,
        features=[categorical_feature("colour", ["1", "2", "2", "3"], 4), numeric_feature("x", [0.0, 1.0, 2.0], 4)],
    )
    counter = DriftCounter(profile, ["colour", "x"], IDENTITY, cap=4096)
    bins, violations = counter.count([[2.0, 0.5], [7.0, float("nan")], [1.0, 5.0]])
    assert bins[("colour", "=2")] == 1 and bins[("colour", "=1")] == 1 and bins[("colour", "*")] == 1
    assert violations == {("colour", "unknown_category"): 1, ("x", "missing"): 1, ("x", "out_of_range"): 1}
    assert category_of(2.0) == "2" and category_of(2.5) == "2.5"


@pytest.mark.parametrize("rows", [4, ARRAY_VALUES], ids=["value-by-value", "arrays"])
def test_the_reference_data_sent_through_a_float32_tensor_is_counted_as_the_reference(
    rows: int, tmp_path: Path
) -> None:
    """`esteira profile` reads a CSV's decimals; the values counted come from the model's float32 input: a value at
    the reference's maximum, on a bin edge or a fractional category is where the reference put it."""
    values = [0.1, 0.2, 0.2, 2.2, 3.3, 6.9] * rows
    codes = ["1.1", "2", "1.1", "2", "1.1", "2"] * rows
    csv = tmp_path / "reference.csv"
    csv.write_text("x,code\n" + "".join(f"{v},{c}\n" for v, c in zip(values, codes, strict=True)))
    profile = build_profile(ProfileRequest(path=csv, categorical=frozenset({"code"}), bins=3))
    counter = DriftCounter(profile, ["x", "code"], IDENTITY, cap=4096)
    served = torch.tensor([[v, float(c)] for v, c in zip(values, codes, strict=True)], dtype=torch.float32)
    bins, violations = counter.count(counter.rows(served, parse_config({"kind": "tabular", "n_features": 2})))
    assert violations == {}, "no value of the reference itself is out of range or an unknown category"
    x, code = profile.features
    assert [bins[("x", label)] for label in x.labels] == x.counts
    assert [bins[("code", label)] for label in code.labels] == code.counts


def test_the_series_cap_leaves_out_whole_features_in_profile_order() -> None:
    profile, _ = _profile(np.random.default_rng(1), 30)
    per_feature = len(profile.features[0].labels)
    counter = DriftCounter(profile, [f"f{i}" for i in range(30)], IDENTITY, cap=per_feature * 10 + 3)
    assert len(counter.tracked) == 10 and counter.left_out[0] == "f10" and len(counter.left_out) == 20
    assert counter.series <= per_feature * 10 + 3


def test_series_stay_bounded_and_memory_flat_over_a_long_stream() -> None:
    rng = np.random.default_rng(3)
    profile, _ = _profile(rng, 50)
    counter = DriftCounter(profile, [f"f{i}" for i in range(50)], IDENTITY, cap=4096)
    seen: set[tuple[str, str]] = set()
    for step in range(200):  # 200 batches of 64 rows, drifting further and further
        bins, violations = counter.count((rng.normal(loc=step / 20, size=(64, 50)) * 5).tolist())
        seen |= set(bins) | set(violations)
    assert len(seen) <= counter.series + 50 * 2  # bins, plus two violation kinds per feature
    fixed = {"profile", "base", "tracked", "left_out", "series", "names", "slots", "slot_bins", "tally"}
    fixed |= {"numeric", "categorical", "instances_slot", "slot_violations", "capped_slot"}
    assert counter.__dict__.keys() == fixed | {"_warned"}  # nothing that grows with the stream
    assert len(counter.tally.series) == counter.series + 1 + 50 * 2  # bins, instances, violations: fixed
    assert counter.tally.take() == (None, {})  # count() leaves the tally alone
    assert counter.names.keys() == {feature.name for _, feature, _ in counter.tracked}


def _tabular_with_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelDir:
    monkeypatch.setenv("ESTEIRA_REVISION", "4")
    model_dir = make_model_dir(tmp_path, "drifty", models.tabular_classifier(), models.TABULAR_CONFIG)
    rng = np.random.default_rng(11)
    profile, _ = _profile(rng, len(models.FEATURES))
    renamed = [f.model_copy(update={"name": name}) for f, name in zip(profile.features, models.FEATURES, strict=True)]
    (model_dir.path / PROFILE_FILE).write_text(profile.model_copy(update={"features": renamed}).to_json())
    return model_dir


def _metric_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Each metric line the handler wrote (one log record carries a handler call's lines)."""
    return [line for r in caplog.records if r.name == METRICS_LOGGER for line in r.getMessage().splitlines()]


def _total(lines: list[str], name: str, **labels: str) -> float:
    pattern = re.compile(rf"\[METRICS\]{name}\.\w+:([0-9.]+)\|#([^|]*)\|")
    total = 0.0
    for line in lines:
        match = pattern.search(line)
        if match and all(f"{k}:{v}" in match.group(2).split(",") for k, v in labels.items()):
            total += float(match.group(1))
    return total


def test_a_handler_with_a_profile_counts_its_inputs(
    tmp_path: Path, make_context: ContextFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = _tabular_with_profile(tmp_path, monkeypatch)
    with caplog.at_level(logging.INFO, logger=METRICS_LOGGER):
        handler = TabularHandler()
        handler.initialize(make_context(model_dir))
        published = _metric_lines(caplog)
        caplog.clear()
        rows: list[Any] = [{"body": [[0.1, 0.2, 0.3, 0.4], [9, 0, 0, 0]]}, {"body": b"[1,"}, {"body": [50, 5, 0, 0]}]
        handler.model = Recording(handler.model, nan_on=7.0)
        rows.append({"body": [[7, 1, 1, 1]]})  # read, then refused: the model's outputs are not finite
        context = make_context(model_dir, headers=json_headers(len(rows)))
        answers = handler.handle(rows, context)
    assert "non-finite" in answers[3]
    lines = _metric_lines(caplog)
    assert handler.drift is not None
    f0 = handler.drift.profile.features[0]
    assert _total(published, "esteira_drift_reference", feature="f0") == sum(f0.counts)
    assert _total(published, "esteira_drift_bin_total", feature="f0") == 0  # every series starts at zero
    assert _total(lines, "esteira_drift_instances_total", ModelName="drifty", Revision="4") == 3
    assert _total(lines, "esteira_drift_bin_total", feature="f0") == 3  # the refused requests are not counted
    assert _total(lines, "esteira_drift_bin_total", feature="f0", bin="+Inf") == 2  # 9 and 50 are above every edge
    assert _total(lines, "esteira_data_quality_violations_total", feature="f0", kind="out_of_range") >= 1


def test_an_image_handler_counts_brightness_and_contrast(tmp_path: Path) -> None:
    config = parse_config(models.IMAGE_CONFIG)
    profile = ReferenceProfile(
        rows=3,
        kind="image",
        features=[numeric_feature("brightness", [0.2, 0.5, 0.8], 3), numeric_feature("contrast", [0.1, 0.2, 0.3], 3)],
    )
    counter = DriftCounter(profile, ("brightness", "contrast"), IDENTITY, cap=100)
    pixels = torch.tensor([[[[0, 255], [0, 255]]], [[[51, 51], [51, 51]]]], dtype=torch.uint8)  # decoded, 0-255
    assert counter.rows(pixels, config).tolist() == [  # brightness and contrast in 0..1 units
        [pytest.approx(0.5), pytest.approx(0.5)],
        [pytest.approx(0.2), pytest.approx(0.0)],
    ]


def test_no_profile_means_no_counting(
    model_dirs: dict[str, ModelDir], make_context: ContextFactory, caplog: pytest.LogCaptureFixture
) -> None:
    handler = TabularHandler()
    with caplog.at_level(logging.INFO, logger="model_handlers.drift"):
        handler.initialize(make_context(model_dirs["tabular"]))
    assert handler.drift is None
    assert "drift and data quality are not counted" in caplog.text


def _direct_bins(profile: ReferenceProfile, live: np.ndarray) -> dict[tuple[str, str], int]:
    """Bin counts of ``live`` ([instances, features]) computed straight from the profile's edges."""
    counts: dict[tuple[str, str], int] = {}
    for i, feature in enumerate(profile.features):
        assert feature.type == "numeric"
        direct = np.bincount(np.searchsorted(feature.edges, live[:, i], side="left"), minlength=len(feature.labels))
        counts |= {(feature.name, label): int(n) for label, n in zip(feature.labels, direct, strict=True) if n}
    return counts


@pytest.mark.parametrize("instances", [1, ARRAY_VALUES])  # a step per value, and array operations
def test_bins_held_between_writes_are_written_once_per_series_with_every_batch_in_them(instances: int) -> None:
    """Bins are summed in one array between writes: nothing is written before the flush, then each touched
    series once, with the counts of every batch (against the direct computation)."""
    rng = np.random.default_rng(5)
    profile, _ = _profile(rng, 40)
    counter = DriftCounter(profile, [f"f{i}" for i in range(40)], IDENTITY, cap=4096)
    cache, buffer = Recorded(), MetricBuffer(3600.0)
    batches = [torch.tensor(rng.normal(size=(instances, 40)) * 3, dtype=torch.float32) for _ in range(5)]
    for batch in batches:
        config = parse_config(models.TABULAR_CONFIG)
        observe(counter, cache, batch, config, buffer)
    assert cache.updates == []
    buffer.flush()
    written = [(labels[2:], value) for name, value, labels in cache.updates if name == "esteira_drift_bin_total"]
    assert len(written) == len({series for series, _ in written})  # one update per series
    live = torch.cat(batches).double().numpy()
    assert dict(written) == _direct_bins(profile, live)
    counted = [value for name, value, _ in cache.updates if name == "esteira_drift_instances_total"]
    assert counted == [5 * instances]


def test_held_rows_are_counted_as_they_were_though_the_model_changes_its_input_in_place() -> None:
    """Rows are counted at the write, after the forward pass: a model that writes into its input tensor must
    not change what was counted."""
    rng = np.random.default_rng(3)
    profile, _ = _profile(rng, 4)
    counter = DriftCounter(profile, [f"f{i}" for i in range(4)], IDENTITY, cap=4096)
    cache, buffer = Recorded(), MetricBuffer(3600.0)
    batch = torch.tensor(rng.normal(size=(3, 4)) * 3, dtype=torch.float32)
    sent = batch.double().numpy().copy()
    config = parse_config(models.TABULAR_CONFIG)
    observe(counter, cache, batch, config, buffer)
    batch.fill_(1e6)  # what an in-place first layer might do
    buffer.flush()
    written = {labels[2:]: value for name, value, labels in cache.updates if name == "esteira_drift_bin_total"}
    assert written == _direct_bins(profile, sent)


@pytest.mark.parametrize("images", [3, 2000])  # held until the write, and counted early past DEFERRED_VALUES pixels
def test_images_held_between_writes_are_counted_by_their_statistics(images: int) -> None:
    """An image model's decoded pixels are held as they are and their statistics taken at the write (or once
    enough pixels are held): the counts are those of every image's brightness and contrast."""
    rng = np.random.default_rng(11)
    config = parse_config(models.IMAGE_CONFIG)
    # Edges no image statistic here can equal (a brightness is a whole number over 255 x its pixels): rounding
    # in the sums cannot move an image across one.
    values = [0.2011, 0.4013, 0.6017, 0.8019]
    features = [numeric_feature("brightness", values, 5), numeric_feature("contrast", [0.1011, 0.2013, 0.3017], 5)]
    profile = ReferenceProfile(rows=5, kind="image", features=features)
    counter = DriftCounter(profile, ("brightness", "contrast"), IDENTITY, cap=100)
    cache, buffer = Recorded(), MetricBuffer(3600.0)
    shape = (config.channels, *(config.image_size or (8, 8)))
    batches = [torch.from_numpy(rng.integers(0, 256, size=(1, *shape), dtype=np.uint8)) for _ in range(images)]
    for batch in batches:
        observe(counter, cache, batch, config, buffer)
    buffer.flush()
    flat = torch.cat(batches).reshape(images, -1).double().numpy()  # 0-255: scaled after, as the handler does
    live = np.stack([flat.mean(axis=1), flat.std(axis=1)], axis=1) / 255.0
    written: Counter[tuple[str, ...]] = Counter()
    for name, value, labels in cache.updates:
        if name == "esteira_drift_bin_total":
            written[tuple(labels[2:])] += int(value)
    assert {series: n for series, n in written.items() if n} == _direct_bins(profile, live)
    counted = sum(value for name, value, _ in cache.updates if name == "esteira_drift_instances_total")
    assert counted == images


def test_esteira_kserves_registry_shows_every_bin_count_when_scraped() -> None:
    """esteira-kserve's registry flushes the handler's buffer as it is scraped: a scrape right after the
    batches holds all of them, though the buffer's interval has not passed."""
    rng = np.random.default_rng(9)
    profile, _ = _profile(rng, 6)
    counter = DriftCounter(profile, [f"f{i}" for i in range(6)], IDENTITY, cap=4096)
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    buffer = MetricBuffer(3600.0)
    metrics.on_collect(buffer.flush)
    batches = [torch.tensor(rng.normal(size=(16, 6)) * 4, dtype=torch.float32) for _ in range(3)]
    for batch in batches:
        config = parse_config(models.TABULAR_CONFIG)
        observe(counter, metrics, batch, config, buffer)
    scraped = {
        (sample.labels["feature"], sample.labels["bin"]): int(sample.value)
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "esteira_drift_bin_total" and sample.value
    }
    assert scraped == _direct_bins(profile, torch.cat(batches).double().numpy())


def test_array_counting_agrees_with_a_step_per_value_on_mixed_features() -> None:
    """A batch above ``ARRAY_VALUES`` is counted with array operations: the same bins and violations as its
    rows counted one at a time (a Python step per value), with categories, missing values, values out of range
    and unknown categories among them."""
    rng = np.random.default_rng(21)
    numbers = rng.normal(size=500)
    profile = ReferenceProfile(
        rows=500,
        features=[
            numeric_feature("x", numbers.tolist(), 500),
            categorical_feature("colour", [str(c) for c in rng.integers(0, 4, size=500)], 500),
            numeric_feature("y", (numbers * 10).tolist(), 500),
        ],
    )
    counter = DriftCounter(profile, ["x", "colour", "y"], IDENTITY, cap=4096)
    batch = np.column_stack([rng.normal(size=200) * 2, rng.integers(0, 6, size=200), rng.normal(size=200) * 30])
    batch[::7, 0] = np.nan
    batch[::11, 1] = np.nan
    assert len(batch) * len(counter.tracked) > ARRAY_VALUES
    bins, violations = counter.count(batch.tolist())
    one_by_one = [counter.count([row]) for row in batch.tolist()]
    assert bins == sum((row_bins for row_bins, _ in one_by_one), Counter())
    assert violations == sum((row_violations for _, row_violations in one_by_one), Counter())
    assert {kind for _, kind in violations} == {"missing", "out_of_range", "unknown_category"}

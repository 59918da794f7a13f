"""Regressions: predicted classes named by index judged as categories, and profile bounds that hold the reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from esteira.drift.evaluate import DriftPolicy, DriftWindow, evaluate
from esteira.drift.profile import NumericFeature, numeric_feature
from esteira.packaging.profiling import ProfileRequest, build_profile

EXTREMES = [1.2345678, 2.0, 3.0, 9.8765432, -4.4444449]


def _every_four_now_five(classes: list[str]) -> DriftWindow:
    reference = dict.fromkeys(classes, 1000.0)
    current = reference | {classes[4]: 0.0, classes[5]: 2000.0}
    return DriftWindow(reference={}, current={}, reference_predictions=reference, predictions=current)


def test_classes_named_by_index_drift_like_named_classes() -> None:
    """The handler names classes "0", "1", …; they are categories, so a shift to the next class is not small."""
    by_index = evaluate(_every_four_now_five([str(i) for i in range(10)]), DriftPolicy()).prediction
    by_name = evaluate(_every_four_now_five([f"c{i}" for i in range(10)]), DriftPolicy()).prediction
    assert by_index is not None and by_name is not None
    assert (by_index.method, by_index.verdict) == ("JensenShannon", "Drift")
    assert by_index.score == by_name.score


def test_input_features_with_numeric_bins_are_still_judged_with_wasserstein() -> None:
    window = DriftWindow(
        reference={"x": {"1": 500, "2": 500, "+Inf": 0}},
        current={"x": {"1": 100, "2": 900, "+Inf": 0}},
        reference_predictions={"0": 50, "1": 50},
        predictions={"0": 500, "1": 500},
    )
    report = evaluate(window, DriftPolicy())
    assert report.features[0].method == "Wasserstein"
    assert report.prediction is not None and report.prediction.method == "JensenShannon"


def test_profile_bounds_hold_the_reference_and_stay_readable() -> None:
    feature = numeric_feature("x", EXTREMES, len(EXTREMES))
    assert (feature.min, feature.max) == (-4.44445, 9.87655)
    assert all(feature.min <= v <= feature.max for v in EXTREMES)
    assert (numeric_feature("x", [0.1, 0.3], 2).min, numeric_feature("x", [0.1, 0.3], 2).max) == (0.1, 0.3)


@given(st.lists(st.floats(-1e150, 1e150), min_size=1, max_size=20))  # beyond, the std itself overflows
def test_profile_bounds_never_cut_off_a_reference_value(values: list[float]) -> None:
    feature = numeric_feature("x", values, len(values))
    assert feature.min <= min(values) and max(values) <= feature.max
    assert math.isfinite(feature.min) and math.isfinite(feature.max)


def test_packaged_profile_bounds_hold_the_reference(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("x\n" + "".join(f"{v}\n" for v in EXTREMES))
    profile = build_profile(ProfileRequest(path=path))
    feature = profile.features[0]
    assert isinstance(feature, NumericFeature)
    assert all(feature.min <= v <= feature.max for v in EXTREMES)
    written = json.loads(profile.to_json())["features"][0]
    assert (written["min"], written["max"]) == (-4.44445, 9.87655)

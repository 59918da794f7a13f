"""Esteira's per-feature drift verdicts against Evidently's default tests (``make drift-agreement``).

Runs in ``.tools/evidently-venv`` (Evidently needs pandas 2, which the project's pins do not carry) with the
operator's source on the path: only ``esteira.drift``, which needs nothing but pydantic.

Windows: each of scikit-learn's bundled datasets (iris, wine, breast cancer, digits) is split in halves; the
first half is the reference, windows of 120 and 1500 rows are drawn with replacement from the second. Half of
the features are shifted: numeric ones by 0, 0.25 or 1 reference standard deviation (none, small, large);
categorical ones (a numeric column cut at its reference quartiles, as codes q1..q4) by moving 0, 10 or 40% of
the rows into q4. Esteira judges the window binned on a profile of the reference (``esteira.drift.profile``,
``esteira.drift.evaluate``, default policy); Evidently runs its DataDriftPreset with its default test choice.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from evidently.legacy.metric_preset import DataDriftPreset
from evidently.legacy.pipeline.column_mapping import ColumnMapping
from evidently.legacy.report import Report
from sklearn import datasets

from esteira.drift.evaluate import DriftPolicy, judge
from esteira.drift.profile import ReferenceProfile, categorical_feature, numeric_feature

RESULTS = Path(__file__).resolve().parent / "results" / "drift-agreement.md"
LOADERS: dict[str, Callable[..., object]] = {
    "iris": datasets.load_iris,
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
    "digits": datasets.load_digits,
}
SHIFTS = {"none": (0.0, 0.0), "small": (0.25, 0.10), "large": (1.0, 0.40)}  # (numeric std, categorical share)
SIZES = (120, 1500)
MAX_FEATURES = 8


@dataclass(frozen=True)
class Verdict:
    dataset: str
    size: int
    shift: str
    feature: str
    kind: str
    shifted: bool
    esteira: str
    esteira_method: str
    evidently: bool
    evidently_method: str


def _features(name: str) -> pd.DataFrame:
    bunch = LOADERS[name]()
    frame = pd.DataFrame(bunch.data, columns=[str(c) for c in bunch.feature_names])  # type: ignore[attr-defined]
    frame = frame.loc[:, frame.std() > 0]
    keep = frame.columns[np.linspace(0, len(frame.columns) - 1, min(MAX_FEATURES, len(frame.columns))).astype(int)]
    return frame[list(dict.fromkeys(keep))]


def _categorical(column: pd.Series, reference: pd.Series) -> pd.Series:
    cuts = np.unique(np.quantile(reference, [0.25, 0.5, 0.75]))
    return pd.Series([f"q{int(i) + 1}" for i in np.searchsorted(cuts, column, side="left")], index=column.index)


def _windows(name: str, size: int, shift: str, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame, set[str]]:
    frame = _features(name).sample(frac=1.0, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)
    half = len(frame) // 2
    reference, rest = frame.iloc[:half].copy(), frame.iloc[half:]
    current = rest.sample(n=size, replace=True, random_state=int(rng.integers(1 << 30))).reset_index(drop=True)
    columns = list(frame.columns)
    categorical = columns[1::2]
    for column in categorical:
        current[column] = _categorical(current[column], reference[column])
        reference[column] = _categorical(reference[column], reference[column])
    numeric = [c for c in columns if c not in categorical]
    shifted = set(numeric[: (len(numeric) + 1) // 2] + categorical[: (len(categorical) + 1) // 2])
    numeric_shift, categorical_share = SHIFTS[shift]
    for column in shifted:
        if column in categorical:
            moved = rng.random(size) < categorical_share
            current.loc[moved, column] = "q4"
        else:
            current[column] = current[column] + numeric_shift * reference[column].std()
    return reference, current, shifted if shift != "none" else set()


def _esteira(reference: pd.DataFrame, current: pd.DataFrame, column: str, categorical: bool) -> tuple[str, str]:
    rows = len(reference)
    if categorical:
        feature = categorical_feature(column, reference[column].tolist(), rows)
        profile = ReferenceProfile(rows=rows, features=[feature])
        counts = dict.fromkeys(feature.labels, 0.0)
        for value in current[column]:
            position = feature.bin_of(value)
            counts[feature.labels[len(feature.labels) - 1 if position is None else position]] += 1
    else:
        numeric = numeric_feature(column, reference[column].astype(float).tolist(), rows)
        profile = ReferenceProfile(rows=rows, features=[numeric])
        counts = dict.fromkeys(numeric.labels, 0.0)
        for value in current[column]:
            counts[numeric.labels[numeric.bin_of(float(value))]] += 1
    feature_profile = profile.features[0]
    reference_counts = dict(zip(feature_profile.labels, map(float, feature_profile.counts), strict=True))
    verdict = judge(column, reference_counts, counts, DriftPolicy())
    return verdict.verdict, verdict.method


def _evidently(reference: pd.DataFrame, current: pd.DataFrame, categorical: list[str]) -> dict[str, tuple[bool, str]]:
    numeric = [c for c in reference.columns if c not in categorical]
    report = Report(metrics=[DataDriftPreset()])
    mapping = ColumnMapping(numerical_features=numeric, categorical_features=categorical)
    report.run(reference_data=reference, current_data=current, column_mapping=mapping)
    for metric in report.as_dict()["metrics"]:
        columns = metric["result"].get("drift_by_columns")
        if columns:
            return {name: (bool(v["drift_detected"]), str(v["stattest_name"])) for name, v in columns.items()}
    raise RuntimeError("Evidently's report has no per-column drift")


def collect(seeds: int = 3) -> list[Verdict]:
    verdicts = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        for name in LOADERS:
            for size in SIZES:
                for shift in SHIFTS:
                    reference, current, shifted = _windows(name, size, shift, rng)
                    categorical = [c for c in reference.columns if reference[c].dtype == object]
                    theirs = _evidently(reference, current, categorical)
                    for column in reference.columns:
                        kind = "categorical" if column in categorical else "numeric"
                        ours, method = _esteira(reference, current, column, kind == "categorical")
                        detected, their_method = theirs[column]
                        verdicts.append(
                            Verdict(
                                name, size, shift, column, kind, column in shifted, ours, method, detected, their_method
                            )
                        )
    return verdicts


REASONS = {
    ("esteira-quiet", "chi-square p_value"): "Evidently picks its test by the reference's size (under 1000 rows here, "
    "so chi-square at p < 0.05 on every window) and has no effect-size floor: at 1500 rows drawn with replacement "
    "from a half of a few hundred rows, the halves' own sampling differences are significant; Esteira also needs "
    "Jensen-Shannon above 0.1, which a 10% move into one quartile does not reach",
    ("esteira-quiet", "K-S p_value"): "K-S at p < 0.05 fires on any significant difference; Esteira also needs the "
    "normed Wasserstein distance (on the reference deciles) above 0.1 and p < 0.01",
    ("esteira-quiet", "Z-test p_value"): "a two-category feature: Evidently's Z-test has no effect-size floor",
    ("esteira-drift", "K-S p_value"): "not yet verified, most of them on unshifted features: windows drawn with "
    "replacement repeat rows, and Esteira's chi-square on deciles takes each repeat as new evidence while its "
    "binned distance passes 0.1 on features with many equal values (ties move whole deciles); K-S on the raw "
    "values is less moved",
}


def _kind(v: Verdict) -> str:
    return "esteira-drift" if v.esteira == "Drift" else "esteira-quiet"


def report(verdicts: list[Verdict]) -> str:
    judged = [v for v in verdicts if v.esteira != "NoData"]
    agree = [v for v in judged if (v.esteira == "Drift") == v.evidently]
    lines = ["# Drift verdicts: Esteira against Evidently", "", "Produced by `make drift-agreement` "]
    lines[-1] += "(benchmarks/drift_agreement.py; Evidently 0.7.23, legacy DataDriftPreset, default tests)."
    lines += [
        "",
        f"Per-feature verdicts compared: {len(judged)} ({len(verdicts) - len(judged)} NoData from Esteira left out). "
        f"Agreement: **{len(agree) / len(judged):.1%}** ({len(agree)} of {len(judged)}).",
        "",
        "## Agreement by window",
        "",
        "| window rows | shift | kind | compared | agree | Esteira Drift | Evidently drift | truly shifted |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in SIZES:
        for shift in SHIFTS:
            for kind in ("numeric", "categorical"):
                group = [v for v in judged if v.size == size and v.shift == shift and v.kind == kind]
                if not group:
                    continue
                same = sum((v.esteira == "Drift") == v.evidently for v in group)
                lines.append(
                    f"| {size} | {shift} | {kind} | {len(group)} | {same / len(group):.0%} | "
                    f"{sum(v.esteira == 'Drift' for v in group)} | {sum(v.evidently for v in group)} | "
                    f"{sum(v.shifted for v in group)} |"
                )
    lines += ["", "## Each kind of disagreement", ""]
    lines += ["| who fires | Evidently's test | Esteira's measure | count | on shifted features | reason |"]
    lines += ["| --- | --- | --- | ---: | ---: | --- |"]
    kinds = Counter((_kind(v), v.evidently_method, v.esteira_method) for v in judged if v not in agree)
    for (kind, theirs, ours), count in kinds.most_common():
        shifted = sum(
            1
            for v in judged
            if v not in agree and (_kind(v), v.evidently_method, v.esteira_method) == (kind, theirs, ours) and v.shifted
        )
        who = "Esteira only" if kind == "esteira-drift" else "Evidently only"
        reason = REASONS.get((kind, theirs), "not classified")
        lines.append(f"| {who} | {theirs} | {ours} | {count} | {shifted} | {reason} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    text = report(collect())
    RESULTS.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""status.monitoring as text, for `kubectl esteira status` and `esteira status`: one wording in both places."""

from __future__ import annotations

from typing import Any


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _feature_row(feature: dict[str, Any]) -> list[str]:
    p_value = feature.get("pValue")
    return [
        feature["name"],
        feature["method"],
        _number(feature.get("score")),
        _number(feature.get("threshold")),
        _number(p_value),
        str(feature.get("sampleSize", 0)),
        feature["verdict"],
    ]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def monitoring_lines(monitoring: dict[str, Any] | None) -> list[str]:
    """The verdict, sample, top features (score against threshold) and data-quality rates; nothing if unset."""
    if not monitoring:
        return []
    share = monitoring.get("driftedShare")
    head = (
        f"monitoring: {monitoring.get('verdict', 'Unknown')}"
        f"{f' ({share:.0%} of features drifted)' if share is not None else ''}"
        f"  revision {monitoring.get('revision', '-')}  window {monitoring.get('window', '-')}"
        f"  sample {monitoring.get('sampleSize', 0)}  at {monitoring.get('lastEvaluationTime', '-')}"
    )
    lines = [head]
    if monitoring.get("driftingSince"):
        lines.append(f"  drifting since {monitoring['driftingSince']}")
    if monitoring.get("message"):
        lines.append(f"  {monitoring['message']}")
    features = [
        *(monitoring.get("features") or []),
        *([monitoring["predictions"]] if monitoring.get("predictions") else []),
    ]
    if features:
        rows = [["FEATURE", "METHOD", "SCORE", "THRESHOLD", "P-VALUE", "SAMPLE", "VERDICT"]]
        lines += _table(rows + [_feature_row(feature) for feature in features])
    quality = monitoring.get("dataQuality") or []
    if quality:
        rows = [["FEATURE", "VIOLATION", "RATE"]]
        rows += [[entry["feature"], entry["kind"], f"{entry['rate']:.2%}"] for entry in quality]
        lines += ["  data quality:", *_table(rows)]
    return lines

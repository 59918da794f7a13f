"""The model card `esteira package` writes into the archive and prints for `spec.model.card`: where a build
came from (parent, data, command, owner) and what it was validated on."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from pathlib import Path

from esteira.api.spec import ModelCard, TrainingData, Validation, ValidationBaseline

CARD_FILE = "model-card.json"
CHUNK = 1 << 20


def fingerprint(path: Path) -> str:
    """sha256 of a file, or of a folder's files in name order (names included), as `sha256:<hex>`."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def csv_rows(path: Path) -> int | None:
    """Data rows of a CSV file (its header not counted); None for anything else."""
    if path.suffix.lower() != ".csv" or not path.is_file():
        return None
    with path.open("rb") as handle:
        return max(sum(1 for _ in handle) - 1, 0)


def build_card(
    *,
    parent_version: str | None,
    training_data: Path | None,
    training_rows: int | None,
    metric: str | None,
    score: float | None,
    better: str,
    owner: str | None,
    argv: Sequence[str],
    baseline_version: str | None = None,
    baseline_score: float | None = None,
    retraining_run: int | None = None,
) -> ModelCard:
    """The card from `esteira package`'s options; the command that built it is the command line itself."""
    data = None
    if training_data is not None:
        if not training_data.exists():
            raise ValueError(f"--training-data {training_data}: not found")
        rows = training_rows if training_rows is not None else csv_rows(training_data)
        if rows is None:
            raise ValueError("--training-rows is needed when --training-data is not a CSV file")
        data = TrainingData(fingerprint=fingerprint(training_data), size=rows)
    validation = None
    if (metric is None) != (score is None):
        raise ValueError("--validation-metric and --validation-score go together")
    if (baseline_version is None) != (baseline_score is None):
        raise ValueError("--validation-baseline-version and --validation-baseline-score go together")
    if baseline_version is not None and metric is None:
        raise ValueError("a validation baseline needs --validation-metric and --validation-score")
    if metric is not None and score is not None:
        baseline = None
        if baseline_version is not None and baseline_score is not None:
            baseline = ValidationBaseline(version=baseline_version, score=baseline_score)
        validation = Validation(
            metric=metric, score=score, better="lower" if better == "lower" else "higher", baseline=baseline
        )
    return ModelCard(
        parent_version=parent_version,
        training_data=data,
        validation=validation,
        built_by=shlex.join(argv)[:1024],
        owner=owner,
        retraining_run=retraining_run,
    )

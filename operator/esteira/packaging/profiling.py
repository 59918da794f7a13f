"""``esteira profile``: the reference profile (``esteira.drift.profile``) of a CSV or Parquet dataset.

Why two passes in chunks: a training set may not fit in memory. The first pass keeps, per column, exact counts,
range and moments, the category frequencies while they stay few, and a bounded uniform sample of numeric
values whose quantiles give the bin edges; the second counts every row into those bins exactly. Below
``SAMPLE_SIZE`` rows the sample is the whole column, so the edges are the ones ``esteira.drift.profile``
computes in memory.

A column is numeric when every present value parses as a number, categorical otherwise; ``--categorical``
and ``--numeric`` overrule that (codes stored as integers, numbers a typo made unparseable). Empty cells and
NA, NaN, null, None are missing. Every mistake names the file, the row (1 is the header) and the column.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import math
import random
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from esteira.drift.profile import (
    MAX_BINS,
    MAX_CATEGORIES,
    PROFILE_FILE,
    CategoricalFeature,
    NumericFeature,
    PredictionBaseline,
    ReferenceProfile,
    as_model_input,
    category_of,
    edge_label,
    quantile,
    round_down,
    round_up,
)

CHUNK_ROWS = 50_000
SAMPLE_SIZE = 200_000  # numeric values kept per column for the bin edges
MAX_DISTINCT = 10_000  # distinct values a categorical column may have (identifiers are not features)
MISSING = frozenset({"", "na", "nan", "null", "none"})
Progress = Callable[[str], None]


class ProfileError(ValueError):
    """A dataset that cannot be profiled, with the file, row and column to look at."""


@dataclass
class Chunk:
    """Rows of string cells (CSV) or typed values (Parquet), and the file row of the first one."""

    first_row: int
    columns: dict[str, list[Any]]


@dataclass
class ColumnStats:
    """What the first pass learns about one column."""

    name: str
    present: int = 0
    numeric: bool = True
    low: float = math.inf
    high: float = -math.inf
    total: float = 0.0
    squares: float = 0.0
    sample: list[float] = field(default_factory=list)
    seen: int = 0
    frequency: dict[str, int] | None = field(default_factory=dict)

    def add_number(self, value: float, rng: random.Random) -> None:
        self.low, self.high = min(self.low, value), max(self.high, value)
        self.total += value
        self.squares += value * value
        self.seen += 1
        if len(self.sample) < SAMPLE_SIZE:
            self.sample.append(value)
        else:
            slot = rng.randrange(self.seen)
            if slot < SAMPLE_SIZE:
                self.sample[slot] = value

    def add_category(self, value: str) -> None:
        if self.frequency is None:
            return
        self.frequency[value] = self.frequency.get(value, 0) + 1
        if len(self.frequency) > MAX_DISTINCT:
            self.frequency = None


@dataclass(frozen=True)
class ProfileRequest:
    path: Path
    prediction: str | None = None
    exclude: frozenset[str] = frozenset()
    categorical: frozenset[str] = frozenset()
    numeric: frozenset[str] = frozenset()
    bins: int = 10
    model: str | None = None
    version: str | None = None


# -- reading ------------------------------------------------------------------------------------------------


def _percent(done: int, total: int) -> str:
    return f" ({100 * done // total}%)" if total > 0 else ""


def _csv_chunks(path: Path, progress: Progress) -> Iterator[Chunk]:
    size = path.stat().st_size
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = _header(path, next(reader, None))
        rows: list[list[str]] = []
        record = first = 2
        for row in reader:
            if not row or (len(row) == 1 < len(header) and not row[0].strip()):  # a blank line, spaces at most
                continue  # a row of empty cells ("," for two columns) is a row of missing values
            if len(row) != len(header):
                raise ProfileError(f"{path}: row {record} has {len(row)} fields, the header has {len(header)}")
            rows.append(row)
            record += 1
            if len(rows) == CHUNK_ROWS:
                yield Chunk(first, dict(zip(header, (list(c) for c in zip(*rows, strict=True)), strict=True)))
                progress(f"{record - 2} rows{_percent(_position(handle), size)}")
                first, rows = record, []
        if rows:
            yield Chunk(first, dict(zip(header, (list(c) for c in zip(*rows, strict=True)), strict=True)))
            progress(f"{record - 2} rows (100%)")


def _position(handle: TextIO) -> int:
    return int(handle.buffer.tell()) if hasattr(handle, "buffer") else 0


def _header(path: Path, header: list[str] | None) -> list[str]:
    if not header or not any(name.strip() for name in header):
        raise ProfileError(f"{path}: row 1 should name the columns, the file has no header")
    names = [name.strip() for name in header]
    for index, name in enumerate(names, start=1):
        if not name:
            raise ProfileError(f"{path}: row 1, column {index} has no name")
        if names.index(name) != index - 1:
            raise ProfileError(f"{path}: row 1 names column {name!r} twice")
    return names


def _parquet_chunks(path: Path, progress: Progress) -> Iterator[Chunk]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]  # only Parquet needs it
    except ImportError as exc:  # pragma: no cover - pyarrow is in the extras that install this command
        raise ProfileError(f"{path}: reading Parquet needs pyarrow (pip install 'esteira-serving[serving]')") from exc
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise ProfileError(f"{path}: not a readable Parquet file: {exc}") from exc
    total = parquet.metadata.num_rows
    _header(path, list(parquet.schema_arrow.names))
    first = 2
    for batch in parquet.iter_batches(batch_size=CHUNK_ROWS):
        columns = {name: batch.column(i).to_pylist() for i, name in enumerate(batch.schema.names)}
        yield Chunk(first, columns)
        first += batch.num_rows
        progress(f"{first - 2} rows{_percent(first - 2, total)}")


def read_chunks(path: Path, progress: Progress) -> Iterator[Chunk]:
    """The file's rows in chunks, by its extension."""
    if not path.is_file():
        raise ProfileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return _parquet_chunks(path, progress)
    if suffix in {".csv", ".txt"}:
        return _csv_chunks(path, progress)
    raise ProfileError(f"{path}: unknown format {suffix or '(no extension)'!r}: use .csv or .parquet")


# -- cells --------------------------------------------------------------------------------------------------


def _is_missing(cell: Any) -> bool:
    if cell is None:
        return True
    if isinstance(cell, float):
        return math.isnan(cell)
    return isinstance(cell, str) and cell.strip().lower() in MISSING


def _number(cell: Any) -> float | None:
    if isinstance(cell, bool):
        return float(cell)
    if isinstance(cell, int | float):
        return float(cell)
    try:
        return float(str(cell).strip())
    except ValueError:
        return None


def _model_input(cell: Any) -> float | None:
    """A feature's number as the model server bins it (:func:`esteira.drift.profile.as_model_input`)."""
    number = _number(cell)
    return number if number is None or not math.isfinite(number) else as_model_input(number)


def _category(cell: Any) -> str:
    """A category's name as the model server names the number it is sent for it (`category_of`): a CSV's "1.0"
    (pandas writes a float column so) named "1.0" matched no value the server counted, and the feature drifted
    for good."""
    number = _number(cell)
    if number is not None and math.isfinite(number):
        return category_of(number)
    return str(cell).strip() if isinstance(cell, str) else str(cell)


# -- the two passes -----------------------------------------------------------------------------------------


def _first_pass(request: ProfileRequest, progress: Progress) -> tuple[int, dict[str, ColumnStats]]:
    rng = random.Random(0)
    stats: dict[str, ColumnStats] = {}
    rows = 0
    for chunk in read_chunks(request.path, lambda message: progress(f"reading {message}")):
        if not stats:
            _check_names(request, list(chunk.columns))
            stats = {name: ColumnStats(name) for name in chunk.columns if name not in request.exclude}
        for name, column in stats.items():
            forced_numeric = name in request.numeric and name != request.prediction
            read = _number if name == request.prediction else _model_input
            for offset, cell in enumerate(chunk.columns[name]):
                if _is_missing(cell):
                    continue
                column.present += 1
                if name not in request.categorical:
                    value = read(cell) if column.numeric else None
                    if value is not None and not math.isfinite(value):
                        raise ProfileError(
                            f"{request.path}: row {chunk.first_row + offset}, column {name!r}: {cell!r} is not a "
                            "finite number (leave the cell empty for a missing value)"
                        )
                    if value is not None:
                        column.add_number(value, rng)
                    elif forced_numeric:
                        raise ProfileError(
                            f"{request.path}: row {chunk.first_row + offset}, column {name!r}: {cell!r} is not a "
                            "number (the column is --numeric)"
                        )
                    else:
                        column.numeric = False
                column.add_category(_category(cell))
        rows += len(next(iter(chunk.columns.values()), []))
    if rows == 0:
        raise ProfileError(f"{request.path}: no rows after the header")
    return rows, stats


def _check_names(request: ProfileRequest, names: list[str]) -> None:
    for option, wanted in (
        ("--exclude", request.exclude),
        ("--categorical", request.categorical),
        ("--numeric", request.numeric),
        ("--prediction", {request.prediction} if request.prediction else set()),
    ):
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ProfileError(f"{request.path}: {option} names no column: {', '.join(map(repr, unknown))}")
    both = sorted(request.categorical & request.numeric)
    if both:
        raise ProfileError(f"columns {', '.join(map(repr, both))} cannot be both --categorical and --numeric")
    if request.prediction is not None and request.prediction in request.exclude:
        raise ProfileError(f"column {request.prediction!r} cannot be both --prediction and --exclude")


def _edges(column: ColumnStats, bins: int) -> list[float]:
    ordered = sorted(column.sample)
    return sorted({float(edge_label(quantile(ordered, i / bins))) for i in range(1, bins)})


def _second_pass(request: ProfileRequest, edges: dict[str, list[float]], progress: Progress) -> dict[str, list[int]]:
    counts = {name: [0] * (len(cut) + 1) for name, cut in edges.items()}
    if not edges:
        return counts
    for chunk in read_chunks(request.path, lambda message: progress(f"counting into bins {message}")):
        for name, cut in edges.items():
            bins = counts[name]
            read = _number if name == request.prediction else _model_input
            for cell in chunk.columns[name]:
                if not _is_missing(cell):
                    bins[bisect.bisect_left(cut, read(cell) or 0.0)] += 1
    return counts


def _rounded(value: float) -> float:
    return float(edge_label(value))


def _feature(
    request: ProfileRequest, column: ColumnStats, rows: int, edges: list[float] | None, counts: list[int] | None
) -> NumericFeature | CategoricalFeature:
    missing_rate = _rounded(1 - column.present / rows)
    if edges is not None and counts is not None:
        mean = column.total / column.present
        variance = max(0.0, column.squares / column.present - mean * mean)
        return NumericFeature(
            name=column.name,
            missing_rate=missing_rate,
            min=round_down(column.low),
            max=round_up(column.high),
            mean=_rounded(mean),
            std=_rounded(math.sqrt(variance)),
            edges=edges,
            counts=counts,
        )
    frequency = _frequency(request, column)
    kept = sorted(frequency, key=lambda c: (-frequency[c], c))[:MAX_CATEGORIES]
    kept_counts = [frequency[c] for c in kept]
    return CategoricalFeature(
        name=column.name,
        missing_rate=missing_rate,
        categories=kept,
        counts=[*kept_counts, column.present - sum(kept_counts)],
    )


def _frequency(request: ProfileRequest, column: ColumnStats) -> dict[str, int]:
    if column.frequency is None:
        raise ProfileError(
            f"{request.path}: column {column.name!r} has more than {MAX_DISTINCT} distinct values: "
            "an identifier is no feature (--exclude it), a measurement should be numeric (--numeric)"
        )
    return column.frequency


def _baseline(
    request: ProfileRequest, column: ColumnStats, edges: list[float] | None, counts: list[int] | None
) -> PredictionBaseline:
    if edges is not None and counts is not None:
        return PredictionBaseline(edges=edges, counts=counts)
    frequency = _frequency(request, column)
    labels = sorted(frequency)
    return PredictionBaseline(labels=labels, counts=[frequency[label] for label in labels])


def build_profile(request: ProfileRequest, progress: Progress = lambda _: None) -> ReferenceProfile:
    """Read the dataset twice in chunks and return its reference profile."""
    if not 2 <= request.bins <= MAX_BINS - 1:
        raise ProfileError(f"--bins must be between 2 and {MAX_BINS - 1}, got {request.bins}")
    rows, stats = _first_pass(request, progress)
    empty = [name for name, column in stats.items() if column.present == 0]
    if empty:
        raise ProfileError(f"{request.path}: column {empty[0]!r} has no values in {rows} rows (--exclude it)")
    numeric = {name for name, column in stats.items() if column.numeric and name not in request.categorical}
    if request.prediction is not None and request.prediction not in request.numeric:
        numeric.discard(request.prediction)
    edges = {name: _edges(stats[name], request.bins) for name in sorted(numeric)}
    counts = _second_pass(request, edges, progress)
    features = []
    for name, column in stats.items():
        if name == request.prediction:
            continue
        try:
            features.append(_feature(request, column, rows, edges.get(name), counts.get(name)))
        except ValidationError as exc:
            raise ProfileError(f"{request.path}: column {name!r}: {_problem(exc)}") from None
    predictions = None
    if request.prediction is not None:
        name = request.prediction
        predictions = _baseline(request, stats[name], edges.get(name), counts.get(name))
    if not features:
        raise ProfileError(f"{request.path}: no feature columns left to profile")
    try:
        return ReferenceProfile(
            model=request.model,
            version=request.version,
            source=request.path.name,
            rows=rows,
            features=features,
            predictions=predictions,
        )
    except ValidationError as exc:
        raise ProfileError(f"{request.path}: {_problem(exc)}") from None


def _problem(exc: ValidationError) -> str:
    """A validation error's first problem, with where it lies."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def staged_profile(profile: Path, extra_files: Sequence[Path], folder: Path) -> Path:
    """A checked copy of the profile in ``folder``, named as the model server looks for it (for ``esteira package``)."""
    if any(path.name == PROFILE_FILE for path in extra_files):
        raise ProfileError(f"--profile and an extra file named {PROFILE_FILE}: give the profile once")
    try:
        ReferenceProfile.model_validate_json(profile.read_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(document)"
        raise ProfileError(f"--profile {profile}: {where}: {first['msg']}") from exc
    staged = folder / PROFILE_FILE
    shutil.copyfile(profile, staged)
    return staged


# -- the command --------------------------------------------------------------------------------------------


def _names(values: Sequence[str]) -> frozenset[str]:
    return frozenset(part.strip() for value in values for part in value.split(",") if part.strip())


def _profile(args: argparse.Namespace) -> int:
    def progress(message: str) -> None:
        if not args.quiet:
            print(f"esteira profile: {args.dataset.name}: {message}", file=sys.stderr)

    request = ProfileRequest(
        path=args.dataset,
        prediction=args.prediction,
        exclude=_names(args.exclude),
        categorical=_names(args.categorical),
        numeric=_names(args.numeric),
        bins=args.bins,
        model=args.model,
        version=args.model_version,
    )
    try:
        profile = build_profile(request, progress)
        args.out.write_text(profile.to_json())
    except (ProfileError, OSError, UnicodeDecodeError, csv.Error) as exc:
        print(f"esteira profile: {exc}", file=sys.stderr)
        return 2
    kinds = [feature.type for feature in profile.features]
    print(
        f"{args.out}: {profile.rows} rows, {kinds.count('numeric')} numeric and "
        f"{kinds.count('categorical')} categorical features" + (", predictions" if profile.predictions else "")
    )
    return 0


def add_profile_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``profile`` on the ``esteira`` command's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "profile",
        help="Build a model's reference profile (drift and data quality) from a CSV or Parquet dataset.",
        description="Read a training or validation dataset in chunks and write the reference profile that "
        "`esteira package --profile` puts in the archive: per feature its type, missing rate, range, bins "
        "with counts, and the baseline of predictions.",
    )
    parser.add_argument("dataset", type=Path, help="A .csv file with a header row, or a .parquet file.")
    parser.add_argument(
        "-o", "--out", type=Path, default=Path("reference-profile.json"), help="Default: reference-profile.json."
    )
    parser.add_argument("--prediction", help="Column holding the model's predictions (the baseline to compare).")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="COLUMN", help="Columns that are no features.")
    parser.add_argument("--categorical", nargs="+", default=[], metavar="COLUMN", help="Columns of category codes.")
    parser.add_argument("--numeric", nargs="+", default=[], metavar="COLUMN", help="Columns that must be numbers.")
    parser.add_argument(
        "--bins", type=int, default=10, help=f"Numeric bins per feature (2-{MAX_BINS - 1}). Default: 10."
    )
    parser.add_argument("--model", help="Model name recorded in the profile.")
    parser.add_argument("--model-version", help="Model version recorded in the profile.")
    parser.add_argument("-q", "--quiet", action="store_true", help="No progress on standard error.")
    parser.set_defaults(func=_profile)
    return parser

"""The reference profile: what the model's inputs and predictions looked like when it was judged good.

Numeric features get fixed bins: quantile edges of the reference data with open tails, bin ``i`` holding values in
``(edges[i-1], edges[i]]`` (the first from minus infinity, the last to plus infinity). Categorical features get
their most frequent categories plus one bin for every other value. Counts over fixed bins add up across
requests, workers, pods and time windows, so a window's drift is a Prometheus query, not server state.

Each bin has a label shared by the model server's counters and the operator's queries: a numeric bin is named
by its upper edge (``"5.1"``, ``"+Inf"``), a categorical one by ``=`` and its category (``"=red"``), the bin of
unseen categories ``"*"``. Labels use only characters that survive TorchServe's metric log line.
"""

from __future__ import annotations

import bisect
import math
import re
import struct
from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

PROFILE_VERSION: Literal[2] = 2
PROFILE_FILE = "reference-profile.json"  # the name the model server looks for beside the model
MAX_BINS = 32  # per numeric feature (edges + 1)
MAX_CATEGORIES = 32  # kept per categorical feature; the rest share the "*" bin
OTHER_BIN = "*"
INF_BIN = "+Inf"
CATEGORY_PREFIX = "="
_UNSAFE = re.compile(r"[,:|#\s\"\\]")


def edge_label(edge: float) -> str:
    """A numeric bin's label: its upper edge with six significant digits."""
    return format(edge, ".6g")


def category_label(category: str) -> str:
    """A categorical bin's label; characters that would break a metric line become '_'."""
    return CATEGORY_PREFIX + _UNSAFE.sub("_", category)[:60]


class ProfileModel(BaseModel):
    """camelCase on disk, unknown keys rejected so a typo in a hand-edited profile surfaces at load time."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class NumericFeature(ProfileModel):
    """A numeric feature: summary statistics and quantile bins with open tails."""

    name: str = Field(min_length=1, max_length=200)
    type: Literal["numeric"] = "numeric"
    missing_rate: float = Field(default=0.0, ge=0, le=1)
    min: float
    max: float
    mean: float
    std: float = Field(ge=0)
    edges: list[float] = Field(max_length=MAX_BINS - 1)
    counts: list[int]

    @model_validator(mode="after")
    def _bins(self) -> NumericFeature:
        if len(self.counts) != len(self.edges) + 1:
            raise ValueError(f"feature {self.name!r}: {len(self.edges)} edges need {len(self.edges) + 1} counts")
        if any(b <= a for a, b in pairwise(self.edges)):
            raise ValueError(f"feature {self.name!r}: edges must be strictly increasing")
        if len({edge_label(e) for e in self.edges}) != len(self.edges):
            raise ValueError(f"feature {self.name!r}: edges must differ in their first six significant digits")
        return self

    @property
    def labels(self) -> tuple[str, ...]:
        return (*(edge_label(e) for e in self.edges), INF_BIN)

    def bin_of(self, value: float) -> int:
        return bisect.bisect_left(self.edges, value)


class CategoricalFeature(ProfileModel):
    """A categorical feature: its most frequent categories and how often each occurred; the last count is
    every other category."""

    name: str = Field(min_length=1, max_length=200)
    type: Literal["categorical"] = "categorical"
    missing_rate: float = Field(default=0.0, ge=0, le=1)
    categories: list[str] = Field(min_length=1, max_length=MAX_CATEGORIES)
    counts: list[int]

    @model_validator(mode="after")
    def _bins(self) -> CategoricalFeature:
        if len(self.counts) != len(self.categories) + 1:
            raise ValueError(
                f"feature {self.name!r}: {len(self.categories)} categories need {len(self.categories) + 1} counts "
                "(the last one counts every other category)"
            )
        seen: dict[str, str] = {}
        for category in self.categories:
            label = category_label(category)
            if label in seen:
                raise ValueError(
                    f"feature {self.name!r}: categories {seen[label]!r} and {category!r} are one bin, {label!r} "
                    "(a bin's label keeps 60 characters, with those a metric line cannot carry made '_'): "
                    "merge or rename them"
                )
            seen[label] = category
        return self

    @property
    def labels(self) -> tuple[str, ...]:
        return (*(category_label(c) for c in self.categories), OTHER_BIN)

    def bin_of(self, value: str) -> int | None:
        """The category's bin, None for a category the reference never had among its kept ones."""
        try:
            return self.categories.index(value)
        except ValueError:
            return None


Feature = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="type")]


class PredictionBaseline(ProfileModel):
    """Predicted classes (labels) or, for regression, predicted values in bins (edges)."""

    labels: list[str] | None = None
    edges: list[float] | None = None
    counts: list[int]

    @model_validator(mode="after")
    def _shape(self) -> PredictionBaseline:
        if (self.labels is None) == (self.edges is None):
            raise ValueError("predictions need labels (classification) or edges (regression), not both")
        wanted = len(self.labels) if self.labels is not None else len(self.edges or []) + 1
        if len(self.counts) != wanted:
            raise ValueError(f"predictions need {wanted} counts, got {len(self.counts)}")
        return self


class ReferenceProfile(ProfileModel):
    """The whole profile document."""

    profile_version: Literal[2] = PROFILE_VERSION
    kind: Literal["tabular", "image"] = "tabular"
    model: str | None = None
    version: str | None = None
    source: str = ""
    rows: int = Field(ge=1)
    features: list[Feature] = Field(max_length=10_000)
    predictions: PredictionBaseline | None = None

    @model_validator(mode="after")
    def _unique(self) -> ReferenceProfile:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True, indent=2) + "\n"


# -- building ---------------------------------------------------------------------------------------------


def _round(value: float) -> float:
    return float(format(value, ".6g"))


def _round_outward(value: float, rounding: str) -> float:
    """Six significant digits rounded in one direction only, so the bound never crosses the value it rounds."""
    if value == 0 or not math.isfinite(value):
        return value
    exact = Decimal(value)
    rounded = float(exact.quantize(Decimal(1).scaleb(exact.adjusted() - 5), rounding=rounding))
    return rounded if math.isfinite(rounded) else value


def round_down(value: float) -> float:
    """A readable lower bound: at most `value`, unlike plain rounding, so the reference's minimum stays in range."""
    nearest = _round(value)
    return nearest if nearest <= value else _round_outward(value, ROUND_FLOOR)


def round_up(value: float) -> float:
    """A readable upper bound: at least `value`, so the reference's maximum stays in range."""
    nearest = _round(value)
    return nearest if nearest >= value else _round_outward(value, ROUND_CEILING)


def quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default method)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def numeric_feature(name: str, values: Sequence[float], rows: int, bins: int = 10) -> NumericFeature:
    """Quantile edges (distinct after rounding to six digits) and the counts in the bins they make."""
    if not values:
        raise ValueError(f"feature {name!r}: no values")
    ordered = sorted(values)
    edges = sorted({_round(quantile(ordered, i / bins)) for i in range(1, bins)})
    counts = [0] * (len(edges) + 1)
    for value in ordered:
        counts[bisect.bisect_left(edges, value)] += 1
    mean = sum(ordered) / len(ordered)
    std = math.sqrt(sum((v - mean) ** 2 for v in ordered) / len(ordered))
    return NumericFeature(
        name=name,
        missing_rate=_round(1 - len(values) / rows),
        min=round_down(ordered[0]),
        max=round_up(ordered[-1]),
        mean=_round(mean),
        std=_round(std),
        edges=edges,
        counts=counts,
    )


def as_model_input(value: float) -> float:
    """A number as a tabular model receives it, in a float32 tensor. The model server bins what the model is given;
    a reference binned from the data's float64 values put each value on an edge (a quantile of values with one
    decimal, 0.2) in the bin below it, where the server, given 0.200000003, counted it in the bin above, and a
    value at the reference's maximum (6.9) arrived as 6.9000001, out of range: unchanged data made a data-quality
    incident. One beyond float32's range is kept as it is."""
    try:
        return float(struct.unpack("f", struct.pack("f", value))[0])
    except OverflowError:
        return value


def category_of(value: float) -> str:
    """A category's name for a number: how the model server names a value sent for a categorical feature, and
    `esteira profile` a code its data holds (a CSV's "1.0" is category "1")."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def categorical_feature(name: str, values: Sequence[str], rows: int) -> CategoricalFeature:
    """The most frequent categories (ties by name) and one bin for the rest."""
    if not values:
        raise ValueError(f"feature {name!r}: no values")
    frequency: dict[str, int] = {}
    for value in values:
        frequency[value] = frequency.get(value, 0) + 1
    kept = sorted(frequency, key=lambda c: (-frequency[c], c))[:MAX_CATEGORIES]
    counts = [frequency[c] for c in kept]
    return CategoricalFeature(
        name=name,
        missing_rate=_round(1 - len(values) / rows),
        categories=kept,
        counts=[*counts, len(values) - sum(counts)],
    )


def prediction_baseline(predicted: Sequence[str], labels: Sequence[str]) -> PredictionBaseline:
    return PredictionBaseline(labels=list(labels), counts=[sum(1 for p in predicted if p == label) for label in labels])

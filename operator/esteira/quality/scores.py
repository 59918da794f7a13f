"""Pairs of (predicted, actual) per instance and the scores computed from them.

A classifier's answer is a label (a string), a regressor's a number. One request may carry several
instances, so its truth is one answer per instance; a lone answer is accepted for a one-instance request.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Answer = str | float


@dataclass(frozen=True)
class Pair:
    """One instance's prediction and the truth that arrived for it."""

    predicted: Answer
    actual: Answer

    @property
    def correct(self) -> bool:
        return _same(self.predicted, self.actual)

    @property
    def classes(self) -> tuple[str, str]:
        """The two answers as a confusion matrix's class names: one name for both where they are the same answer
        (a model's 1 and its label "1"), or per-class scores split one class in two."""
        predicted = _class_name(self.predicted)
        return (predicted, predicted) if self.correct else (predicted, _class_name(self.actual))

    @property
    def absolute_error(self) -> float | None:
        """|predicted - actual| for numbers; None for labels."""
        if isinstance(self.predicted, str) or isinstance(self.actual, str):
            return None
        return abs(float(self.predicted) - float(self.actual))


def _class_name(answer: Answer) -> str:
    """A class as text: a whole number without its fraction (1.0 is "1"), as labels write it."""
    if isinstance(answer, str):
        return answer
    number = float(answer)
    return str(int(number)) if number.is_integer() else repr(number)


def _same(predicted: Answer, actual: Answer) -> bool:
    """Equal answers; a class as a number on one side and as text on the other (a model answering `1`, its
    labels sent as `"1"`) compared as numbers: as text, 1.0 never matched "1"."""
    if isinstance(predicted, str) and isinstance(actual, str):
        return predicted == actual
    if isinstance(predicted, str) or isinstance(actual, str):
        text, number = (predicted, actual) if isinstance(predicted, str) else (actual, predicted)
        try:
            return float(str(text)) == float(number)
        except ValueError:
            return False
    return float(predicted) == float(actual)


def pair_up(predicted: Sequence[Answer], actual: Answer | Sequence[Answer]) -> list[Pair]:
    """Match a request's predictions with its truth, instance by instance; ValueError when they disagree."""
    truth: Sequence[Answer] = [actual] if isinstance(actual, str | int | float) else actual
    if len(truth) != len(predicted):
        raise ValueError(f"the truth has {len(truth)} answer(s) but the request had {len(predicted)} prediction(s)")
    for answer in truth:
        if isinstance(answer, bool) or not isinstance(answer, str | int | float):
            raise ValueError(f"an answer must be a label (string) or a value (number), got {answer!r}")
        if isinstance(answer, float) and not math.isfinite(answer):
            raise ValueError(f"a value must be finite, got {answer!r}")
    return [Pair(p, a) for p, a in zip(predicted, truth, strict=True)]


@dataclass(frozen=True)
class ClassScore:
    precision: float | None
    recall: float | None
    f1: float | None
    support: int  # how many instances truly were this class


@dataclass(frozen=True)
class Tally:
    """What an arm's labelled predictions add up to: counts and error sums, mergeable by addition."""

    labelled: int = 0
    correct: int = 0
    absolute_error: float = 0.0  # sum of |e| over numeric pairs
    squared_error: float = 0.0  # sum of e^2, for the variance of the error

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def mae(self) -> float | None:
        return self.absolute_error / self.labelled if self.labelled else None

    def __add__(self, other: Tally) -> Tally:
        return Tally(
            self.labelled + other.labelled,
            self.correct + other.correct,
            self.absolute_error + other.absolute_error,
            self.squared_error + other.squared_error,
        )


def tally(pairs: Iterable[Pair]) -> Tally:
    total = Tally()
    for pair in pairs:
        error = pair.absolute_error
        total += Tally(1, int(pair.correct), error or 0.0, (error or 0.0) ** 2)
    return total


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def confusion(pairs: Iterable[Pair]) -> Counter[tuple[str, str]]:
    """(predicted, actual) -> how many instances: what per-class scores are computed from."""
    return Counter(pair.classes for pair in pairs)


def class_scores(counts: Mapping[tuple[str, str], int]) -> dict[str, ClassScore]:
    """Per-class precision, recall and F1 (one class against the rest) from (predicted, actual) counts;
    None where a ratio has no denominator."""
    true_positive: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    actual: Counter[str] = Counter()
    for (p, a), count in counts.items():
        predicted[p] += count
        actual[a] += count
        if p == a:
            true_positive[p] += count
    scores = {}
    for label in sorted(set(predicted) | set(actual)):
        precision = _ratio(true_positive[label], predicted[label])
        recall = _ratio(true_positive[label], actual[label])
        f1 = None
        if precision is not None and recall is not None:
            f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        scores[label] = ClassScore(precision, recall, f1, actual[label])
    return scores

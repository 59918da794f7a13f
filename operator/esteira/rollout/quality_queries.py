"""PromQL for the accuracy check: one arm's labelled predictions joined over a window, from the collector.

The collector counts a prediction when its label arrives, labelled by the revision that made it. Its own
label names (`deployment_namespace`, not `namespace`) survive the scrape, which adds the collector pod's.
"""

from __future__ import annotations

from dataclasses import dataclass

from esteira.rollout.queries import label_value, window_count


@dataclass(frozen=True)
class QualityNames:
    labelled: str = "esteira_labelled_predictions_total"
    correct: str = "esteira_correct_predictions_total"
    absolute_error: str = "esteira_prediction_absolute_error_total"
    squared_error: str = "esteira_prediction_squared_error_total"
    namespace_label: str = "deployment_namespace"
    deployment_label: str = "deployment"
    revision_label: str = "revision"


@dataclass(frozen=True)
class QualityQueries:
    labelled: str
    correct: str
    absolute_error: str
    squared_error: str


def quality_queries(
    names: QualityNames, namespace: str, deployment: str, revision: int, window_seconds: int
) -> QualityQueries:
    selector = (
        f'{names.namespace_label}="{label_value(namespace)}",{names.deployment_label}="{label_value(deployment)}",'
        f'{names.revision_label}="{revision}"'
    )

    def growth(metric: str) -> str:
        return f"sum({window_count(f'{metric}{{{selector}}}', f'{window_seconds}s')})"

    return QualityQueries(
        labelled=growth(names.labelled),
        correct=growth(names.correct),
        absolute_error=growth(names.absolute_error),
        squared_error=growth(names.squared_error),
    )

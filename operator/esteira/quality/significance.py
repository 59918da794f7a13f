"""Is the canary really worse than stable, or is the sample too small to say?

Both tests are one-sided and allow a margin: the null hypothesis is "the canary is at most `margin` worse",
so a small p-value means the canary is worse by more than the margin with that much confidence. Normal
approximations (two proportions; Welch's statistic on mean errors), fine at the label counts a check
demands (`minLabels`, at least 30 per arm by the spec's floor).
"""

from __future__ import annotations

import math

from esteira.quality.scores import Tally


def _upper_tail(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def accuracy_drop_p_value(canary: Tally, stable: Tally, margin: float) -> float:
    """p-value for "canary accuracy < stable accuracy - margin" (two-proportion z-test). With no margin the null
    is equal accuracies, and the variance pools both arms; with one, the null's accuracies lie `margin` apart, so
    each arm's own variance counts (Wald): pooled there, the variance came out too small, and a canary exactly
    at the tolerance failed 16-18 % of analyses at a 5 % level."""
    if canary.labelled == 0 or stable.labelled == 0:
        return 1.0
    canary_rate, stable_rate = canary.correct / canary.labelled, stable.correct / stable.labelled
    drop = stable_rate - canary_rate
    if margin > 0:
        variance = (
            canary_rate * (1.0 - canary_rate) / canary.labelled + stable_rate * (1.0 - stable_rate) / stable.labelled
        )
    else:
        pooled = (canary.correct + stable.correct) / (canary.labelled + stable.labelled)
        variance = pooled * (1.0 - pooled) * (1.0 / canary.labelled + 1.0 / stable.labelled)
    if variance <= 0.0:  # every answer right (or wrong) in both arms: the drop is exact
        return 0.0 if drop > margin else 1.0
    return _upper_tail((drop - margin) / math.sqrt(variance))


def _error_variance(arm: Tally) -> float:
    mean = arm.absolute_error / arm.labelled
    return max(0.0, arm.squared_error / arm.labelled - mean * mean) * arm.labelled / max(1, arm.labelled - 1)


def mae_rise_p_value(canary: Tally, stable: Tally, margin: float) -> float:
    """p-value for "canary MAE > stable MAE + margin" (Welch's statistic on the mean absolute errors)."""
    if canary.labelled < 2 or stable.labelled < 2:
        return 1.0
    rise = canary.absolute_error / canary.labelled - stable.absolute_error / stable.labelled
    variance = _error_variance(canary) / canary.labelled + _error_variance(stable) / stable.labelled
    if variance <= 0.0:
        return 0.0 if rise > margin else 1.0
    return _upper_tail((rise - margin) / math.sqrt(variance))

"""Every ModelDeployment's resync timer starts as the operator starts; its first delay is drawn, so the resyncs of
a fleet come spread over an interval instead of in one burst each interval."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import kopf
from kopf._core.intents.handlers import TimerHandler

from esteira.controller.handlers import register, resync


def test_resync_first_delays_are_spread_over_an_interval() -> None:
    registry = kopf.OperatorRegistry()
    register(registry, resync_seconds=60.0, kubeconfig=None)
    (timer,) = [h for h in registry._spawning.get_all_handlers() if h.fn is resync]
    assert isinstance(timer, TimerHandler) and timer.interval == 60.0
    assert callable(timer.initial_delay)
    first_delay = cast(Callable[..., float], timer.initial_delay)  # Kopf calls it with the object's kwargs
    delays = [first_delay(name="iris", namespace="models") for _ in range(200)]
    assert all(30.0 <= delay <= 90.0 for delay in delays)
    assert max(delays) - min(delays) > 45.0, "drawn over the whole range, not one value"

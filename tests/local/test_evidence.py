"""`esteira up`'s evidence read from a real model server of each runtime: outcomes and latency from the router,
predicted classes and drift counters from the server's own metrics, through the same functions the runtime
uses for analysis and drift monitoring."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest

from esteira.local.drift import drift_totals
from esteira.local.provider import class_counts
from esteira.local.runtime import LocalRuntime
from esteira.local.server import free_port
from tests.local.conftest import RUNTIMES, RuntimeThread, http, need_runtime, wait_for, write_manifest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("local")]
REQUESTS = 12
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.5, 3.0, 5.5, 2.0]]


@pytest.fixture(scope="module", params=RUNTIMES, ids=lambda runtime: runtime or "torchserve")
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeThread]:
    """One revision after REQUESTS requests of two instances each."""
    need_runtime(request.param)
    root = tmp_path_factory.mktemp("evidence")
    write_manifest(root / "iris.yaml", "1.0.0", "iris-1.0.0", runtime=request.param)
    thread = RuntimeThread(LocalRuntime(root / "iris.yaml", port=free_port(), workdir=root / "run", log=print))
    thread.start()
    for _ in range(REQUESTS):
        status, _, body = http(f"{thread.runtime.url}/v1/models/iris:predict", {"instances": ROWS})
        assert status == 200, body
    yield thread
    thread.stop()


def metrics_text(thread: RuntimeThread) -> str:
    url = thread.runtime.servers[1].metrics_url
    assert url is not None
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


def test_outcomes_latency_and_classes(served: RuntimeThread) -> None:
    """The server may write its counters a moment after answering, so the classes are waited for."""
    instances = REQUESTS * len(ROWS)
    counters = wait_for(
        lambda: (c := served.call(served.runtime._read_counters(1))) and sum(c.classes.values()) == instances and c,
        10,
        f"{instances} predicted classes counted",
    )
    assert counters.outcomes.get("ok") == REQUESTS
    assert sum(counters.buckets) == REQUESTS
    assert class_counts(metrics_text(served), 1) == counters.classes


def test_drift_counters(served: RuntimeThread) -> None:
    instances = REQUESTS * len(ROWS)
    totals = wait_for(
        lambda: (t := drift_totals(metrics_text(served), 1)).instances == instances and t,
        10,
        f"{instances} instances counted for drift",
    )
    assert totals.reference and sum(totals.bins.values()) == instances * len(ROWS[0])

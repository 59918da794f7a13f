"""esteira-kserve stopping (SIGTERM, as the kubelet sends it) posts the inference records it still holds before
it exits: the records of a pod stopped at the end of a rollout are the canary's last evidence."""

from __future__ import annotations

from pathlib import Path

import pytest

from esteira.vocabulary import COLLECTOR_RECORDS_PATH
from tests.support.cloudevents_sink import RefusingUntilSet, predict_iris, sink
from tests.support.kserve_runtime import KServeRuntimeProcess
from tests.support.prerequisites import require_file
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow]

IRIS = Path(__file__).resolve().parents[2] / "build" / "models" / "iris-1.0.0"
REFUSED_POSTS = 5  # the sender's next retry is then 0.8-1.6 s away: longer than the server takes to stop


def test_records_held_at_sigterm_are_posted_before_the_server_exits(tmp_path: Path) -> None:
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    collector = RefusingUntilSet()
    ids = [f"exit-{index}" for index in range(20)]
    with sink(collector) as (url, posts):
        env = {"ESTEIRA_LOG_MODE": "request", "ESTEIRA_LOG_URL": url + COLLECTOR_RECORDS_PATH}
        server = KServeRuntimeProcess(IRIS, tmp_path, "1.0.0", env=env).start()
        try:
            predict_iris(server.url, ids)
            eventually(lambda: len(posts) >= REFUSED_POSTS, 30, "the collector refusing the records' posts")
            collector.accepting.set()
        finally:
            server.stop()
    assert collector.delivered_ids() == set(ids)

"""esteira-kserve stopping (SIGTERM, as the kubelet sends it) posts the inference records it still holds before
it exits: the records of a pod stopped at the end of a rollout are the canary's last evidence."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import pytest

from esteira.vocabulary import COLLECTOR_RECORDS_PATH
from tests.support.cloudevents_sink import Post, sink
from tests.support.kserve_runtime import KServeRuntimeProcess
from tests.support.prerequisites import require_file
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow]

IRIS = Path(__file__).resolve().parents[2] / "build" / "models" / "iris-1.0.0"
REFUSED_POSTS = 5  # the sender's next retry is then 0.8-1.6 s away: longer than the server takes to stop


def test_records_held_at_sigterm_are_posted_before_the_server_exits(tmp_path: Path) -> None:
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    accepting = threading.Event()
    accepted: list[Post] = []

    def answer(posts: list[Post]) -> tuple[int, dict[str, str]]:
        if not accepting.is_set():
            return 503, {}
        accepted.append(posts[-1])
        return 204, {}

    ids = [f"exit-{index}" for index in range(20)]
    with sink(answer) as (url, posts):
        env = {"ESTEIRA_LOG_MODE": "request", "ESTEIRA_LOG_URL": url + COLLECTOR_RECORDS_PATH}
        server = KServeRuntimeProcess(IRIS, tmp_path, "1.0.0", env=env).start()
        try:
            for request_id in ids:
                body = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()
                headers = {"Content-Type": "application/json", "x-request-id": request_id}
                request = urllib.request.Request(f"{server.url}/v1/models/iris:predict", body, headers)
                with urllib.request.urlopen(request, timeout=30) as response:
                    assert response.status == 200
            eventually(lambda: len(posts) >= REFUSED_POSTS, 30, "the collector refusing the records' posts")
            accepting.set()
        finally:
            server.stop()
    delivered = {record["id"] for post in accepted for record in json.loads(post.body)}
    assert delivered == set(ids)

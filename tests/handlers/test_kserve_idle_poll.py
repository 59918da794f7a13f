"""esteira-kserve's idle poll (``ESTEIRA_IDLE_POLL_US``) in the real server: a bad value stops it at start with the
variable named; with a poll, lone requests are answered exactly as without one, and the time spent polling is
exported."""

from __future__ import annotations

import http.client
import json
import re
import urllib.request
from pathlib import Path

import pytest

from tests.support.kserve_runtime import KServeRuntimeProcess, refusal_at_start
from tests.support.prerequisites import require_file

pytestmark = [pytest.mark.slow]

MODELS = Path(__file__).resolve().parents[2] / "build" / "models"
IRIS = MODELS / "iris-1.0.0"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [4.4, 2.9, 1.4, 0.2]]


def _predict(url: str, row: list[float]) -> tuple[int, dict[str, object]]:
    body = json.dumps({"instances": [row]}).encode()
    request = urllib.request.Request(
        f"{url}/v1/models/iris:predict", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, json.loads(answer.read())


def _polled_seconds(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    found = re.search(r'^esteira_idle_poll_seconds_total\{ModelName="iris"\} (\S+)$', text, re.MULTILINE)
    assert found, "esteira_idle_poll_seconds_total is not exported"
    return float(found.group(1))


def _one_caller(url: str, requests: int) -> None:
    """Requests one after another on one kept-alive connection: a lone caller that comes back at once."""
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    body = json.dumps({"instances": [ROWS[0]]})
    for _ in range(requests):
        connection.request("POST", "/v1/models/iris:predict", body, {"Content-Type": "application/json"})
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 200
    connection.close()


def test_a_bad_idle_poll_stops_esteira_kserve_at_start_naming_the_variable(tmp_path: Path) -> None:
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    refusal = refusal_at_start(IRIS, tmp_path, {"ESTEIRA_IDLE_POLL_US": "5000"})
    assert "ESTEIRA_IDLE_POLL_US=5000 is outside 0..1000" in refusal


def test_with_an_idle_poll_lone_requests_are_answered_as_without(tmp_path: Path) -> None:
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    answers, polled = [], []
    for name, env in (("plain", {}), ("polling", {"ESTEIRA_IDLE_POLL_US": "1000"})):
        with KServeRuntimeProcess(IRIS, tmp_path / name, "1.0.0", env=env) as server:
            answers.append([_predict(server.url, row) for _ in range(5) for row in ROWS])
            _one_caller(server.url, 200)
            polled.append(_polled_seconds(server.url))
    plain, polling = answers
    assert all(status == 200 for status, _ in plain)
    assert polling == plain
    assert polled[0] == 0.0  # off: no poll at all
    lone_requests = 5 * len(ROWS) + 200
    assert 0.0 < polled[1] < lone_requests * 1e-3  # some polls, none past the limit

"""esteira-kserve's idle poll (``ESTEIRA_IDLE_POLL_US``) in the real server: a bad value stops it at start with the
variable named; with a poll, lone requests are answered exactly as without one."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.support.kserve_runtime import KServeRuntimeProcess
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


def test_a_bad_idle_poll_stops_esteira_kserve_at_start_naming_the_variable(tmp_path: Path) -> None:
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    server = KServeRuntimeProcess(IRIS, tmp_path, "1.0.0", env={"ESTEIRA_IDLE_POLL_US": "5000"})
    with pytest.raises(RuntimeError, match="did not become ready") as refused:
        server.start(within=60)
    assert "ESTEIRA_IDLE_POLL_US=5000 is outside 0..1000" in str(refused.value)


def test_with_an_idle_poll_lone_requests_are_answered_as_without(tmp_path: Path) -> None:
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    answers = []
    for name, env in (("plain", {}), ("polling", {"ESTEIRA_IDLE_POLL_US": "1000"})):
        with KServeRuntimeProcess(IRIS, tmp_path / name, "1.0.0", env=env) as server:
            answers.append([_predict(server.url, row) for _ in range(5) for row in ROWS])
    plain, polling = answers
    assert all(status == 200 for status, _ in plain)
    assert polling == plain

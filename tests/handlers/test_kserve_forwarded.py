"""esteira-kserve behind a proxy: KServe's routes see the forwarded scheme and client as before, while inference
skips the proxy-headers middleware unless the access log, which names the client, is on."""

from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path

import pytest

from tests.support.kserve_runtime import RUNTIME_PYTHON, KServeRuntimeProcess
from tests.support.prerequisites import require_file
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow]

IRIS = Path(__file__).resolve().parents[2] / "build" / "models" / "iris-1.0.0"
CLIENT = "203.0.113.7"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-For": CLIENT}  # from 127.0.0.1, a trusted proxy


def _exchange(url: str, method: str, path: str, body: str | None = None) -> tuple[int, str | None, bytes]:
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    try:
        connection.request(method, path, body, {**FORWARDED, "Content-Type": "application/json"})
        answer = connection.getresponse()
        return answer.status, answer.getheader("Location"), answer.read()
    finally:
        connection.close()


def _predict(url: str) -> dict[str, object]:
    status, _, body = _exchange(
        url, "POST", "/v1/models/iris:predict", json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})
    )
    assert status == 200, body
    answer: dict[str, object] = json.loads(body)
    return answer


def test_kserve_routes_see_the_forwarded_scheme_and_inference_answers_as_ever(tmp_path: Path) -> None:
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    with KServeRuntimeProcess(IRIS, tmp_path, "1.0.0") as server:
        status, location, _ = _exchange(server.url, "GET", "/v2/health/ready/")  # KServe's app redirects the slash
        assert status == 307
        assert location is not None and location.startswith("https://"), location
        predictions = _predict(server.url)["predictions"]
        assert isinstance(predictions, list) and predictions[0]["label"] == "setosa"


def test_with_the_access_log_on_an_inference_line_names_the_forwarded_client(tmp_path: Path) -> None:
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    with KServeRuntimeProcess(IRIS, tmp_path, "1.0.0", args=["--log-requests"]) as server:
        _predict(server.url)
        line = eventually(
            lambda: next(
                (row for row in server.log_path.read_text().splitlines() if "POST /v1/models/iris" in row), None
            ),
            what="the access line of the inference request",
        )
        assert f"{CLIENT}:" in line, line


# As the server sets its logging up: the root's handler first, KServe's configuration, then the quieting.
_QUIETED = """
import logging
logging.basicConfig(level=logging.INFO)
import kserve
from model_handlers.kserve_server import REQUEST_LOGGERS, quiet_request_logs
quiet_request_logs()
print(logging.getLogger("uvicorn.access").hasHandlers(), *(logging.getLogger(n).level for n in REQUEST_LOGGERS))
"""


def test_without_the_access_log_uvicorn_finds_no_handler_to_work_out_an_access_line_for() -> None:
    """uvicorn works out each access line's arguments whenever its access logger has a handler, its own or the
    root's it propagates to, whatever the level; without ``--log-requests`` it has neither."""
    require_file(RUNTIME_PYTHON, "run `make kserve-runtime`")
    result = subprocess.run([str(RUNTIME_PYTHON), "-c", _QUIETED], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "30", "30"]  # no handler; KServe's timing and the access lines off

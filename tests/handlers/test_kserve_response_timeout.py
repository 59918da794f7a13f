"""esteira-kserve when its model stops answering: a batch that runs past the model's ``responseTimeout`` has its
callers and those waiting answered with a 503 that says why, and the server exits to be restarted with a fresh
model, as TorchServe restarts a worker that does not answer in time."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from model_handlers.watchdog import EXIT_STATUS
from tests.support.gated_model import package_gated
from tests.support.kserve_runtime import KServeRuntimeProcess
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow]

BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()


def _predict(url: str) -> tuple[int, dict[str, str], dict[str, object]]:
    request = urllib.request.Request(f"{url}/v1/models/gated:predict", BODY, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def test_a_batch_past_the_response_timeout_is_answered_503_with_those_waiting_and_the_server_exits(
    tmp_path: Path,
) -> None:
    gate, waiting = tmp_path / "gate-open", tmp_path / "held"
    gate.touch()
    server = KServeRuntimeProcess(
        package_gated(tmp_path, gate, waiting, response_timeout_s=2), tmp_path / "run", "1.0.0"
    )
    with server, ThreadPoolExecutor(max_workers=2) as pool:
        assert _predict(server.url)[0] == 200  # 20 ms on the loop: the batches after it run in the thread
        gate.unlink()  # and stays shut: the model never answers again
        held = pool.submit(_predict, server.url)
        eventually(waiting.exists, what="the first request held in the model")
        queued = pool.submit(_predict, server.url)
        answers = [held.result(timeout=30), queued.result(timeout=30)]
        status = eventually(server.exit_status, timeout=30, what="esteira-kserve to exit")
        log = server.log_path.read_text()
    reason = "did not answer a batch within its response timeout (2 s); the server restarts"
    assert [answer[0] for answer in answers] == [503, 503]
    assert [answer[2] for answer in answers] == [{"error": f"model 'gated' {reason}; retry later"}] * 2
    assert status == EXIT_STATUS
    assert "past its response timeout of 2 s (responseTimeout)" in log

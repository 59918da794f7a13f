"""esteira-kserve when its model cannot keep up: a request that finds ``job_queue_size`` others waiting is refused
at once with a 503 that says why and when to retry, and counts as a server error of the revision, where the
canary analysis reads errors, while the requests already admitted are answered; a batch that runs past the
model's ``responseTimeout`` has its callers and those waiting answered with a 503, and the server exits to be
restarted with a fresh model, as TorchServe restarts a worker that does not answer in time."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from model_handlers.watchdog import EXIT_STATUS
from tests.support.eager_package import eager_model, package_eager
from tests.support.kserve_runtime import KServeRuntimeProcess
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow]

# An eager model (its code in the archive): every call waits while the gate file is missing, and takes at least
# 20 ms, so that the batcher runs its batches in its thread and the event loop stays free to read and refuse.
GATED_MODEL = """
import os
import time

import torch


class GatedClassifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not os.path.exists(GATE):
            open(WAITING, "w").close()
            while not os.path.exists(GATE):
                time.sleep(0.005)
        time.sleep(0.02)
        return self.linear(x)
"""
QUEUE_SIZE = 1
CALLERS = 6  # beside the one held in the model: one waits, the rest are refused
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()


def _package(root: Path, gate: Path, waiting: Path, **settings: int) -> Path:
    source = f"GATE = {str(gate)!r}\nWAITING = {str(waiting)!r}\n{GATED_MODEL}"
    config = {"kind": "tabular", "task": "classification", "n_features": 4, "labels": ["a", "b", "c"]}
    model = eager_model(source, "GatedClassifier")
    return package_eager(root, "gated", source, model, config, **settings)


def _predict(url: str) -> tuple[int, dict[str, str], dict[str, object]]:
    request = urllib.request.Request(f"{url}/v1/models/gated:predict", BODY, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def _server_errors(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        lines = answer.read().decode().splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("esteira_requests_total{") and 'outcome="server_error"' in line
    )


def test_a_request_beyond_the_queue_is_refused_at_once_and_counted_and_the_admitted_are_answered(
    tmp_path: Path,
) -> None:
    gate, waiting = tmp_path / "gate-open", tmp_path / "held"
    gate.touch()  # open while the model loads and its first batch, on the event loop, is timed
    with (
        KServeRuntimeProcess(
            _package(tmp_path, gate, waiting, job_queue_size=QUEUE_SIZE), tmp_path / "run", "1.0.0"
        ) as server,
        ThreadPoolExecutor(max_workers=CALLERS + 1) as pool,
    ):
        assert _predict(server.url)[0] == 200  # 20 ms on the loop: the batches after it run in the thread
        gate.unlink()
        refused = CALLERS - QUEUE_SIZE
        try:
            held = pool.submit(_predict, server.url)
            eventually(waiting.exists, what="the first request held in the model")
            callers: list[Future[tuple[int, dict[str, str], dict[str, object]]]] = [
                pool.submit(_predict, server.url) for _ in range(CALLERS)
            ]
            eventually(
                lambda: sum(1 for caller in callers if caller.done()) >= refused,
                what=f"{refused} requests refused while the model is held",
            )
            answered_early = [caller.result() for caller in callers if caller.done()]
        finally:
            gate.touch()  # whatever happened, the model goes on and the server can stop
        answers = [held.result(), *(caller.result() for caller in callers)]
        errors = _server_errors(server.url)
    assert [status for status, _, _ in answered_early] == [503] * refused
    assert sorted(status for status, _, _ in answers) == [200] * (1 + QUEUE_SIZE) + [503] * refused
    _, headers, body = answered_early[0]
    assert {key.lower(): value for key, value in headers.items()}["retry-after"] == "1"
    assert body == {
        "error": "model 'gated' is at capacity: its queue holds the most requests it may (1, job_queue_size); "
        "retry later"
    }
    assert errors == refused


def test_a_batch_past_the_response_timeout_is_answered_503_with_those_waiting_and_the_server_exits(
    tmp_path: Path,
) -> None:
    gate, waiting = tmp_path / "gate-open", tmp_path / "held"
    gate.touch()
    server = KServeRuntimeProcess(_package(tmp_path, gate, waiting, response_timeout_s=2), tmp_path / "run", "1.0.0")
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

"""esteira-kserve does not run a request whose caller left while it waited, nor one it would answer after the
deadline its proxy announced: under more load than the model serves, callers give up and come back, and a queue
that ran what they left behind would spend the model on answers nobody reads."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from esteira.vocabulary import EXPECTED_TIMEOUT_HEADER
from tests.support.gated_model import package_gated
from tests.support.kserve_runtime import KServeRuntimeProcess, request_counts
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow]

BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()


def _predict(url: str) -> int:
    request = urllib.request.Request(f"{url}/v1/models/gated:predict", BODY, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return answer.status


def _send_and_leave(url: str) -> None:
    """A caller that sends its request and closes its side; returns once the server has read both and closed
    the connection without an answer."""
    address = urlsplit(url)
    head = (
        f"POST /v1/models/gated:predict HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=30) as caller:
        caller.sendall(head.encode() + BODY)
        caller.shutdown(socket.SHUT_WR)
        assert caller.recv(65536) == b"", "the server answered a caller that had left"


def test_a_request_whose_caller_left_while_it_waited_is_not_run_and_is_counted(tmp_path: Path) -> None:
    gate, waiting = tmp_path / "gate-open", tmp_path / "held"
    gate.touch()
    server = KServeRuntimeProcess(package_gated(tmp_path, gate, waiting), tmp_path / "run", "1.0.0")
    with server, ThreadPoolExecutor(max_workers=2) as pool:
        assert _predict(server.url) == 200  # 20 ms on the loop: the batches after it run in the thread
        before = request_counts(f"{server.url}/metrics")
        assert before == {"ok": 1, "abandoned": 0}  # the series exists before its first count
        gate.unlink()
        held = pool.submit(_predict, server.url)
        eventually(waiting.exists, what="the first request held in the model")
        _send_and_leave(server.url)
        stays = pool.submit(_predict, server.url)
        gate.touch()
        assert [held.result(timeout=30), stays.result(timeout=30)] == [200, 200]

        def counted() -> dict[str, float] | None:
            counts = request_counts(f"{server.url}/metrics")
            return counts if counts["abandoned"] else None

        after = eventually(counted, what="the abandoned request counted")
    assert after == {"ok": 3, "abandoned": 1}  # the model ran the callers that stayed, and only them


def _predict_within(url: str, milliseconds: int) -> tuple[int, dict[str, object]]:
    """A request whose proxy says it waits ``milliseconds`` for the answer, as Envoy says it."""
    headers = {"Content-Type": "application/json", EXPECTED_TIMEOUT_HEADER: str(milliseconds)}
    request = urllib.request.Request(f"{url}/v1/models/gated:predict", BODY, headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_request_that_cannot_be_answered_before_its_proxy_gives_up_is_refused_at_once(tmp_path: Path) -> None:
    """Behind a batch held in the model (each batch takes 20 ms at least), a request whose proxy waits 1 ms is
    refused with a 503 that says why, counted as a server error, and never run; one whose proxy waits a minute
    is answered."""
    gate, waiting = tmp_path / "gate-open", tmp_path / "held"
    gate.touch()
    server = KServeRuntimeProcess(package_gated(tmp_path, gate, waiting), tmp_path / "run", "1.0.0")
    with server, ThreadPoolExecutor(max_workers=3) as pool:
        assert _predict(server.url) == 200  # 20 ms on the loop: the batches after it run in the thread
        gate.unlink()
        held = pool.submit(_predict, server.url)
        eventually(waiting.exists, what="the first request held in the model")
        hurried = pool.submit(_predict_within, server.url, 1)
        patient = pool.submit(_predict_within, server.url, 60_000)
        gate.touch()
        answers = [held.result(timeout=30), hurried.result(timeout=30), patient.result(timeout=30)]
        counts = request_counts(f"{server.url}/metrics")
    assert answers[0] == 200 and answers[2][0] == 200
    assert answers[1] == (503, {"error": "model 'gated' could not answer within the caller's deadline; retry later"})
    assert counts == {"ok": 3, "abandoned": 0}  # the warm-up, the held and the patient: the hurried never ran

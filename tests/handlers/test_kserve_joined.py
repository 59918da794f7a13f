"""Requests joined by ``esteira up``'s router before the real esteira-kserve: on its Unix socket each request
joined in one is answered as it would be alone (its own status and prediction) and counted and timed as a request;
on its port a joined body is one request, not read as joined."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest

from esteira.packaging.joiner import Joiner, Joining
from esteira.packaging.upstream import Reply, Upstream
from model_handlers.joined import JOINED_CONTENT_TYPE, JOINED_HEADER, answer_of, frame, request_entry, unframe
from tests.support.kserve_runtime import KServeRuntimeProcess
from tests.support.prerequisites import require_file
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow]

IRIS = Path(__file__).resolve().parents[2] / "build" / "models" / "iris-1.0.0"
PATH = "/v1/models/iris:predict"
JSON = {"content-type": "application/json"}
REQUESTS = re.compile(r'^esteira_requests_total\{ModelName="iris",Revision="[^"]*",outcome="(\w+)"\} (\S+)$', re.M)
TIMED = re.compile(r'^esteira_server_request_duration_seconds_count\{ModelName="iris",Revision="[^"]*"\} (\S+)$', re.M)


class Recording(Upstream):
    """An upstream that keeps how many requests each request it sent joined (0: one on its own)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.sent: list[int] = []

    async def request(self, method: str, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> Reply:
        self.sent.append(int((headers or {}).get(JOINED_HEADER, 0)))
        return await super().request(method, path, body, headers)


def body(*rows: list[float]) -> bytes:
    return json.dumps({"instances": [list(row) for row in rows]}).encode()


def predicted(reply: Reply | bytes) -> list[float]:
    """The one prediction of an answer: each class's probability, the label's first."""
    (prediction,) = json.loads(reply.body if isinstance(reply, Reply) else reply)["predictions"]
    probabilities = prediction["probabilities"]
    return [probabilities[prediction["label"]], *probabilities.values()]


def counts(url: str) -> tuple[dict[str, float], float]:
    """The handler's requests by outcome, and the requests the server timed."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    timed = TIMED.search(text)
    return {outcome: float(value) for outcome, value in REQUESTS.findall(text)}, float(timed.group(1)) if timed else 0


@pytest.mark.parametrize("workers", ["1", "2"])  # with two, the supervisor binds the socket and both accept on it
def test_on_its_socket_each_joined_request_is_answered_counted_and_timed_as_one_alone(
    tmp_path: Path, workers: str
) -> None:
    require_file(IRIS / "config" / "config.properties", "run `make models`")
    socket_path = tmp_path / "http.sock"
    rows = [[5.1 + index / 10, 3.5, 1.4 + index / 5, 0.2 + index / 20] for index in range(40)]

    async def scenario(url: str) -> tuple[list[Reply], list[Reply], Reply, Reply, list[int]]:
        direct = Upstream(f"unix:{socket_path}")
        alone = [await direct.request("POST", PATH, body(row), JSON) for row in rows]
        entries = [request_entry(JSON, body(rows[0])), request_entry(JSON, b"{not json")]
        two = {"content-type": JOINED_CONTENT_TYPE, JOINED_HEADER: "2"}
        framed = await direct.request("POST", PATH, frame(entries), two)
        on_the_port = await Upstream(url).request("POST", PATH, frame(entries), two)
        recording = Recording(f"unix:{socket_path}")
        joining = Joining.for_batcher(8, int(workers), 1 << 20)
        assert joining is not None
        joiner = Joiner(recording, joining)
        together = await asyncio.gather(
            *(joiner.post(PATH, body(row), JSON, caller) for caller, row in enumerate(rows))
        )
        for upstream in (direct, recording):
            upstream.close()
        return alone, list(together), framed, on_the_port, recording.sent

    args = ["--unix-socket", str(socket_path)]
    with KServeRuntimeProcess(IRIS, tmp_path, "1.0.0", env={"ESTEIRA_WORKERS": workers}, args=args) as server:
        alone, together, framed, on_the_port, sent = asyncio.run(scenario(server.url))
        assert [reply.status for reply in alone] == [200] * len(rows)
        for joined_reply, alone_reply in zip(together, alone, strict=True):  # batches round apart
            assert predicted(joined_reply) == pytest.approx(predicted(alone_reply), abs=1e-6)
        alone_first = 16 * int(workers)  # two batches a worker go alone, the rest joined
        assert sent[:alone_first] == [0] * alone_first and max(sent) > 1
        assert sum(count or 1 for count in sent) == len(rows)
        assert (framed.status, framed.headers[JOINED_HEADER]) == (200, "2")
        (ok, ok_headers, ok_body), (bad, _, bad_body) = map(answer_of, unframe(framed.body, 2))
        assert (ok, predicted(ok_body)) == (200, pytest.approx(predicted(alone[0]), abs=1e-6))
        assert ok_headers["content-type"] == "application/json"
        assert bad == 400 and "JSON" in json.loads(bad_body)["error"]
        assert on_the_port.status == 400 and JOINED_HEADER not in on_the_port.headers  # one request, not joined
        # every request a caller sent counted once: the 40 alone, the 40 joined, the framed pair's good one
        expected = 2 * len(rows) + 1
        eventually(lambda: counts(server.url)[0].get("ok") == expected, 30, "each joined request counted")
        answered, timed = counts(server.url)
        assert answered.get("client_error") == 2  # the pair's bad one, and the port's request, one whole body
        assert timed == expected + 2

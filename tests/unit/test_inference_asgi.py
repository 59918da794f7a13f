"""esteira-kserve's inference layer: inference to the batcher, everything else to KServe's application."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from esteira.vocabulary import EXPECTED_TIMEOUT_HEADER
from model_handlers.batcher import AdaptiveBatcher
from model_handlers.inference_asgi import (
    CALLER_LEFT,
    InferenceRoutes,
    Message,
    Receive,
    Scope,
    Send,
)
from model_handlers.joined import JOINED_CONTENT_TYPE, JOINED_HEADER, answer_of, frame, request_entry, unframe
from model_handlers.messages import Answer, RawRequest, answered_too_late, caller_left

BINARY = "inference-header-content-length"


class Echo:
    """A model that answers each request with its body's length, and a header the layer must not pass on."""

    def __init__(self) -> None:
        self.seen: list[RawRequest] = []

    def __call__(self, requests: Sequence[RawRequest]) -> list[Answer]:
        self.seen.extend(requests)
        headers = {"Content-Type": "application/octet-stream", BINARY: "12", "X-Internal": "no"}
        return [Answer(200, str(len(request.body)).encode(), headers) for request in requests]


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": scope["path"].encode()})


def call(
    method: str, path: str, chunks: Sequence[bytes], headers: dict[str, str] | None = None, model: Echo | None = None
) -> dict[str, Any]:
    """One request through the layer; the status, headers and body it sent back, what the model saw, and the
    durations the layer observed."""
    model = model or Echo()
    observed: list[float] = []
    refused: list[int] = []

    async def scenario() -> list[Message]:
        batcher = AdaptiveBatcher(model, max_batch_size=4)
        routes = InferenceRoutes(
            inner, batcher, "iris", "1.0.0", max_body=10, refused=refused.append, observe=observed.append
        )
        incoming = [
            {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
            for index, chunk in enumerate(chunks)
        ]
        sent: list[Message] = []

        async def receive() -> Message:
            return incoming.pop(0)

        async def send(message: Message) -> None:
            sent.append(message)

        raw = [(key.encode(), value.encode()) for key, value in (headers or {}).items()]
        await routes({"type": "http", "method": method, "path": path, "headers": raw}, receive, send)
        batcher.close()
        return sent

    sent = asyncio.run(scenario())
    start, body = sent[0], sent[1]
    return {
        "status": start["status"],
        "headers": {key.decode(): value.decode() for key, value in start["headers"]},
        "body": body["body"],
        "seen": model.seen,
        "refused": refused,
        "observed": observed,
    }


def test_a_v1_predict_goes_to_the_batcher_with_its_headers_and_only_protocol_headers_come_back() -> None:
    sent = {"Content-Type": "application/json", JOINED_HEADER: "2"}
    answer = call("POST", "/v1/models/iris:predict", [b"abc", b"de"], sent)
    assert (answer["status"], answer["body"]) == (200, b"5")
    assert answer["seen"][0].headers == {"content-type": "application/json"}  # a caller's joined count is dropped
    assert answer["headers"] == {"content-type": "application/octet-stream", BINARY: "12", "content-length": "1"}


class Slow(Echo):
    """A model that takes 30 ms a batch."""

    def __call__(self, requests: Sequence[RawRequest]) -> list[Answer]:
        time.sleep(0.03)
        return super().__call__(requests)


def test_each_request_that_reaches_the_model_is_timed_to_its_answer() -> None:
    answer = call("POST", "/v1/models/iris:predict", [b"{}"], model=Slow())
    assert answer["status"] == 200 and len(answer["observed"]) == 1
    assert 0.03 <= answer["observed"][0] < 5
    for refused in (
        call("POST", "/v2/models/wine/infer", [b"{}"]),
        call("POST", "/v1/models/iris:predict", [b"x" * 11]),
    ):
        assert refused["status"] in (404, 413) and refused["observed"] == []  # the model never had them


def test_v2_infer_with_and_without_a_version() -> None:
    assert call("POST", "/v2/models/iris/infer", [b"{}"])["body"] == b"2"
    assert call("POST", "/v2/models/iris/versions/1.0.0/infer", [b"{}"])["body"] == b"2"


def test_another_model_or_version_is_a_404_naming_it() -> None:
    other = call("POST", "/v2/models/wine/infer", [b"{}"])
    assert other["status"] == 404 and "'wine' is not served here" in json.loads(other["body"])["error"]
    version = call("POST", "/v2/models/iris/versions/2.0.0/infer", [b"{}"])
    assert version["status"] == 404 and "no version '2.0.0' (serving: 1.0.0)" in json.loads(version["body"])["error"]
    assert other["seen"] == version["seen"] == []


def test_a_body_over_the_limit_is_a_413_whether_declared_or_streamed() -> None:
    declared = call("POST", "/v1/models/iris:predict", [b"x" * 11], {"content-length": "11"})
    streamed = call("POST", "/v1/models/iris:predict", [b"x" * 6, b"x" * 6])
    for answer, size in ((declared, 11), (streamed, 12)):
        assert answer["status"] == 413
        assert json.loads(answer["body"])["error"] == f"the request body of {size} bytes exceeded the limit of 10 bytes"
        assert answer["seen"] == [] and answer["refused"] == [413], "counted, as TorchServe's path counts it"


def test_a_body_declared_over_the_limit_and_expecting_a_continue_is_refused_before_it_is_asked_for() -> None:
    """Asking for the body (``receive``) makes the server send 100 Continue, and the client uploads a body that
    is then thrown away; no chunk is given here, so asking for one fails the test."""
    headers = {"content-length": "1000000000", "expect": "100-continue"}
    answer = call("POST", "/v1/models/iris:predict", [], headers)
    assert (answer["status"], answer["headers"]["connection"], answer["refused"]) == (413, "close", [413])
    assert "of 1000000000 bytes exceeded the limit of 10 bytes" in json.loads(answer["body"])["error"]


def test_a_wrong_method_on_an_inference_path_is_a_405() -> None:
    answer = call("GET", "/v1/models/iris:predict", [b""])
    assert answer["status"] == 405 and answer["headers"]["allow"] == "POST"
    assert json.loads(answer["body"])["error"] == "GET is not allowed on /v1/models/iris:predict; use POST"


def test_every_other_path_goes_to_kserves_application() -> None:
    for method, path in (("GET", "/v2/models/iris"), ("POST", "/v2/repository/index"), ("GET", "/metrics")):
        answer = call(method, path, [b""])
        assert (answer["status"], answer["body"]) == (299, path.encode())


def test_a_request_the_halted_batcher_refuses_is_a_503_with_retry_after_and_is_counted() -> None:
    refusals: list[int] = []
    observed: list[float] = []

    async def scenario() -> list[Message]:
        batcher = AdaptiveBatcher(Echo(), max_batch_size=4)
        batcher.halt("did not answer a batch within its response timeout (2 s); the server restarts")
        routes = InferenceRoutes(
            inner, batcher, "iris", "1.0.0", max_body=10, refused=refusals.append, observe=observed.append
        )
        incoming = [{"type": "http.request", "body": b"{}", "more_body": False}]
        sent: list[Message] = []

        async def receive() -> Message:
            return incoming.pop(0)

        async def send(message: Message) -> None:
            sent.append(message)

        await routes(
            {"type": "http", "method": "POST", "path": "/v1/models/iris:predict", "headers": []}, receive, send
        )
        batcher.close()
        return sent

    start, body = asyncio.run(scenario())
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"1" and headers[b"content-type"] == b"application/json"
    assert json.loads(body["body"]) == {
        "error": "model 'iris' did not answer a batch within its response timeout (2 s); the server restarts; "
        "retry later"
    }
    assert refusals == [503] and len(observed) == 1  # answered by the server: timed as any other answer


class Held(Echo):
    """Echo whose first batch waits for ``release``, so that requests queue behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.running, self.release = threading.Event(), threading.Event()

    def __call__(self, requests: Sequence[RawRequest]) -> list[Answer]:
        self.running.set()
        self.release.wait(10)
        return super().__call__(requests)


WHOLE: Message = {"type": "http.request", "body": b"{}", "more_body": False}


class Callers:
    """v1 predict requests through one ``InferenceRoutes``, each under a name, with what each was sent."""

    def __init__(self, routes: InferenceRoutes) -> None:
        self.routes = routes
        self.sent: dict[str, list[Message]] = {}

    def request(
        self, name: str, body: Message = WHOLE, headers: Sequence[tuple[bytes, bytes]] = (), **scope: Any
    ) -> asyncio.Future[None]:
        sent = self.sent.setdefault(name, [])

        async def receive() -> Message:
            return body

        async def send(message: Message) -> None:
            sent.append(message)

        full: Scope = {"type": "http", "method": "POST", "path": "/v1/models/iris:predict", "headers": list(headers)}
        return asyncio.ensure_future(self.routes({**full, **scope}, receive, send))


def test_a_request_whose_caller_left_while_it_waited_is_not_run_answered_or_counted_as_an_error() -> None:
    """The server's protocol says, through the scope, whether a request's caller is still there: one that left
    while its request waited behind a running batch gets nothing, the model never sees the request, and it is
    counted as abandoned and timed; the caller that stayed is answered. A caller that left before its body was
    read is counted too, and its request never reaches the batcher."""
    model = Held()
    abandoned: list[None] = []
    observed: list[float] = []
    left: dict[str, float | None] = {"stays": None, "leaves": None}

    async def scenario() -> dict[str, list[Message]]:
        # in the thread, so that the loop stays free
        batcher = AdaptiveBatcher(model, max_batch_size=4, inline_below=0.0, left=caller_left)
        count = functools.partial(abandoned.append, None)
        callers = Callers(
            InferenceRoutes(inner, batcher, "iris", "1.0.0", 10, observe=observed.append, abandoned=count)
        )
        first = callers.request("first")
        await asyncio.get_running_loop().run_in_executor(None, model.running.wait, 10)
        queued = [callers.request(name, **{CALLER_LEFT: lambda name=name: left[name]}) for name in left]
        await callers.request("early", {"type": "http.disconnect"})
        await asyncio.sleep(0)
        left["leaves"] = time.perf_counter()
        model.release.set()
        await asyncio.gather(first, *queued)
        batcher.close()
        return callers.sent

    sent = asyncio.run(scenario())
    assert [message["status"] for message in sent["first"] + sent["stays"] if "status" in message] == [200, 200]
    assert sent["leaves"] == sent["early"] == []
    assert len(model.seen) == 2
    assert len(abandoned) == 2 and len(observed) == 3  # the early leaver never reached the model: not timed


def test_a_request_its_batch_would_answer_after_the_proxys_timeout_is_a_503_at_once_and_counted() -> None:
    """Behind a held batch of 10 ms or more, a request whose proxy waits 1 ms cannot be answered in time: it gets a
    503 saying so, counted as a refusal and timed; one without a deadline is answered."""
    model = Held()
    refusals: list[int] = []
    observed: list[float] = []

    async def scenario() -> dict[str, list[Message]]:
        batcher = AdaptiveBatcher(model, max_batch_size=4, inline_below=0.0, late=answered_too_late)
        callers = Callers(
            InferenceRoutes(inner, batcher, "iris", "1.0.0", 10, refused=refusals.append, observe=observed.append)
        )
        first = callers.request("first")
        await asyncio.get_running_loop().run_in_executor(None, model.running.wait, 10)
        hurried = callers.request("hurried", headers=[(EXPECTED_TIMEOUT_HEADER.encode(), b"1")])
        queued = [hurried, callers.request("patient")]
        await asyncio.sleep(0.01)  # the held batch takes 10 ms at least: so the batcher expects of the next
        model.release.set()
        await asyncio.gather(first, *queued)
        batcher.close()
        return callers.sent

    sent = asyncio.run(scenario())
    statuses = {name: messages[0]["status"] for name, messages in sent.items()}
    assert statuses == {"first": 200, "hurried": 503, "patient": 200}
    error = json.loads(sent["hurried"][1]["body"])["error"]
    assert error == "model 'iris' could not answer within the caller's deadline; retry later"
    assert len(model.seen) == 2 and refusals == [503] and len(observed) == 3


class Batches(Echo):
    """Echo that keeps each batch's size."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __call__(self, requests: Sequence[RawRequest]) -> list[Answer]:
        self.sizes.append(len(requests))
        return super().__call__(requests)


ROUTER_SOCKET = {"server": ("/run/esteira/http.sock", None)}  # ASGI's server for a Unix socket: [path, None]
ON_THE_PORT = {"server": ("127.0.0.1", 8080)}
JOINED_PARTS = (({"content-type": "application/json", "x-part": "a"}, b"abc"), ({"x-part": "b"}, b"de"), ({}, b""))


def joined(
    parts: Sequence[tuple[dict[str, str], bytes]], count: int, scope: dict[str, Any], model: Echo, refuse: str = ""
) -> tuple[Message, Message, list[int], list[float]]:
    """One request joining ``parts`` (saying it joins ``count``) through the layer on a batcher of 4: what was sent
    back (start, body), the refusals counted, and the durations observed."""
    refusals: list[int] = []
    observed: list[float] = []
    body = frame(request_entry(headers, part) for headers, part in parts)

    async def scenario() -> list[Message]:
        batcher = AdaptiveBatcher(model, max_batch_size=4)
        if refuse:
            batcher.halt(refuse)
        callers = Callers(InferenceRoutes(inner, batcher, "iris", "1.0.0", 1000, refusals.append, observed.append))
        headers = [(b"content-type", JOINED_CONTENT_TYPE.encode()), (JOINED_HEADER.encode(), str(count).encode())]
        await callers.request("router", {"type": "http.request", "body": body, "more_body": False}, headers, **scope)
        batcher.close()
        return callers.sent["router"]

    start, sent = asyncio.run(scenario())
    return start, sent, refusals, observed


def test_requests_joined_on_the_routers_socket_run_as_requests_of_their_own_in_one_batch_and_answer_joined() -> None:
    model = Batches()
    start, sent, _, observed = joined(JOINED_PARTS, 3, ROUTER_SOCKET, model)
    headers = {key.decode(): value.decode() for key, value in start["headers"]}
    assert (start["status"], headers[JOINED_HEADER], headers["content-type"]) == (200, "3", JOINED_CONTENT_TYPE)
    assert model.sizes == [3]  # one batch, each its own request with its own headers
    assert [request.headers for request in model.seen] == [headers for headers, _ in JOINED_PARTS]
    answers = [answer_of(entry) for entry in unframe(sent["body"], 3)]
    assert [(status, body) for status, _, body in answers] == [(200, b"3"), (200, b"2"), (200, b"0")]
    assert answers[0][1] == {"content-type": "application/octet-stream", BINARY: "12"}  # the protocol's headers only
    assert len(observed) == 3  # each timed as a request


def test_a_joined_count_on_the_port_is_dropped_and_the_body_goes_as_one_request() -> None:
    model = Batches()
    start, sent, _, _ = joined(JOINED_PARTS, 3, ON_THE_PORT, model)
    assert start["status"] == 200 and JOINED_HEADER.encode() not in dict(start["headers"])
    assert len(model.seen) == 1 and JOINED_HEADER not in model.seen[0].headers
    assert sent["body"] == str(len(model.seen[0].body)).encode()


def test_a_joined_request_that_cannot_be_read_or_joins_more_than_a_batch_is_a_400_and_runs_nothing() -> None:
    model = Batches()
    miscounted = joined(JOINED_PARTS, 2, ROUTER_SOCKET, model)
    too_many = joined([({}, b"x")] * 5, 5, ROUTER_SOCKET, model)
    assert (miscounted[0]["status"], too_many[0]["status"]) == (400, 400)
    assert "a joined request that cannot be read" in json.loads(miscounted[1]["body"])["error"]
    assert json.loads(too_many[1]["body"])["error"] == (
        "a joined request carries 5 requests, more than a batch takes (4)"
    )
    assert model.seen == []


def test_each_joined_request_the_halted_batcher_refuses_is_its_own_503_with_retry_after_and_is_counted() -> None:
    start, sent, refusals, observed = joined(JOINED_PARTS, 3, ROUTER_SOCKET, Echo(), refuse="is restarting")
    assert start["status"] == 200
    answers = [answer_of(entry) for entry in unframe(sent["body"], 3)]
    assert {status for status, _, _ in answers} == {503}
    assert all(headers["retry-after"] == "1" for _, headers, _ in answers)
    assert json.loads(answers[0][2]) == {"error": "model 'iris' is restarting; retry later"}
    assert len(refusals) == len(observed) == 3

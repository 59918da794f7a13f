"""Inference logging at the source: deterministic sampling that pairs arms, redaction that never leaks, a
queue that never blocks inference and counts what it drops, retries with backoff."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esteira.vocabulary import COLLECTOR_RECORDS_PATH
from model_handlers.inference_log import (
    BATCH,
    BATCH_BYTES,
    HOLD,
    HOLD_BYTES,
    REDACTED,
    Exchange,
    InferenceLog,
    LogSettings,
    Outbox,
    Outgoing,
    Record,
    Revision,
    encode_batch,
    http_sender,
    redact,
    sampled,
)
from model_handlers.protocol import Identity, Prediction
from tests.support.cloudevents_sink import Post, sink
from tests.support.waiting import eventually

SECRET = "TOP-SECRET-VALUE"
FIELDS = frozenset({"ssn", "email"})


def test_sampling_is_deterministic_and_pairs_arms() -> None:
    ids = [uuid.uuid4().hex for _ in range(20000)]
    stable = {i for i in ids if sampled(i, 0.1)}
    canary = {i for i in ids if sampled(i, 0.1)}  # another process, another revision: the same function of the id
    assert stable == canary
    assert 0.085 < len(stable) / len(ids) < 0.115
    assert {i for i in ids if sampled(i, 0.2)} >= stable  # a higher rate logs a superset
    assert not any(sampled(i, 0.0) for i in ids[:100]) and all(sampled(i, 1.0) for i in ids[:100])


json_leaves = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.booleans(), st.none())
payloads = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["a", "b", "ssn", "email", "name", "data", "inputs"]), inner, max_size=4),
        st.builds(
            lambda name, rest: {**rest, "name": name, "data": [SECRET if name == "ssn" else "public"]},
            st.sampled_from(["ssn", "x"]),
            st.dictionaries(st.sampled_from(["datatype", "shape"]), inner, max_size=2),
        ),
    ),
    max_leaves=30,
)


def _plant(value: Any) -> Any:
    """The secret under every redacted key too, so any leak shows in the output."""
    if isinstance(value, dict):
        return {k: SECRET if k in FIELDS else _plant(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plant(v) for v in value]
    return value


def _has_redacted_names(value: Any) -> bool:
    if isinstance(value, dict):
        named = isinstance(value.get("name"), str) and value["name"] in FIELDS and "data" in value
        return named or any(k in FIELDS or _has_redacted_names(v) for k, v in value.items())
    return isinstance(value, list) and any(_has_redacted_names(v) for v in value)


@settings(max_examples=300)
@given(payloads)
def test_redaction_never_leaks_at_any_depth(payload: Any) -> None:
    planted = _plant(payload)
    assert SECRET not in json.dumps(redact(planted, FIELDS))
    if not _has_redacted_names(planted):
        assert redact(planted, FIELDS) == json.loads(json.dumps(planted))  # nothing else changes


def test_v2_tensor_of_a_redacted_name_is_replaced() -> None:
    body = {
        "inputs": [{"name": "ssn", "datatype": "BYTES", "shape": [1], "data": [SECRET]}, {"name": "age", "data": [3]}]
    }
    assert redact(body, FIELDS) == {
        "inputs": [{"name": "ssn", "datatype": "BYTES", "shape": [1], "data": REDACTED}, {"name": "age", "data": [3]}]
    }


class Context:
    """The request ids TorchServe would have given (used when a request names none)."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.metrics = None

    def get_request_id(self, idx: int) -> str:
        return self.ids[idx]


def exchange(
    request_id: str | None, body: Any, answer: str | bytes, predictions: list[Prediction], json_text: bool = True
) -> Exchange:
    headers = {"x-request-id": request_id} if request_id else {}
    return Exchange(headers, body, json_text, None, 200, predictions, answer)


def records(batch: list[Record]) -> list[dict[str, Any]]:
    """A batch as the collector reads it."""
    return list(json.loads(encode_batch(batch)))


def test_queue_never_blocks_inference_and_counts_drops() -> None:
    release = threading.Event()
    outbox = Outbox(lambda batch: release.wait(), capacity=10)  # a sink that hangs until released
    log = InferenceLog(LogSettings(url="http://sink", mode="all", redact=FIELDS), Identity("iris", "1", "2"), outbox)
    ids = [f"r{i}" for i in range(100)]
    body = json.dumps({"instances": [{"ssn": SECRET, "a": 1}]}).encode()
    answer = json.dumps({"predictions": [{"label": "setosa"}]})
    exchanges = [exchange(i, body, answer, [Prediction(label="setosa")]) for i in ids]
    # 200 records into a queue of 10 while the sink hangs: observe must come back without the sink's release
    # (a deadline against a hang, not a measure of speed).
    caller = threading.Thread(target=log.observe, args=(Context(ids), exchanges))
    caller.start()
    caller.join(timeout=60)
    assert not caller.is_alive(), "observe blocked on a full queue"
    assert outbox.dropped >= 200 - 10 - 100  # at most the queue and one batch in flight were kept
    release.set()


def test_a_full_batch_is_sent_without_waiting_out_the_linger() -> None:
    posted: list[int] = []
    outbox = Outbox(lambda batch: posted.append(len(batch)), linger=60.0)
    outbox.offer(b"{}")
    # The first record woke the sender, which cleared its wake-up and waits out the linger now.
    eventually(lambda: not outbox._wake.is_set(), 10, "the sender lingering")
    for _ in range(BATCH - 1):
        outbox.offer(b"{}")
    eventually(lambda: sum(posted) == BATCH, 10, "a full batch posted before the 60 s linger ended")
    assert outbox.dropped == 0


def test_records_that_arrive_during_a_post_wait_for_the_next_batch() -> None:
    """Under a steady stream the queue is never empty after a post: the records that came meanwhile still wait
    for company (the linger, or a full batch) instead of going out a few at a time."""
    posted: list[int] = []
    outbox: Outbox

    def send(batch: list[Outgoing]) -> None:
        if not posted:  # five records arrive while the first post is on its way
            for _ in range(5):
                outbox.offer(b"{}")
        posted.append(len(batch))

    outbox = Outbox(send, linger=60.0)
    for _ in range(BATCH):  # a full batch: posted at once
        outbox.offer(b"{}")
    eventually(lambda: posted == [BATCH] and not outbox._wake.is_set(), 10, "the first post, then lingering")
    for _ in range(BATCH - 5):
        outbox.offer(b"{}")
    eventually(lambda: sum(posted) == 2 * BATCH, 10, "every record posted")
    assert posted == [BATCH, BATCH]
    assert outbox.dropped == 0


def test_flush_posts_what_is_queued_without_waiting_out_the_linger() -> None:
    posted: list[int] = []
    outbox = Outbox(lambda batch: posted.append(len(batch)), linger=60.0)
    for _ in range(3):
        outbox.offer(b"{}")
    assert outbox.flush(10)  # well before the 60 s linger
    assert posted == [3]
    assert outbox.flush(10)  # nothing queued: at once


def held_log(posted: list[dict[str, Any]], linger: float) -> InferenceLog:
    """A log whose sender lingers ``linger`` seconds and collects what it posts."""
    outbox = Outbox(lambda batch: posted.extend(records(batch)), linger=linger)
    return InferenceLog(LogSettings(url=f"http://sink{COLLECTOR_RECORDS_PATH}"), Identity("iris", "1", "2"), outbox)


def one_request(request_id: str, body: bytes = b'{"instances": [[1, 2]]}') -> list[Exchange]:
    return [exchange(request_id, body, '{"predictions": [1]}', [Prediction(value=1.0)])]


def test_the_serving_thread_encodes_held_exchanges_in_one_pass() -> None:
    """Fewer than HOLD exchanges are held; the HOLD-th queues all their records at once, in order."""
    posted: list[dict[str, Any]] = []
    log = held_log(posted, linger=60.0)
    for index in range(HOLD - 1):
        log.observe(Context([]), one_request(f"r{index}"))
    assert not log.outbox._queue  # held, not encoded
    log.observe(Context([]), one_request(f"r{HOLD - 1}"))
    assert len(log.outbox._queue) == 2 * HOLD  # encoded on this thread, before observe returned
    assert log.outbox.flush(10)
    assert [record["id"] for record in posted] == [f"r{index // 2}" for index in range(2 * HOLD)]


def test_a_large_body_is_encoded_at_once() -> None:
    posted: list[dict[str, Any]] = []
    log = held_log(posted, linger=60.0)
    large = json.dumps({"instances": [[1.0] * (HOLD_BYTES // 4)]}).encode()
    log.observe(Context([]), one_request("large", large))
    assert len(log.outbox._queue) == 2
    assert log.outbox.flush(10)
    assert {record["id"] for record in posted} == {"large"}


def test_a_quiet_server_s_held_records_go_out_after_the_linger() -> None:
    """One request and no more: the sender is woken for it and queues what is held at its round."""
    posted: list[dict[str, Any]] = []
    log = held_log(posted, linger=0.05)
    log.observe(Context(["from-server"]), one_request(""))
    eventually(lambda: [record["id"] for record in posted] == ["from-server", "from-server"], 10, "both records")


class StillOutbox(Outbox):
    """An outbox whose sender never runs: what ``offer`` decides is left to see."""

    def _run(self) -> None:
        return


def test_a_first_record_wakes_a_waiting_sender_but_does_not_cut_its_linger() -> None:
    """A sender woken for held exchanges lingers with nothing queued yet; the records the serving thread then
    queues go in that round's post, not one post per first record."""
    waiting, lingering = StillOutbox(lambda batch: None), StillOutbox(lambda batch: None)
    lingering._lingering = True
    for outbox in (waiting, lingering):
        outbox.offer(b"{}")
    assert waiting._wake.is_set()
    assert not lingering._wake.is_set()
    for _ in range(BATCH - 1):  # a full batch ends the linger
        lingering.offer(b"{}")
    assert lingering._wake.is_set()


def test_a_nudge_wakes_a_sender_with_nothing_queued_or_one_sending_but_never_cuts_a_linger() -> None:
    idle, lingering, sending = (StillOutbox(lambda batch: None) for _ in range(3))
    for outbox in (lingering, sending):
        outbox._queue.append(b"{}")
    sending._sending = True
    for outbox in (idle, lingering, sending):
        outbox.nudge()
    assert idle._wake.is_set() and sending._wake.is_set()
    assert not lingering._wake.is_set()


def test_an_exchange_held_while_a_round_s_posts_are_on_their_way_is_sent_after_them() -> None:
    """Its nudge found this round's records still queued and was skipped: with no traffic after it, the held
    exchange waited for 31 more or a flush."""
    posted: list[bytes] = []
    on_the_wire, release = threading.Event(), threading.Event()
    held: list[bytes] = []

    def send(batch: list[Any]) -> None:
        on_the_wire.set()
        release.wait(10)
        posted.extend(batch)

    outbox = Outbox(send, linger=0.05)

    def prepare() -> None:
        while held:
            outbox.offer(held.pop())

    outbox.prepare = prepare
    for _ in range(BATCH + 1):  # two posts in one round
        outbox.offer(b"{}")
    assert on_the_wire.wait(10)
    held.append(b"late")
    outbox.nudge()
    release.set()
    eventually(lambda: b"late" in posted, 10, "the exchange held during the round")


def test_a_flush_posts_held_records_without_waiting_out_the_linger() -> None:
    posted: list[dict[str, Any]] = []
    log = held_log(posted, linger=60.0)
    log.observe(Context([]), one_request("r0"))
    assert log.outbox.flush(10)
    assert [record["type"].rsplit(".", 1)[1] for record in posted] == ["request", "response"]


def test_a_flush_ends_a_retry_waiting_out_its_backoff() -> None:
    """A backoff grown to seconds would outlast a stopping server's flush: the retry goes at once."""
    attempts: list[int] = []
    first_refused = threading.Event()

    def send(batch: list[Any]) -> None:
        attempts.append(len(batch))
        if len(attempts) == 1:
            first_refused.set()
            raise RuntimeError("HTTP 503")

    outbox = Outbox(send, linger=0.0, backoff=60.0, max_backoff=60.0)
    outbox.offer(b"{}")
    assert first_refused.wait(10)
    assert outbox.flush(10)  # the backoff is 30-60 s
    assert attempts == [1, 1]


EXITING_SERVER = """
import sys
from model_handlers.inference_log import Exchange, InferenceLog
from model_handlers.protocol import Identity, Prediction
log = InferenceLog.from_env(Identity("iris", "1", "2"))
ids = [f"r{index}" for index in range(int(sys.argv[1]))]
body, answer = b'{"instances": [[1, 2]]}', '{"predictions": [0]}'
log.observe(None, [Exchange({"x-request-id": i}, body, True, None, 200, [Prediction(label="0")], answer) for i in ids])
"""


def test_a_server_that_exits_posts_its_queued_records_first() -> None:
    """The sender is a daemon thread: without the flush at exit, the records of the last linger went down with
    the process (a pod stopping at the end of a rollout)."""
    with sink(lambda posts: (204, {})) as (url, posts):
        env = {**os.environ, "ESTEIRA_LOG_MODE": "request", "ESTEIRA_LOG_URL": url + COLLECTOR_RECORDS_PATH}
        child = subprocess.run(
            [sys.executable, "-c", EXITING_SERVER, "50"], env=env, capture_output=True, text=True, timeout=120
        )
        assert child.returncode == 0, child.stderr
        received = sorted(record["id"] for post in posts for record in json.loads(post.body))
    assert received == sorted(f"r{index}" for index in range(50))


def test_a_post_carries_at_most_batch_bytes_unless_one_record_is_larger() -> None:
    posted: list[list[Outgoing]] = []
    release = threading.Event()

    def send(batch: list[Outgoing]) -> None:
        release.wait(10)  # the first post waits, so the rest queue up behind it
        posted.append(batch)

    outbox = Outbox(send, linger=0.0)
    record, huge = b"x" * (BATCH_BYTES * 2 // 5), b"y" * (BATCH_BYTES + 1)
    for item in (record, record, record, record, record, huge, record):
        outbox.offer(item)
    release.set()
    eventually(lambda: sum(len(batch) for batch in posted) == 7, 10, "every record posted")
    sizes = [sum(len(item) for item in batch if isinstance(item, bytes)) for batch in posted]
    assert all(size <= BATCH_BYTES or len(batch) == 1 for size, batch in zip(sizes, posted, strict=True)), sizes
    assert [item for batch in posted for item in batch] == [record] * 5 + [huge, record]  # in order, none lost


def test_queued_bytes_are_bounded_while_the_sink_hangs() -> None:
    release = threading.Event()
    outbox = Outbox(lambda batch: release.wait(), capacity_bytes=1_000_000)
    for _ in range(20):
        outbox.offer(b"z" * 300_000)
    # At most 1 MB queued (3 records) and one post in flight (at most BATCH_BYTES: 3 records) were kept.
    assert outbox.dropped >= 20 - 3 - 3
    release.set()


def test_records_carry_identity_predictions_and_redacted_inputs_and_retry_until_delivered() -> None:
    delivered: list[dict[str, Any]] = []
    failures = iter([True, True, False] + [False] * 100)

    def flaky(batch: list[Record]) -> None:
        if next(failures):
            raise ConnectionError("collector restarting")
        delivered.extend(records(batch))

    outbox = Outbox(flaky, backoff=0.01)
    log = InferenceLog(
        LogSettings(url="http://sink", redact=FIELDS, namespace="models", deployment="iris"),
        Identity("iris", "1.0.1", "3"),
        outbox,
    )
    log.observe(
        Context(["abc"]),
        [exchange(None, b'{"instances": [{"ssn": "1", "a": 2}]}', '{"predictions": [0.5]}', [Prediction(value=0.5)])],
    )
    eventually(lambda: len(delivered) == 2, 10, "both records delivered after two failed attempts")
    request, response = delivered
    assert request["type"] == "org.kubeflow.serving.inference.request" and request["id"] == "abc"
    assert request["data"] == {"instances": [{"ssn": REDACTED, "a": 2}]}
    assert (response["revision"], response["modelversion"], response["inferenceservicename"]) == ("3", "1.0.1", "iris")
    assert json.loads(response["predictions"]) == [0.5]
    assert outbox.dropped == 0


def test_the_sender_keeps_its_connection_reopens_a_closed_one_and_raises_on_errors() -> None:
    def answer(posts: list[Post]) -> tuple[int, dict[str, str]]:
        status = 500 if json.loads(posts[-1].body)[0]["id"] == "broken" else 200
        return status, {"Connection": "close"} if len(posts) == 2 else {}

    with sink(answer) as (url, posts):
        send = http_sender(LogSettings(url=f"{url}{COLLECTOR_RECORDS_PATH}"))
        revision = Revision.of({"source": "test"})
        for index in range(4):
            send([Record(revision, str(index), "t", "now", None, {}, encoded=False)])
        with pytest.raises(RuntimeError, match="HTTP 500"):
            send([Record(revision, "broken", "t", "now", None, {}, encoded=False)])
    assert [json.loads(post.body)[0]["id"] for post in posts] == ["0", "1", "2", "3", "broken"]
    ports = [post.port for post in posts]
    assert ports[0] == ports[1] != ports[2] == ports[3] == ports[4]  # a new connection only after the close


def test_dropped_records_are_counted_on_esteira_kserves_registry() -> None:
    """esteira-kserve's metrics cache has the dropped-records counter, so a hung sink shows on /metrics."""
    from prometheus_client import CollectorRegistry

    from model_handlers.inference_log import DROPPED_TOTAL
    from model_handlers.inprocess import PrometheusMetrics

    release = threading.Event()
    outbox = Outbox(lambda batch: release.wait(), capacity=10)
    log = InferenceLog(LogSettings(url="http://sink", mode="request"), Identity("iris", "1", "2"), outbox)
    ids = [f"r{i}" for i in range(50)]
    context = Context(ids)
    registry = CollectorRegistry()
    context.metrics = PrometheusMetrics(registry)  # type: ignore[assignment]
    body = json.dumps({"instances": [[1, 2]]}).encode()
    log.observe(context, [exchange(i, body, json.dumps({"predictions": [1]}), [Prediction(value=1.0)]) for i in ids])
    release.set()
    assert outbox.dropped > 0
    assert registry.get_sample_value(DROPPED_TOTAL, {"ModelName": "iris", "Revision": "2"}) == outbox.dropped


@pytest.mark.parametrize("path", ["", COLLECTOR_RECORDS_PATH])
def test_bodies_and_answers_are_logged_as_they_came_and_anything_else_as_a_value(path: str) -> None:
    """JSON text the handler read goes into the record byte for byte; TorchServe's decoded bodies, unreadable
    bodies and binary answers are encoded; every batch is one valid JSON document. Records for Esteira's
    collector leave ``observe`` encoded (the sender only joins them), others as events: the same batch."""
    sent: list[bytes] = []
    kinds: set[type] = set()

    def send(batch: list[Outgoing]) -> None:
        kinds.update(type(item) for item in batch)
        sent.append(encode_batch(batch))

    outbox = Outbox(send, linger=0.0)
    settings = LogSettings(url=f"http://sink{path}", namespace="models")
    log = InferenceLog(settings, Identity("iris", "1.0.1", "3"), outbox)
    text = '{ "instances" : [[1,  2.50]],\n "note": "caf\u00e9 \\u2603" }'.encode()
    answer = '{"predictions": [{"label": "\u00e9"}]}'
    log.observe(
        Context(["ts-0", "ts-1", "ts-2"]),
        [
            exchange("a", text, answer, [Prediction(label="\u00e9")]),
            exchange(None, {"instances": [[3, 4]]}, b"\x00binary", [Prediction(value=(1.0, 2.0))], json_text=False),
            exchange("c", b"\x89PNG not json", answer, [Prediction(label="x")], json_text=False),
        ],
    )
    eventually(lambda: sum(len(json.loads(batch)) for batch in sent) == 6, 10, "six records sent")
    assert text in b"".join(sent) and answer.encode() in b"".join(sent)
    delivered = [record for batch in sent for record in json.loads(batch)]
    by_kind = {(r["id"], r["type"].rsplit(".", 1)[1]): r for r in delivered}
    assert by_kind[("a", "request")]["data"] == json.loads(text)
    assert by_kind[("a", "response")]["data"] == json.loads(answer)
    assert json.loads(by_kind[("a", "response")]["predictions"]) == ["\u00e9"]
    assert by_kind[("ts-1", "request")]["data"] == {"instances": [[3, 4]]}  # no header id: TorchServe's
    assert by_kind[("ts-1", "response")]["data"] == {"binary_bytes": 7}
    assert json.loads(by_kind[("ts-1", "response")]["predictions"]) == [[1.0, 2.0]]
    assert by_kind[("c", "request")]["data"] == {"binary_bytes": 13}
    for record in delivered:
        assert (record["revision"], record["namespace"], record["specversion"]) == ("3", "models", "1.0")
        assert record["time"].endswith("Z")
    assert kinds == ({bytes} if path else {Record})


def test_a_plain_cloudevents_url_gets_one_binary_mode_event_per_record() -> None:
    with sink(lambda posts: (202, {})) as (url, posts):
        settings = LogSettings(url=f"{url}/events", deployment="iris")
        log = InferenceLog(settings, Identity("iris", "1.0.1", "3"), Outbox(http_sender(settings), linger=0.0))
        body = b'{"instances": [[1, 2]]}'
        log.observe(Context(["x"]), [exchange("r1", body, '{"predictions": [0]}', [Prediction(label="0")])])
        eventually(lambda: len(posts) == 2, 10, "both events posted")
    (request_headers, request_body), (response_headers, response_body) = ((p.headers, p.body) for p in posts)
    assert request_body == body and json.loads(response_body) == {"predictions": [0]}
    assert request_headers["ce-id"] == response_headers["ce-id"] == "r1"
    assert request_headers["ce-type"] == "org.kubeflow.serving.inference.request"
    assert response_headers["ce-predictions"] == '["0"]' and "ce-predictions" not in request_headers
    assert (request_headers["ce-inferenceservicename"], request_headers["ce-revision"]) == ("iris", "3")
    assert "ce-datacontenttype" not in request_headers and request_headers["Content-Type"] == "application/json"


def test_a_binary_mode_retry_posts_only_the_events_not_yet_delivered() -> None:
    refused = []

    def answer(posts: list[Post]) -> tuple[int, dict[str, str]]:
        if len(posts) == 3 and not refused:  # the third event fails once
            refused.append(posts[-1].headers["ce-id"])
            return 503, {}
        return 202, {}

    with sink(answer) as (url, posts):
        settings = LogSettings(url=f"{url}/events", mode="request")
        outbox = Outbox(http_sender(settings), linger=60.0, backoff=0.01)
        log = InferenceLog(settings, Identity("iris", "1", "2"), outbox)
        ids = [f"r{index}" for index in range(BATCH)]
        body = b'{"instances": [[1, 2]]}'
        log.observe(Context(ids), [exchange(i, body, '{"predictions": [0]}', [Prediction(label="0")]) for i in ids])
        eventually(lambda: len(posts) == BATCH + 1, 30, "every event posted, the refused one twice")
    delivered = [post.headers["ce-id"] for post in posts]
    assert refused == ["r2"] and delivered == ids[:3] + ids[2:]  # r2 again, and nothing before it
    assert outbox.dropped == 0


@pytest.mark.parametrize(
    ("status", "said", "dropped"),
    [
        (413, "", BATCH),  # too large: sent again, too large again
        (422, '{"error": "the database refused the data: value too long"}', BATCH),  # refused whole, nothing stored
        (422, '{"stored": 98, "duplicates": 0, "joined": 0, "errors": [{"index": 3, "error": "x"}]}', 1),
        (401, '{"error": "a bearer token is needed"}', BATCH),
    ],
)
def test_what_the_collector_refuses_for_good_is_dropped_and_counted_at_once(
    status: int, said: str, dropped: int
) -> None:
    """Retried, a batch the collector will never take held the sender a dozen seconds while its queue filled;
    and a 422 that stored nothing was counted as delivered."""
    with sink(lambda posts: (status, {"body": said, "Content-Type": "application/json"})) as (url, posts):
        settings = LogSettings(url=f"{url}{COLLECTOR_RECORDS_PATH}", mode="request")
        outbox = Outbox(http_sender(settings), linger=60.0, backoff=0.01)
        log = InferenceLog(settings, Identity("iris", "1", "2"), outbox)
        ids = [f"r{index}" for index in range(BATCH)]
        log.observe(Context(ids), [exchange(i, b"{}", '{"predictions": [0]}', [Prediction(label="0")]) for i in ids])
        eventually(lambda: outbox.dropped == dropped, 30, "the refused records counted")
    assert len(posts) == 1, "not sent again"


def test_an_event_a_binary_mode_sink_refuses_for_good_is_dropped_and_the_next_ones_go_on() -> None:
    def answer(posts: list[Post]) -> tuple[int, dict[str, str]]:
        return (400 if len(posts) == 3 else 202), {}

    with sink(answer) as (url, posts):
        settings = LogSettings(url=f"{url}/events", mode="request")
        outbox = Outbox(http_sender(settings), linger=60.0, backoff=0.01)
        log = InferenceLog(settings, Identity("iris", "1", "2"), outbox)
        ids = [f"r{index}" for index in range(BATCH)]
        log.observe(Context(ids), [exchange(i, b"{}", '{"predictions": [0]}', [Prediction(label="0")]) for i in ids])
        eventually(lambda: len(posts) == BATCH and outbox.dropped == 1, 30, "every event posted once, one refused")
    assert [post.headers["ce-id"] for post in posts] == ids


@pytest.mark.parametrize(
    ("body", "json_text"),
    [
        ('{"instances": [{"ssn": "TOP-SECRET-VALUE", "a": 1}', False),  # not JSON: a bracket missing
        ('{"instances": [{"ssn": "TOP-SECRET-VALUE", "a": ' + "9" * 5000 + "}]}", False),  # more digits than read
        ("123456789", False),  # a form field's value (ssn=123456789), its name left behind
        (b'{"instances": [{"ssn": "TOP-SECRET-VALUE"', False),
    ],
)
def test_with_redaction_a_body_that_cannot_be_redacted_is_logged_by_its_size_only(
    body: str | bytes, json_text: bool
) -> None:
    """Logged as it came, a body redaction could not walk took the configured field out of the worker."""
    delivered: list[dict[str, Any]] = []
    outbox = Outbox(lambda batch: delivered.extend(records(batch)), linger=0.0)
    log = InferenceLog(
        LogSettings(url="http://sink", mode="request", redact=FIELDS), Identity("iris", "1", "2"), outbox
    )
    log.observe(Context(["r1"]), [Exchange({}, body, json_text, None, 400, (), '{"error": "bad"}')])
    log.encode_held()
    eventually(lambda: len(delivered) == 1, 10, "the request's record delivered")
    (record,) = delivered
    assert SECRET not in json.dumps(record) and "123456789" not in json.dumps(record)
    size = len(body) if isinstance(body, bytes) else len(body.encode())
    assert record["data"] == ({"binary_bytes": size} if isinstance(body, bytes) else {"unparsed_bytes": size})


def test_redacting_a_field_answers_carry_predictions_in_keeps_them_out_of_the_predictions_attribute() -> None:
    delivered: list[dict[str, Any]] = []
    outbox = Outbox(lambda batch: delivered.extend(records(batch)), linger=0.0)
    settings = LogSettings(url="http://sink", mode="response", redact=frozenset({"label"}))
    log = InferenceLog(settings, Identity("iris", "1", "2"), outbox)
    answer = json.dumps({"predictions": [{"label": "gamma"}]})
    log.observe(Context(["r1"]), [exchange(None, b'{"instances": [[1]]}', answer, [Prediction(label="gamma")])])
    log.encode_held()
    eventually(lambda: len(delivered) == 1, 10, "the answer's record delivered")
    (record,) = delivered
    assert "gamma" not in json.dumps(record)
    assert "predictions" not in record


def test_redacting_a_v2_regression_s_prediction_tensor_keeps_its_values_out_of_the_predictions_attribute() -> None:
    delivered: list[dict[str, Any]] = []
    outbox = Outbox(lambda batch: delivered.extend(records(batch)), linger=0.0)
    settings = LogSettings(url="http://sink", mode="response", redact=frozenset({"prediction"}))
    log = InferenceLog(settings, Identity("house", "1", "2"), outbox)
    tensor = {"name": "prediction", "datatype": "FP32", "shape": [1], "data": [412345.5]}
    answer = json.dumps({"model_name": "house", "outputs": [tensor]})
    request = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1]}]}).encode()
    log.observe(Context(["r1"]), [exchange(None, request, answer, [Prediction(value=412345.5)])])
    log.encode_held()
    eventually(lambda: len(delivered) == 1, 10, "the answer's record delivered")
    (record,) = delivered
    assert "412345" not in json.dumps(record) and "predictions" not in record

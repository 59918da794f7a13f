"""Inference records from the handler: CloudEvents in KServe's logger format, sampled, redacted, never blocking.

Why in the handler and not KServe's logger: KServe's logs every request, cannot redact, blocks inference
when its queue is full and knows no revision. Here:

- Sampling is a hash of the request id, so every revision (stable, canary, a mirror) logs the same requests
  and their records pair up; the id is the ``x-request-id`` header, else ``ce-id``, else the body's ``id``,
  else TorchServe's own (which its frontend returns as ``x-request-id``; a v2 answer's ``id`` says it too).
- Configured field names are redacted at any depth (and a v2 input tensor of that name) before a record is
  queued: nothing unredacted leaves the worker.
- ``observe`` decides and holds, then queues (see below); a full queue drops the record and counts it (the
  counter is written with the next batch's metrics when the sender's round queued it). One daemon thread
  sends: a batch to Esteira's collector, or one binary-mode event at a time to another URL, retrying with
  exponential backoff before giving a record up (counted too).
- A record for the collector is encoded on the serving thread, and the sender only joins and posts bytes.
  Encoding a hundred records on the sender thread held the GIL for a millisecond or more, and the serving
  thread, back from reading its next batch, waited for it. Under TorchServe (batches of 8, 32 callers, every
  request logged) the handler kept 0.76 of a stock handler's rate with the sender encoding and 0.84 with
  ``observe`` encoding, in five alternating rounds (0.96 with logging off).
- ``observe`` holds the sampled exchanges and encodes ``HOLD`` of them in one pass (or ``HOLD_BYTES`` of
  bodies): one request's records encoded on their own ran with caches the rest of the request had filled, 15 us
  in process against 6 in a tight loop, and one request took 125 us logged this way against 112 held (99 with
  logging off). What a quiet server holds the sender queues at its next round, after its linger (it is woken
  for that), and a stopping server's flush queues it first: a record waits no longer than it did.
- A body the handler read as JSON text, and every JSON answer, go into the record as the text they were: when
  nothing is to be redacted, nothing is decoded and encoded again (that cost a logged request a fifth of its
  worker time).
- The sender lets a batch gather for ``LINGER_SECONDS`` unless ``BATCH`` records are waiting (see
  :class:`Outbox`), and keeps its connection open between posts: waking for every record, a post per few records and a TCP handshake per
  post took more of the model server's CPU than its handler did. It posts with
  :class:`esteira.packaging.upstream.BlockingUpstream`: ``http.client`` handed the GIL back and forth with the
  serving thread at every small read, which cost most where every event is a post of its own (binary mode).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ts.metrics.metric_type_enum import MetricTypes

from esteira.packaging.log_flush import FLUSH_SECONDS, listen_for_flush
from esteira.packaging.upstream import BlockingUpstream, parse_url
from esteira.vocabulary import (
    CE_BATCH_CONTENT_TYPE,
    CE_COMPONENT,
    CE_ENDPOINT,
    CE_INFERENCE_REQUEST,
    CE_INFERENCE_RESPONSE,
    CE_INFERENCE_SERVICE,
    CE_MODEL_NAME,
    CE_MODEL_VERSION,
    CE_NAMESPACE,
    CE_PREDICTIONS,
    CE_REVISION,
    COLLECTOR_RECORDS_PATH,
    ENV_DEPLOYMENT,
    ENV_LOG_FLUSH_DIR,
    ENV_LOG_MODE,
    ENV_LOG_REDACT,
    ENV_LOG_SAMPLE_RATE,
    ENV_LOG_TOKEN,
    ENV_LOG_URL,
    ENV_NAMESPACE,
    REQUEST_ID_HEADER,
    series_label,
)
from model_handlers import jsontext
from model_handlers.metrics import Definition, write_metrics
from model_handlers.protocol import Identity, Prediction

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
DROPPED_TOTAL = "esteira_inference_log_dropped_total"
DEFINITIONS: dict[str, Definition] = {DROPPED_TOTAL: (MetricTypes.COUNTER, "count", ("ModelName", "Revision"))}
QUEUE_SIZE = 20_000  # records: two seconds of a busy server logging every request and answer
QUEUE_BYTES = 64 * 1024 * 1024  # encoded records held at most (large bodies reach it before the count)
BATCH = 1000
BATCH_BYTES = 1024 * 1024  # a post's records at most, well under the collector's 8 MiB body limit
LINGER_SECONDS = 0.1
HOLD = 32  # exchanges held before the serving thread encodes them in one pass (see the module docstring)
HOLD_BYTES = 1024 * 1024  # bodies held at most: a large one is encoded at once


# The fields of an answer that hold what the ``predictions`` attribute repeats: v1's list, a result's label, v2's
# label and top-k label tensors, and a regression's value (v2's ``prediction`` tensor).
PREDICTION_FIELDS = frozenset({"predictions", "prediction", "label", "labels", "value", "values"})


def sampled(request_id: str, rate: float) -> bool:
    """Whether a request id is logged at `rate`: the same answer in every process and every revision."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64


def redact(value: Any, fields: frozenset[str]) -> Any:
    """A copy of `value` with every key in `fields` (at any depth), and v2 tensors so named, replaced."""
    if not fields:
        return value
    if isinstance(value, Mapping):
        named = isinstance(value.get("name"), str) and value["name"] in fields and "data" in value
        return {
            k: REDACTED if (k in fields or (named and k == "data")) else redact(v, fields) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item, fields) for item in value]
    return value


@dataclass(frozen=True)
class LogSettings:
    url: str
    mode: str = "all"  # all | request | response
    sample_rate: float = 1.0
    redact: frozenset[str] = frozenset()
    token: str | None = None
    namespace: str = "default"
    deployment: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LogSettings | None:
        """None when logging is off (no mode or url); ValueError names a malformed variable."""
        env = os.environ if env is None else env
        mode, url = env.get(ENV_LOG_MODE, "none"), env.get(ENV_LOG_URL)
        if mode == "none" or not url:
            return None
        if mode not in ("all", "request", "response"):
            raise ValueError(f"{ENV_LOG_MODE} must be none, all, request or response, got {mode!r}")
        rate = float(env.get(ENV_LOG_SAMPLE_RATE, "1"))
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{ENV_LOG_SAMPLE_RATE} must be within 0-1, got {rate}")
        fields = json.loads(env.get(ENV_LOG_REDACT, "[]"))
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise ValueError(f"{ENV_LOG_REDACT} must be a JSON list of field names")
        return cls(
            url=url,
            mode=mode,
            sample_rate=rate,
            redact=frozenset(fields),
            token=env.get(ENV_LOG_TOKEN) or None,
            namespace=env.get(ENV_NAMESPACE, "default"),
            deployment=env.get(ENV_DEPLOYMENT, ""),
        )


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request of a batch and the handler's answer to it, as the inference log takes them."""

    headers: Mapping[str, Any]  # lower-case names
    body: Any  # as the server passed it: bytes or text, or the value TorchServe already decoded
    json_text: bool  # the body is JSON text the handler read: a record carries it as it came
    body_id: str | None  # the body's own ``id``, when the handler read one
    status: int
    predictions: Sequence[Prediction]
    answer: str | bytes  # the JSON answer's text; bytes: a binary answer, logged as its size


@dataclass(frozen=True, slots=True)
class Revision:
    """The attributes every event of this revision carries, as binary mode's ``ce-`` headers and as JSON
    members (a batch's records, each preceded by a comma), both built once."""

    headers: Mapping[str, str]
    members: bytes

    @classmethod
    def of(cls, attributes: Mapping[str, str]) -> Revision:
        headers = {f"ce-{key}": str(value) for key, value in attributes.items() if key != "datacontenttype"}
        members = json.dumps(dict(attributes))[1:-1]
        return cls(headers, f",{members}".encode() if members else b"")


def structured_event(
    revision: Revision, event_id: str, event_type: str, time: str, predictions: str | None, data: bytes
) -> bytes:
    """One structured-mode CloudEvent, ``data`` (JSON text) spliced in as it is. Built as one formatted bytes
    string: the handler encodes two of these a logged request, on the serving thread."""
    extra = b"" if predictions is None else b',"%b":%b' % (CE_PREDICTIONS.encode(), _json(predictions))
    return b'{"id":%b,"type":"%b","time":"%b"%b%b,"data":%b}' % (
        _json(event_id),
        event_type.encode(),
        time.encode(),
        extra,
        revision.members,
        data,
    )


def _json(value: Any) -> bytes:
    return jsontext.dumps(value).encode()


def data_bytes(data: Any, encoded: bool) -> bytes:
    """An event's data as JSON text: as it came when ``encoded``, else encoded now."""
    text = data if encoded else jsontext.dumps(data)
    return text.encode() if isinstance(text, str) else bytes(text)


@dataclass(frozen=True, slots=True)
class Record:
    """One CloudEvent in the outbox. ``data`` is JSON text when ``encoded`` (a body or answer taken as it came:
    nothing is decoded and encoded again), else a value the sender thread encodes."""

    revision: Revision
    id: str
    type: str
    time: str
    predictions: str | None
    data: Any
    encoded: bool

    def data_json(self) -> bytes:
        return data_bytes(self.data, self.encoded)

    def to_json(self) -> bytes:
        """The structured-mode event, the data spliced in as text."""
        return structured_event(self.revision, self.id, self.type, self.time, self.predictions, self.data_json())

    def headers(self) -> dict[str, str]:
        """Binary mode's ``ce-`` headers."""
        own = {"ce-id": self.id, "ce-type": self.type, "ce-time": self.time}
        if self.predictions is not None:
            own[f"ce-{CE_PREDICTIONS}"] = self.predictions
        return own | dict(self.revision.headers)


Outgoing = Record | bytes  # an event, or one already encoded for the collector (``Record.to_json``)


def encode_batch(records: Sequence[Outgoing]) -> bytes:
    """A CloudEvents JSON batch of ``records``."""
    return b"[" + b",".join(item if isinstance(item, bytes) else item.to_json() for item in records) + b"]"


def collector_url(url: str) -> bool:
    """Whether ``url`` is Esteira's collector, which takes a batch of structured events in one request."""
    return url.rstrip("/").endswith(COLLECTOR_RECORDS_PATH)


Sender = Callable[[list[Outgoing]], None]


# Refusals that say "not now": the server timed the request out, or asks the sender to slow down.
RETRYABLE_REFUSALS = frozenset({408, 429})


class Refused(Exception):
    """The sink refused records for good (a 4xx but 408 and 429): sent again, they would be refused again.
    ``count``: how many (None: the whole batch)."""

    def __init__(self, message: str, count: int | None = None) -> None:
        super().__init__(message)
        self.count = count


@dataclass
class Outbox:
    """The bounded queue and its sender thread; `offer` never blocks. A deque and an event rather than a
    ``queue.Queue``: one producer (the handler) and one consumer need no lock per record. The queue is bounded
    by records and, for encoded ones, by bytes; what finds it full is dropped and counted.

    The sender waits up to ``linger`` for a batch to gather, and no longer once ``BATCH`` records wait: the
    first record and a full batch wake it, the records between wake no one. A post carries up to ``BATCH``
    records or ``BATCH_BYTES``. Records that arrive while a round's posts are on their way wait for the next
    round: a sender that posted whatever it found after each post never lingered again under a steady stream,
    and posted a few records at a time (6.5 a post with Esteira's handler logging every request in-process,
    which halved the handler's rate). A sender that always waited the whole linger for batches of 100, with
    1,000 records queued at most, dropped 36 % of the records of esteira-kserve answering 7,800 requests a
    second."""

    send: Sender
    capacity: int = QUEUE_SIZE
    capacity_bytes: int = QUEUE_BYTES
    attempts: int = 8
    backoff: float = 0.1
    max_backoff: float = 5.0
    linger: float = LINGER_SECONDS
    prepare: Callable[[], None] | None = None  # queues what the producer holds unencoded (InferenceLog.encode_held)
    dropped: int = 0
    failed: int = 0
    _queue: deque[Outgoing] = field(init=False)

    def __post_init__(self) -> None:
        self._queue = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        # Bytes of encoded records queued and taken: each written by one thread only, their difference is held.
        self._bytes_in = self._bytes_out = 0
        self._hurry = threading.Event()  # flush asked: no more lingering, and no backoff longer than ``backoff``
        self._sending = False
        self._lingering = False
        self._settled = threading.Condition()  # notified after each round of posts
        threading.Thread(target=self._run, name="esteira-inference-log", daemon=True).start()

    def flush(self, timeout: float) -> bool:
        """Post what is queued without waiting out the linger; whether the queue emptied within ``timeout``.
        A stopping server calls it (see :meth:`InferenceLog.from_env`): the sender is a daemon thread, and the
        records of the last linger, or of a backlog, went down with the process. The outbox lingers no more
        afterwards (it is the last thing a process asks of it), and a retry waiting out its backoff goes at once,
        the next ones ``backoff`` apart: a backoff grown to seconds would outlast the time a stopping server has."""
        if self.prepare is not None:
            self.prepare()
        self._hurry.set()
        self._wake.set()
        with self._settled:
            return self._settled.wait_for(lambda: not self._queue and not self._sending, timeout)

    def offer(self, record: Outgoing) -> bool:
        size = len(record) if isinstance(record, bytes) else 0
        if len(self._queue) >= self.capacity or self._bytes_in - self._bytes_out + size > self.capacity_bytes:
            with self._lock:
                self.dropped += 1
            return False
        self._bytes_in += size
        self._queue.append(record)
        # Counted after the append: one record queued means the sender took every earlier one, and may be waiting
        # (unless it lingers already: woken by a nudge, with nothing queued yet).
        queued = len(self._queue)
        if (queued >= BATCH or (queued == 1 and not self._lingering)) and not self._wake.is_set():
            self._wake.set()
        return True

    def nudge(self) -> None:
        """The producer holds records it has not queued: a sender waiting for a first record starts a round
        (lingers, then ``prepare`` queues them), and one sending now starts another after it (what it sends was
        queued before the held ones). A sender lingering, records queued, comes round anyway: woken, it would cut
        its linger short."""
        if (not self._queue or self._sending) and not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while True:
            if not self._queue:
                self._wake.wait()  # the first record ends the wait (records left from the last round need none)
            self._wake.clear()
            if len(self._queue) < BATCH and not self._hurry.is_set():
                self._lingering = True
                self._wake.wait(self.linger)  # a full batch (offer) ends the wait early
                self._lingering = False
                self._wake.clear()
            self._sending = True  # before ``prepare``: a nudge from here on must bring another round
            if self.prepare is not None:
                self.prepare()
            # What waited out the linger goes now; what arrives during these posts waits for the next round.
            due = len(self._queue)
            while due > 0:
                batch = self._next_batch(due)
                due -= len(batch)
                self._deliver(batch)
            with self._settled:
                self._sending = False
                self._settled.notify_all()

    def _next_batch(self, limit: int) -> list[Outgoing]:
        """Up to ``limit`` and ``BATCH`` records, and ``BATCH_BYTES`` unless one record alone is larger."""
        batch: list[Outgoing] = []
        size = 0
        while self._queue and len(batch) < min(limit, BATCH):
            length = len(self._queue[0]) if isinstance(self._queue[0], bytes) else 0
            if batch and size + length > BATCH_BYTES:
                break
            batch.append(self._queue.popleft())
            size += length
        self._bytes_out += size
        return batch

    def _deliver(self, batch: list[Outgoing]) -> None:
        """Send ``batch``, retrying with backoff; ``send`` may take what it delivered off the batch's front.
        What the sink refused for good is dropped and counted at once: retried, a record the sink will never
        take held the sender for a dozen seconds while the queue behind it filled."""
        delay = self.backoff
        for attempt in range(self.attempts):
            try:
                self.send(batch)
                return
            except Refused as exc:
                lost = exc.count if exc.count is not None else len(batch)
                logger.warning("the sink refused %d inference records for good: %s", lost, exc)
                with self._lock:
                    self.dropped += lost
                    self.failed += lost
                return
            except Exception as exc:  # the sink is down or refused for now: wait and try again
                if attempt == self.attempts - 1:
                    logger.warning(
                        "giving up %d inference records after %d attempts: %s", len(batch), self.attempts, exc
                    )
                if self._hurry.is_set():  # a stopping server: retry within its flush's time
                    time.sleep(self.backoff)
                else:  # a flush asked meanwhile ends the wait
                    self._hurry.wait(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.max_backoff)
        with self._lock:
            self.dropped += len(batch)
            self.failed += len(batch)


def http_sender(settings: LogSettings, timeout: float = 5.0) -> Sender:
    """Esteira's collector takes a batch in one request; any other CloudEvents URL gets binary-mode events."""
    batched = collector_url(settings.url)
    auth = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    upstream = BlockingUpstream(settings.url, connect_seconds=timeout, answer_seconds=timeout)
    target = parse_url(settings.url)[3]

    def post(body: bytes, headers: dict[str, str]) -> int:
        """Post; how many of its records the collector refused by index (the rest are stored). Raises
        `Refused` when the sink refused it whole for good, anything else when it may take it later."""
        reply = upstream.request("POST", target, body, {**auth, **headers})
        if reply.status < 300:
            return 0
        if reply.status >= 500 or reply.status in RETRYABLE_REFUSALS:
            raise RuntimeError(f"HTTP {reply.status}")
        if reply.status == 422 and batched:  # the collector names each item it refused; it stored the others
            try:
                answered = json.loads(reply.body)
            except ValueError:
                answered = None
            if isinstance(answered, dict) and "stored" in answered:
                return len(answered.get("errors") or [])
        raise Refused(f"HTTP {reply.status}: {reply.body[:200].decode('utf-8', 'replace')}")

    def send(records: list[Outgoing]) -> None:
        if batched:
            if refused := post(encode_batch(records), {"Content-Type": CE_BATCH_CONTENT_TYPE}):
                raise Refused(f"the collector refused {refused} of {len(records)} records", refused)
            return
        delivered = refused = 0
        try:
            for record in records:
                if isinstance(record, bytes):  # encoded for a collector: this URL is not one
                    raise TypeError("a structured event for a binary-mode sink")
                try:
                    post(record.data_json(), {**record.headers(), "Content-Type": "application/json"})
                except Refused:
                    refused += 1  # this event for good; the next ones go on
                delivered += 1
        finally:
            del records[:delivered]  # the outbox retries what is left: no event is posted twice
        if refused:
            raise Refused(f"the sink refused {refused} of the events", refused)

    return send


class InferenceLog:
    """What the handler calls once per batch (`observe`); builds the records and hands them to the outbox."""

    def __init__(self, settings: LogSettings, identity: Identity, outbox: Outbox | None = None) -> None:
        self.settings = settings
        self.identity = identity
        self.outbox = outbox or Outbox(http_sender(settings))
        self._encoded = collector_url(settings.url)  # records leave encoded (see the module docstring)
        # Redacting a field an answer carries its predictions in keeps them out of the predictions attribute too.
        self._redacts_predictions = bool(settings.redact & PREDICTION_FIELDS)
        self._reported_drops = 0
        # (request id, time, exchange) sampled and not yet encoded; the lock also makes whoever encodes them the
        # outbox's one producer (the serving thread, the sender at its round, a flush)
        self._held: list[tuple[str, float, Exchange]] = []
        self._held_bytes = 0
        self._held_lock = threading.Lock()
        self.outbox.prepare = self.encode_held
        self._revision = Revision.of(
            {
                "specversion": "1.0",
                "source": f"esteira/{settings.namespace}/{settings.deployment}/{identity.revision}",
                "datacontenttype": "application/json",
                CE_INFERENCE_SERVICE: settings.deployment or identity.name,
                CE_NAMESPACE: settings.namespace,
                CE_COMPONENT: "predictor",
                CE_ENDPOINT: f"revision-{identity.revision}",
                CE_MODEL_NAME: identity.name,
                CE_MODEL_VERSION: identity.version,
                CE_REVISION: identity.revision,
            }
        )

    @classmethod
    def from_env(cls, identity: Identity) -> InferenceLog | None:
        """The model server's log, or None when logging is off. Its queue is flushed as the process exits
        (KServe's server returns from its loop on SIGTERM and exits normally), for at most ``FLUSH_SECONDS``.
        TorchServe kills its workers (SIGKILL), which no exit handler outlives: where the one who runs TorchServe
        set ``ESTEIRA_LOG_FLUSH_DIR``, the worker also flushes when asked before that (:mod:`esteira.packaging.log_flush`)."""
        settings = LogSettings.from_env()
        if settings is None:
            return None
        log = cls(settings, identity)
        atexit.register(log.outbox.flush, FLUSH_SECONDS)
        flush_dir = os.environ.get(ENV_LOG_FLUSH_DIR)
        if flush_dir:
            listen_for_flush(log.outbox.flush, Path(flush_dir), FLUSH_SECONDS)
        return log

    def observe(self, context: Any, exchanges: Sequence[Exchange]) -> None:
        """Hold the sampled requests' exchanges, encoding them when ``HOLD`` are held (see the module docstring);
        never raises (logging must not fail inference). The request id is read now: the context is this batch's."""
        try:
            stamp = time.time()
            chosen = []
            size = 0
            for idx, exchange in enumerate(exchanges):
                request_id = _request_id(context, idx, exchange)
                if request_id is not None and sampled(request_id, self.settings.sample_rate):
                    chosen.append((request_id, stamp, exchange))
                    size += len(exchange.body) if isinstance(exchange.body, bytes | bytearray | str) else 0
            if chosen:
                with self._held_lock:
                    first = not self._held
                    self._held += chosen
                    self._held_bytes += size
                    full = len(self._held) >= HOLD or self._held_bytes >= HOLD_BYTES
                if full:
                    self.encode_held()
                elif first:
                    self.outbox.nudge()
            self._report_drops(getattr(context, "metrics", None))
        except Exception:
            logger.exception("inference logging failed for a batch; inference goes on")

    def encode_held(self) -> None:
        """Queue the records of every exchange held; never raises (it also runs on the sender's thread)."""
        with self._held_lock:
            held, self._held, self._held_bytes = self._held, [], 0
            mode, last, now = self.settings.mode, None, ""
            for request_id, stamp, exchange in held:
                try:
                    if stamp != last:  # a batch's exchanges share their time
                        last, now = stamp, datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")
                    if mode != "response":
                        self._offer(request_id, CE_INFERENCE_REQUEST, now, None, *self._request_data(exchange))
                    if mode != "request" and exchange.status == 200:
                        predictions = (
                            None
                            if self._redacts_predictions
                            else jsontext.dumps([_answer(p) for p in exchange.predictions])
                        )
                        answer = self._answer_data(exchange.answer)
                        self._offer(request_id, CE_INFERENCE_RESPONSE, now, predictions, *answer)
                except Exception:
                    logger.exception("encoding an inference record failed; the others go on")

    def _offer(
        self, request_id: str, event_type: str, now: str, predictions: str | None, data: Any, encoded: bool
    ) -> None:
        """For the collector, the event's bytes (encoded here, see the module docstring); else a Record the
        sender posts in binary mode."""
        if self._encoded:
            event = structured_event(
                self._revision, request_id, event_type, now, predictions, data_bytes(data, encoded)
            )
            self.outbox.offer(event)
        else:
            self.outbox.offer(Record(self._revision, request_id, event_type, now, predictions, data, encoded))

    def _request_data(self, exchange: Exchange) -> tuple[Any, bool]:
        if exchange.json_text and not self.settings.redact:
            return exchange.body, True
        decoded = _decoded(exchange.body)
        if self.settings.redact and not isinstance(decoded, Mapping | list):
            # Text that is no JSON document, or a bare value (a form field's, its name left behind), has no field
            # names to redact by: logged as it came, the field it held left the worker.
            return {"unparsed_bytes": _size(exchange.body)}, False
        return redact(decoded, self.settings.redact), False

    def _answer_data(self, answer: str | bytes) -> tuple[Any, bool]:
        if isinstance(answer, bytes | bytearray):
            return {"binary_bytes": len(answer)}, False
        if not self.settings.redact:
            return answer, True
        return redact(json.loads(answer), self.settings.redact), False

    def _report_drops(self, cache: Any) -> None:
        dropped = self.outbox.dropped
        if cache is None or dropped == self._reported_drops:
            return
        labels = (series_label(self.identity.name), series_label(self.identity.revision))
        self._reported_drops, newly = dropped, dropped - self._reported_drops
        write_metrics(cache, [(DROPPED_TOTAL, DEFINITIONS[DROPPED_TOTAL], newly, labels)])


def _answer(prediction: Prediction) -> Any:
    if prediction.value is not None:
        return prediction.value if not isinstance(prediction.value, tuple) else list(prediction.value)
    return prediction.label


def _decoded(payload: Any) -> Any:
    """JSON as a value; other bytes as a note of their size (binary tensors are not logged)."""
    if isinstance(payload, bytes | bytearray):
        try:
            return json.loads(payload)
        except (ValueError, RecursionError):
            return {"binary_bytes": len(payload)}
    if isinstance(payload, str):
        try:
            return json.loads(payload)
        except (ValueError, RecursionError):
            return payload
    return payload


def _size(payload: Any) -> int:
    """A body's size in bytes, whatever form it came in."""
    if isinstance(payload, bytes | bytearray):
        return len(payload)
    return len(str(payload).encode("utf-8", "surrogatepass"))


def _request_id(context: Any, idx: int, exchange: Exchange) -> str | None:
    for name in (REQUEST_ID_HEADER, "ce-id"):
        if exchange.headers.get(name):
            return str(exchange.headers[name])
    if exchange.body_id:
        return exchange.body_id
    if not exchange.json_text:  # a body the handler could not read may still say its id
        decoded = _decoded(exchange.body)
        if isinstance(decoded, Mapping) and isinstance(decoded.get("id"), str) and decoded["id"]:
            return str(decoded["id"])
    try:
        return str(context.get_request_id(idx))
    except Exception:
        return None

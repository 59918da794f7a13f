"""The collector's HTTP API (aiohttp) and its Prometheus metrics.

POST /v1/records   CloudEvents: binary mode (one event), structured, or a batch (application/cloudevents-batch+json)
POST /v1/labels    ground truth: one object, a list, or {"labels": [...]}
POST /v1/audit     decisions; GET /audit?deployment=NAME[&namespace=NS] reads them back
GET  /v1/quality?deployment=NAME[&namespace=NS][&window=1h]   per-revision quality over the window
GET  /v1/export?deployment=NAME[&namespace=NS]&since=..&until=..  labelled predictions as Parquet
GET  /metrics, /healthz   unauthenticated

Every write is committed before the answer, so a 2xx means stored. A bad item gets its index and reason in
a 422 while the good items of the same batch are stored; resending a batch is safe (duplicates are ignored).
A 503 means the database was unavailable: send the call again (the collector reconnects at the next call);
a 4xx will not get better by sending the same call again.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from esteira.collector.model import Joined
from esteira.collector.store import Store, StoreRefused, StoreUnavailable, pairs_of
from esteira.collector.wire import Problem, audit_from, binary_event, items_of, label_from, structured_event
from esteira.quality.scores import class_scores
from esteira.rollout.quality_queries import QualityNames
from esteira.vocabulary import (
    CE_BATCH_CONTENT_TYPE,
    COLLECTOR_AUDIT_PATH,
    COLLECTOR_LABELS_PATH,
    COLLECTOR_RECORDS_PATH,
    parse_duration,
)

logger = logging.getLogger(__name__)
DEFAULT_MAX_BODY = 8 * 1024 * 1024
MAX_LIMIT = 2**63 - 1  # the largest LIMIT both databases take (a signed 64-bit integer)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class CollectorConfig:
    database: str
    token: str | None = None  # shared secret: `Authorization: Bearer <token>` on every /v1 and /audit call
    max_body: int = DEFAULT_MAX_BODY
    retention: str = "168h"
    quality_window: str = "1h"  # the window of the quality gauges (accuracy, MAE, per-class scores)

    def __post_init__(self) -> None:
        """Durations are checked at start: a bad retention stopped the purge, quietly, for good."""
        for option, value in (("--retention", self.retention), ("--quality-window", self.quality_window)):
            try:
                if parse_duration(value).total_seconds() <= 0:
                    raise ValueError(f"{value!r} is not longer than zero")
            except ValueError as exc:
                raise ValueError(f"{option}: {exc} (a duration such as 168h or 90m)") from None


class Metrics:
    """Counters the rollout's accuracy check reads, and gauges for dashboards, in the app's own registry."""

    def __init__(self, names: QualityNames) -> None:
        self.registry = CollectorRegistry()
        arm = (names.namespace_label, names.deployment_label, names.revision_label)
        per_class = (*arm, "class")

        def counter(name: str, doc: str, labels: tuple[str, ...] = arm) -> Counter:
            return Counter(name.removesuffix("_total"), doc, labels, registry=self.registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = arm) -> Gauge:
            return Gauge(name, doc, labels, registry=self.registry)

        self.labelled = counter(names.labelled, "Predictions joined with their truth")
        self.correct = counter(names.correct, "Labelled predictions that were right")
        self.abs_error = counter(names.absolute_error, "Sum of |predicted - actual|")
        self.sq_error = counter(names.squared_error, "Sum of (predicted - actual)^2")
        self.accepted = counter("esteira_collector_accepted", "Items stored, by kind", ("kind",))
        self.rejected = counter("esteira_collector_rejected", "Items refused as malformed, by kind", ("kind",))
        self.unfit = counter(
            "esteira_collector_unfit_answers", "Answers whose label, sent first, does not fit them: never joined"
        )
        self.accuracy = gauge("esteira_quality_accuracy", "Accuracy over the quality window")
        self.mae = gauge("esteira_quality_mae", "Mean absolute error over the quality window")
        self.precision = gauge("esteira_quality_class_precision", "Precision per class", per_class)
        self.recall = gauge("esteira_quality_class_recall", "Recall per class", per_class)
        self.f1 = gauge("esteira_quality_class_f1", "F1 per class", per_class)

    def count(self, joined: Sequence[Joined]) -> None:
        """Count joins as the store scored them (`Pair`): a class answered as a number matches its text label
        here too, or the accuracy check read 0 where `/v1/quality` read 1."""
        for j, pair in zip(joined, pairs_of(joined), strict=True):
            key = (j.namespace, j.deployment, j.revision)
            self.labelled.labels(*key).inc()
            self.correct.labels(*key).inc(1 if pair.correct else 0)
            if (error := pair.absolute_error) is not None:
                self.abs_error.labels(*key).inc(error)
                self.sq_error.labels(*key).inc(error * error)

    def refresh(self, store: Store, since: float) -> None:
        """Gauges over the quality window, from the store (run at scrape time)."""
        for gauge in (self.accuracy, self.mae, self.precision, self.recall, self.f1):
            gauge.clear()
        for key, (tally, numeric) in store.all_tallies(since).items():
            if numeric and tally.mae is not None:
                self.mae.labels(*key).set(tally.mae)
            elif tally.accuracy is not None:
                self.accuracy.labels(*key).set(tally.accuracy)
        for key, counts in store.confusion(since).items():
            for label, score in class_scores(counts).items():
                for gauge, value in (
                    (self.precision, score.precision),
                    (self.recall, score.recall),
                    (self.f1, score.f1),
                ):
                    if value is not None:
                        gauge.labels(*key, label).set(value)


class Collector:
    """The store, the metrics and the routes; `app()` builds the aiohttp application."""

    def __init__(self, config: CollectorConfig, names: QualityNames | None = None) -> None:
        self.config = config
        self.store = Store(config.database)
        # The counters start at zero in each process, as every counter does: started from what the store holds, a
        # new pod's series (a new `pod` label) were born holding days of joins, and a window's count, which takes a
        # series born inside the window whole, judged a canary's accuracy on all of them.
        self.metrics = Metrics(names or QualityNames())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body, middlewares=[self._auth, self._store_errors])
        app.add_routes(
            [
                web.post(COLLECTOR_RECORDS_PATH, self.post_records),
                web.post(COLLECTOR_LABELS_PATH, self.post_labels),
                web.post(COLLECTOR_AUDIT_PATH, self.post_audit),
                web.get(COLLECTOR_AUDIT_PATH, self.get_audit),
                web.get("/audit", self.get_audit),
                web.get("/v1/quality", self.get_quality),
                web.get("/v1/export", self.get_export),
                web.get("/metrics", self.get_metrics),
                web.get("/healthz", self.healthz),
            ]
        )
        app.on_startup.append(self._start_retention)
        app.on_cleanup.append(self._stop)
        return app

    # --- plumbing ----------------------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self.config.token
        if token and request.path not in ("/metrics", "/healthz"):
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(401, "missing or wrong bearer token (Authorization: Bearer <the collector's token>)")
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body larger than {self.config.max_body} bytes: send smaller batches")

    @web.middleware
    async def _store_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A database outage is the client's cue to send the call again (resending is safe), not a 500; data the
        database refused is the client's error (422: its senders do not resend it), or they would resend forever."""
        try:
            return await handler(request)
        except StoreUnavailable as exc:
            logger.warning("database unavailable: %s", exc)
            return web.json_response(
                {"error": f"database unavailable, retry: {exc}"}, status=503, headers={"Retry-After": "1"}
            )
        except StoreRefused as exc:
            logger.warning("database refused the data: %s", exc)
            return _error(422, f"the database refused the data: {exc}")

    async def _start_retention(self, app: web.Application) -> None:
        app["retention"] = asyncio.create_task(self._retain())

    async def _retain(self) -> None:
        keep = parse_duration(self.config.retention).total_seconds()
        while True:
            try:
                await asyncio.to_thread(self.store.purge, time.time() - keep)
            except Exception:  # a database hiccup: try again next round
                logger.exception("retention purge failed")
            await asyncio.sleep(60)

    async def _stop(self, app: web.Application) -> None:
        app["retention"].cancel()
        await asyncio.gather(app["retention"], return_exceptions=True)
        self.store.close()

    async def _json(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            raise
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than json.loads goes
            raise _bad_request(f"body is not JSON: {exc}") from None

    # --- writes ------------------------------------------------------------------------------------------

    async def post_records(self, request: web.Request) -> web.Response:
        now = time.time()
        problems: list[Problem] = []
        records = []
        if "ce-type" in {k.lower() for k in request.headers}:
            try:
                records.append(binary_event(request.headers, await request.read(), now))
            except ValueError as exc:
                problems.append(Problem(0, str(exc)))
        else:
            document = await self._json(request)
            batch = request.content_type == CE_BATCH_CONTENT_TYPE or isinstance(document, list)
            for index, item in enumerate(document if batch and isinstance(document, list) else [document]):
                try:
                    records.append(structured_event(item, now))
                except (ValueError, TypeError) as exc:
                    problems.append(Problem(index, str(exc)))
        added, joined, unfit = await asyncio.to_thread(self.store.add_records, records, now)
        self.metrics.count(joined)
        for arm in unfit:
            self.metrics.unfit.labels(*arm).inc()
        return self._answer("records", len(records), added, len(joined), problems)

    async def post_labels(self, request: web.Request) -> web.Response:
        now = time.time()
        problems, labels = [], []
        for index, item in enumerate(items_of(await self._json(request), "labels")):
            try:
                labels.append((index, label_from(item, now)))
            except ValueError as exc:
                problems.append(Problem(index, str(exc)))
        added, joined, misfits = await asyncio.to_thread(self.store.add_labels, [label for _, label in labels], now)
        self.metrics.count(joined)
        refused = [Problem(index, misfits[label.key]) for index, label in labels if label.key in misfits]
        problems = sorted(problems + refused, key=lambda problem: problem.index)
        return self._answer("labels", len(labels) - len(refused), added, len(joined), problems)

    async def post_audit(self, request: web.Request) -> web.Response:
        now = time.time()
        problems, entries = [], []
        for index, item in enumerate(items_of(await self._json(request), "entries")):
            try:
                entries.append(audit_from(item, now))
            except ValueError as exc:
                problems.append(Problem(index, str(exc)))
        added = await asyncio.to_thread(self.store.add_audit, entries)
        return self._answer("audit", len(entries), added, 0, problems)

    def _answer(self, kind: str, valid: int, added: int, joined: int, problems: list[Problem]) -> web.Response:
        self.metrics.accepted.labels(kind).inc(added)  # a batch resent after a lost answer: stored once, counted once
        self.metrics.rejected.labels(kind).inc(len(problems))
        body: dict[str, Any] = {"stored": added, "duplicates": valid - added, "joined": joined}
        if problems:
            body["errors"] = [{"index": p.index, "error": p.error} for p in problems]
            return web.json_response(body, status=422)
        return web.json_response(body)

    # --- reads -------------------------------------------------------------------------------------------

    def _deployment(self, request: web.Request) -> tuple[str, str]:
        deployment = request.query.get("deployment")
        if not deployment:
            raise _bad_request("deployment is required")
        namespace = request.query.get("namespace", "default")
        for field, value in (("namespace", namespace), ("deployment", deployment)):
            if "\x00" in value:
                raise _bad_request(f"{field} must not contain the NUL character (\\u0000)")
        return namespace, deployment

    async def get_audit(self, request: web.Request) -> web.Response:
        namespace, deployment = self._deployment(request)
        entries = await asyncio.to_thread(
            self.store.audit, request.query.get("namespace"), deployment, _limit(request.query.get("limit", "1000"))
        )
        del namespace
        return web.json_response({"deployment": deployment, "entries": entries})

    async def get_quality(self, request: web.Request) -> web.Response:
        namespace, deployment = self._deployment(request)
        window = _seconds(request.query.get("window", self.config.quality_window), "window")
        tallies = await asyncio.to_thread(self.store.tallies, namespace, deployment, time.time() - window)
        return web.json_response(
            {
                revision: {"labelled": t.labelled, "correct": t.correct, "accuracy": t.accuracy, "mae": t.mae}
                for revision, t in tallies.items()
            }
        )

    async def get_export(self, request: web.Request) -> web.Response:
        import pyarrow as pa  # type: ignore[import-untyped]  # only the export needs it
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        namespace, deployment = self._deployment(request)
        now = time.time()
        since = _epoch(request.query.get("since"), "since", now - parse_duration(self.config.retention).total_seconds())
        until = _epoch(request.query.get("until"), "until", now + 1)
        rows = await asyncio.to_thread(self.store.labelled, namespace, deployment, since, until)
        columns = ("revision", "request_id", "index", "predicted", "actual", "predicted_at", "joined_at", "request")
        table = pa.table({c: [row[c] for row in rows] for c in columns})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return web.Response(body=sink.getvalue(), content_type="application/vnd.apache.parquet")

    async def get_metrics(self, request: web.Request) -> web.Response:
        since = time.time() - parse_duration(self.config.quality_window).total_seconds()
        await asyncio.to_thread(self.metrics.refresh, self.store, since)
        return web.Response(body=generate_latest(self.metrics.registry), content_type="text/plain", charset="utf-8")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


def _seconds(text: str, field: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except (ValueError, OverflowError):  # OverflowError: more days than a timedelta holds
        raise _bad_request(f"{field} must be a duration such as 1h, got {text!r:.60}") from None


def _limit(text: str) -> int:
    """How many rows to read: a whole number the databases take for a LIMIT (PostgreSQL refuses a negative one)."""
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if not 0 <= limit <= MAX_LIMIT:
        raise _bad_request(f"limit must be a whole number from 0 to {MAX_LIMIT}, got {text!r:.60}")
    return limit


def _epoch(text: str | None, field: str, default: float) -> float:
    """A time in seconds since the epoch; NaN or Infinity would select nothing, or everything, without a word."""
    if text is None:
        return default
    try:
        moment = float(text)
    except ValueError:
        moment = math.nan
    if not math.isfinite(moment):
        raise _bad_request(f"{field} must be a time in seconds since the epoch, got {text!r:.60}")
    return moment


def _bad_request(message: str) -> web.HTTPBadRequest:
    """The caller's error as JSON with its reason, like every other answer of this API."""
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)

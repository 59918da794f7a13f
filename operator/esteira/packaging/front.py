"""The model server's front: Esteira's v1/v2 surface on the pod's inference port, TorchServe behind it on loopback.

Why a front and not TorchServe alone: TorchServe's frontend cannot be taught routes without a Java plugin, and
the routes it lacks (model metadata and readiness, ``/versions/<v>``, ``GET /v1/models``) never reach a Python
handler. The front answers those from the archive's ``esteira-model.json`` and the management API, forwards
v1 predict and v2 infer to TorchServe (the handler does the parsing, requested outputs and binary tensors),
and passes every other path (``/ping``, ``/predictions/...``) through untouched. On the metrics port it serves
TorchServe's metrics with its own added: the errors TorchServe answered itself and each request's time in the
server, on every path that runs the model (:mod:`esteira.packaging.front_metrics`). Where the entrypoint asks,
only so many inference requests are at TorchServe at once and the rest wait in the front, taken newest first
while callers are giving up (:mod:`esteira.packaging.admission`). For a model TorchServe would batch, the front
joins the requests that come while TorchServe is busy into one and TorchServe serves it unbatched
(:mod:`esteira.packaging.joiner`).
It runs in the entrypoint's process on its own event loop thread, so TorchServe's supervision stays as it was.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Sequence

import uvloop

from esteira.packaging.admission import Admission, TooLate
from esteira.packaging.caller_queue import deadline
from esteira.packaging.config import MAX_MESSAGE_BYTES
from esteira.packaging.front_metrics import (
    RequestDurations,
    ServerAnswers,
    model_labels,
    with_front_metrics,
)
from esteira.packaging.httpserver import ClientLimits, HttpServer, Request, Response, Routes, error_response
from esteira.packaging.joiner import Joiner, Joining
from esteira.packaging.surface import (
    ModelSurface,
    Protocol,
    ServedModel,
    forwarded_headers,
    protocol_routes,
    relay,
    runs_the_model,
)
from esteira.packaging.upstream import Upstream, UpstreamError, parse_address
from esteira.vocabulary import RETRY_AFTER_SECONDS
from model_handlers.config import ModelConfig
from model_handlers.joined import JOINED_HEADER

# Hop-by-hop headers (RFC 9110) and those the upstream client writes; the rest of a passed-through request goes
# as sent. ``Expect: 100-continue`` was the caller's to its hop: the front has read the whole body, and TorchServe
# would answer it with a 100 before its answer. A caller's JOINED_HEADER is not passed either: only the front joins
# requests. Nor are headers named as a request's parameters (``body``, ``data``): TorchServe's worker lets a header
# replace a parameter's entry in the handler's view of the request, which then took a plain request for an envelope's
# and answered every request of its batch 503.
_NOT_PASSED = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "host",
        "content-length",
        "expect",
        "body",
        "data",
        JOINED_HEADER,
    }
)
DEFAULT_MAX_BODY = MAX_MESSAGE_BYTES  # TorchServe's default max_request_size
MANAGEMENT_SECONDS = 3.0
METRICS_SECONDS = 10.0  # a scrape's own timeout is 10 s by default
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
# The entrypoint reads the front's address with the same parser the upstream client uses.
__all__ = [
    "DEFAULT_MAX_BODY",
    "FrontThread",
    "TorchServeSurface",
    "front_routes",
    "front_server",
    "parse_address",
    "with_front_counts",
]
logger = logging.getLogger(__name__)


class TorchServeSurface(ModelSurface):
    """One model in one TorchServe: ``backend`` is its inference address, ``management`` its management one and
    ``metrics`` its metrics one; ``admission``, where given, how many inference requests go to it at once;
    ``joining``, where given, how its inference requests are joined (TorchServe then serves the model unbatched)."""

    def __init__(
        self,
        served: ServedModel,
        version: str,
        backend: str,
        management: str,
        metrics: str,
        admission: Admission | None = None,
        joining: Joining | None = None,
    ) -> None:
        self.name = served.name
        self.admission = admission
        self.served = served
        self.version = version
        self.backend = backend.rstrip("/")
        self.inference = Upstream(self.backend, answer_seconds=None)  # TorchServe's own response_timeout applies
        self.joiner = None if joining is None else Joiner(self.inference, joining)
        self.management = Upstream(management.rstrip("/"), answer_seconds=MANAGEMENT_SECONDS)
        self.metrics = Upstream(metrics.rstrip("/"), answer_seconds=METRICS_SECONDS)
        # Labelled as the handler labels its own series (the operator's environment, else the archive's names).
        manifest = {"model": {"modelName": served.name, "modelVersion": version}}
        labels = model_labels(served.config.identity(manifest), socket.gethostname())
        self.answers, self.durations = ServerAnswers(labels), RequestDurations(labels)
        self._predictions = f"/predictions/{served.name}"

    def versions(self) -> Sequence[str]:
        return [self.version]

    def config(self, version: str | None) -> ModelConfig | None:
        return self.served.config if version in (None, self.version) else None

    async def unready(self, version: str | None) -> str | None:
        try:
            answer = await self.management.request("GET", f"/models/{self.name}")
            described = json.loads(answer.body) if answer.status == 200 else []
        except (UpstreamError, ValueError) as exc:
            return f"model {self.name!r}: TorchServe's management API cannot be reached: {type(exc).__name__}"
        statuses = [w.get("status") for entry in described or [] for w in entry.get("workers") or []]
        if "READY" not in statuses:
            return f"model {self.name!r} has no ready worker yet"
        return None

    async def infer(self, request: Request, protocol: Protocol, version: str | None) -> Response:
        """v1 predict and v2 infer, timed and counted (:meth:`_inference`)."""
        path = f"/v1/models/{self.name}:predict" if protocol == "v1" else f"/v2/models/{self.name}/infer"
        return await self._inference(request, path, forwarded_headers(request))

    async def pass_through(self, request: Request) -> Response:
        """Any other path, to TorchServe as it came (its errors still made ``{"error": ...}``). TorchServe's own
        inference path for this model (``/predictions/<model>[/<version>]``) runs the handler as v1 and v2 do, so
        it is timed and counted as they are."""
        headers = {k: v for k, v in request.headers.items() if k not in _NOT_PASSED}
        if self.predicts(request.path):
            return await self._inference(request, request.target, headers)
        try:
            answer = await self.inference.request(request.method, request.target, request.body, headers)
        except UpstreamError as exc:
            return self._unanswered(exc)
        return relay(answer.status, answer.body, answer.headers, answer.reason)

    def runs_the_model(self, request: Request) -> bool:
        """Whether ``request`` is inference, TorchServe's own path included."""
        return runs_the_model(request) or self.predicts(request.path)

    def predicts(self, path: str) -> bool:
        """Whether ``path`` is TorchServe's inference path for this model, of any version."""
        return path.rstrip("/") == self._predictions or path.startswith(self._predictions + "/")

    async def _inference(self, request: Request, target: str, headers: dict[str, str]) -> Response:
        """``request`` to ``target`` with ``headers``, timed, and counted when TorchServe answers an error itself,
        or not at all: the handler never saw it. Through the admission, where there is one: a request refused
        there as too late (by the deadline its caller's proxy gave) is a 503 of the front's, counted as
        TorchServe's own errors are."""
        began = time.perf_counter()
        method, body = request.method, request.body
        try:
            if self.admission is None:
                return await self._forward(method, target, body, headers, request.caller)
            try:
                return await self.admission.send(
                    deadline(began, request.headers),
                    began,
                    lambda: self._forward(method, target, body, headers, request.caller),
                    lambda response: response.status == 200,
                )
            except TooLate:
                self.answers.record(503)
                return self._too_late()
        finally:
            self.durations.observe(time.perf_counter() - began)

    async def _forward(
        self, method: str, target: str, body: bytes, headers: dict[str, str], caller: object = None
    ) -> Response:
        try:
            if self.joiner is not None and method == "POST":
                answer = await self.joiner.post(target, body, headers, caller)
            else:
                answer = await self.inference.request(method, target, body, headers)
        except UpstreamError as exc:
            self.answers.record(502)
            return self._unanswered(exc)
        self.answers.answered(answer.status, answer.body)
        return relay(answer.status, answer.body, answer.headers, answer.reason)

    def _too_late(self) -> Response:
        message = f"model {self.name!r} could not answer within the caller's deadline; retry later"
        refused = error_response(503, message)
        return Response(503, refused.body, {**refused.headers, "Retry-After": str(RETRY_AFTER_SECONDS)})

    def _unanswered(self, exc: UpstreamError) -> Response:
        """The front's own 502; the address goes to the log, not to the client."""
        logger.warning("TorchServe at %s did not answer: %s: %s", self.backend, type(exc).__name__, exc)
        return error_response(502, f"the model server did not answer ({exc})")

    async def scrape(self, request: Request) -> Response:
        """TorchServe's metrics with the front's (:func:`with_front_counts`)."""
        held = [holder.abandoned for holder in (self.admission, self.joiner) if holder is not None]
        abandoned = sum(held) if held else None
        return await with_front_counts(self.metrics, request.query, self.answers, self.durations, abandoned)

    def close(self) -> None:
        if self.joiner is not None:
            self.joiner.close()
        self.inference.close()
        self.management.close()
        self.metrics.close()


async def with_front_counts(
    metrics: Upstream, query: str, answers: ServerAnswers, durations: RequestDurations, abandoned: int | None
) -> Response:
    """TorchServe's metrics (``/metrics`` at ``metrics``, asked with the scrape's ``query``) with what the front
    counted: the errors TorchServe answered itself among the handler's request counts, and the requests'
    durations. The local router stands in for the front and serves the same."""
    target = f"/metrics?{query}" if query else "/metrics"
    try:
        answer = await metrics.request("GET", target)
    except UpstreamError as exc:
        logger.warning("TorchServe's metrics did not answer: %s: %s", type(exc).__name__, exc)
        return error_response(502, f"the model server's metrics did not answer ({exc})")
    content_type = {"Content-Type": answer.headers.get("content-type", PROMETHEUS_TEXT)}
    if answer.status != 200:
        return Response(answer.status, answer.body, content_type, answer.reason)
    exposition = answer.body.decode("utf-8", "replace")
    text = with_front_metrics(exposition, query, answers, durations, abandoned)
    return Response(200, text.encode(), content_type)


def front_routes(surface: TorchServeSurface) -> Routes:
    routes = protocol_routes(surface)
    # TorchServe's own paths only: an unknown or wrong-method /v1 or /v2 request is the surface's 404 or 405.
    routes.add("*", "/{tail:(?!v1/|v2/|v2$).*}", surface.pass_through)
    return routes


def front_server(
    surface: TorchServeSurface, limits: ClientLimits | None = None, max_body: int = DEFAULT_MAX_BODY
) -> HttpServer:
    """The front's inference listener: a caller that leaves ends its request to TorchServe."""
    return HttpServer(front_routes(surface), limits, max_body, abandon=surface.runs_the_model)


def metrics_routes(surface: TorchServeSurface) -> Routes:
    routes = Routes()
    routes.add("GET", "/metrics", surface.scrape)
    return routes


class FrontThread:
    """The front on its own event loop in a daemon thread; ``start`` returns once it listens (or raises).

    ``metrics`` is the (host, port) of the metrics port it serves, where given.
    """

    def __init__(
        self,
        surface: TorchServeSurface,
        host: str,
        port: int,
        limits: ClientLimits | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        metrics: tuple[str, int] | None = None,
    ) -> None:
        self.surface, self.host, self.port, self.metrics = surface, host, port, metrics
        self.limits = limits or ClientLimits()
        self.max_body = max_body
        self.loop = uvloop.new_event_loop()
        self._listening = threading.Event()
        self._error: BaseException | None = None
        self._servers: list[HttpServer] = []
        self._thread = threading.Thread(target=self._main, name="esteira-front", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._listen())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._listening.set()
            return
        self._listening.set()
        self.loop.run_forever()

    async def _listen(self) -> None:
        inference = front_server(self.surface, self.limits, self.max_body)
        self._servers.append(inference)
        await inference.start(self.host, self.port)
        if self.metrics is not None:
            scrapes = HttpServer(metrics_routes(self.surface), self.limits, max_body=0)
            self._servers.append(scrapes)
            await scrapes.start(*self.metrics)

    def start(self, within: float = 30.0) -> FrontThread:
        self._thread.start()
        self._listening.wait(within)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._servers and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(30)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    async def _close(self) -> None:
        """On the front's loop: its transports are the loop's, and no other thread may close them."""
        for server in self._servers:
            await server.stop()
        self.surface.close()

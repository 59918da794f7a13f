"""The local router: one port in front of every revision's TorchServe, split by the rollout's weight.

It serves the KServe v1 and Open Inference Protocol v2 REST surface a predictor would (the routes of
`esteira.packaging.surface`: metadata, readiness, `/versions/<v>`, inference), a `/metrics` endpoint with
per-revision counters, `GET /status` and `POST /control/<command>` for the CLI. A `/versions/<v>` request goes
to the arm serving that model version. Everything that decides anything lives elsewhere: the split comes from
`set_split`, control requests go to the runtime.

A request the chosen revision could not answer at all (its server is gone or not ready) is sent again: to the
other arm when it has a server, else to the same revision once it is back, for up to `RETRY_SECONDS`. Inference
changes nothing on a server, so a second try is safe; the client sees an answer, not a crash. Client-facing
errors never name backend addresses or ports; those go to the log.

A request's deadline is the earlier of the spec's timeout and what a proxy in front said
(``x-envoy-expected-rq-timeout-ms``); the model server is told what is left of it, as Envoy tells it, so that
esteira-kserve refuses at once what it cannot answer in time. Before a TorchServe revision, and an esteira-kserve
one whose requests it joins, the router holds requests as the pod's front does (`esteira.packaging.admission`):
while callers give up or requests have deadlines, only two batches a worker go to it at once, and the rest wait
in the router. For a TorchServe revision it also counts what the pod's front counts (each request's time in the
server and the errors TorchServe answered itself) and serves them with TorchServe's metrics on
``/servers/<revision>/metrics``, as a pod's metrics port serves them, so the operator's queries find the same series
on one machine; ``GET /targets`` lists what a Prometheus scrapes, in its HTTP service discovery format.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from esteira.local.access import refusal
from esteira.local.split import NotServing, Split, choose, should_mirror
from esteira.local.stats import ArmStats, exposition
from esteira.packaging.admission import Admission, TooLate
from esteira.packaging.caller_queue import deadline, with_time_left
from esteira.packaging.front import with_front_counts
from esteira.packaging.front_metrics import RequestDurations, ServerAnswers
from esteira.packaging.httpserver import (
    ClientLimits,
    HttpServer,
    Request,
    Response,
    Routes,
    error_response,
    json_response,
)
from esteira.packaging.joiner import Joiner, Joining
from esteira.packaging.surface import (
    ModelSurface,
    Protocol,
    forwarded_headers,
    protocol_routes,
    relay,
    runs_the_model,
)
from esteira.packaging.upstream import Reply, TimedOut, Upstream, UpstreamError, parse_address
from esteira.vocabulary import CALLER_LEFT_STATUS, REQUEST_ID_HEADER, RETRY_AFTER_SECONDS, REVISION_HEADER
from model_handlers.config import ModelConfig

HOST = "127.0.0.1"
Control = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
StatusView = Callable[[], dict[str, Any]]
TargetsView = Callable[[], list[dict[str, Any]]]
MAX_BODY = 32 * 1024 * 1024
MAX_CONTROL_BODY = 4096
RETRY_SECONDS = 28.0  # a TorchServe restart takes 10-25 s on a busy machine; common client timeouts are 30 s
ANSWER_SECONDS = 60.0
SCRAPE_SECONDS = 10.0  # a scrape's own timeout is 10 s by default
logger = logging.getLogger(__name__)


class PortInUse(OSError):
    """The router's port is taken; the message names it."""


@dataclass
class Answer:
    """One backend answer, kept whole so the router can relay its protocol headers (names in lower case)."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""
    unanswered: bool = False  # no server answered: the router may try again
    reached: bool = True  # a server was tried (False: the revision had none ready)


@dataclass
class StandInFront:
    """What the pod's front counts before a TorchServe revision (`esteira.packaging.front_metrics`), counted by the
    router, which stands where the front stands: every request's time from arrival to answer, and the errors
    TorchServe answered itself, which its handler never counted."""

    answers: ServerAnswers
    durations: RequestDurations
    metrics_address: Callable[[], str | None]  # the server's metrics port now: a restart moves it
    scrapes: Upstream | None = None

    def upstream(self, address: str) -> Upstream:
        """Connections to ``address``, the ones kept while it stays where it was."""
        if self.scrapes is None or (self.scrapes.host, self.scrapes.port) != parse_address(address):
            if self.scrapes is not None:
                self.scrapes.close()
            self.scrapes = Upstream(address, answer_seconds=SCRAPE_SECONDS)
        return self.scrapes


def _answered(reply: Reply) -> bool:
    """A prediction: its time at a held revision says how long the next request will take."""
    return reply.status == 200


class Router(ModelSurface):
    """Routes inference requests to revisions' backends and keeps per-revision counters."""

    def __init__(
        self, model: str, port: int, rng: random.Random | None = None, limits: ClientLimits | None = None
    ) -> None:
        self.model = self.name = model
        self.port = port
        self.limits = limits or ClientLimits()
        self.token: str | None = None  # set by the runtime: /control/* wants it
        self.retry_seconds = RETRY_SECONDS
        self.timeout_seconds: int | None = None  # the spec's timeoutSeconds: how long a request may take
        self.rng = rng or random.Random()
        self.split: Split | None = None
        self.mirror = False
        self.backends: dict[int, str | None] = {}
        self.models: dict[int, tuple[str, ModelConfig | None]] = {}  # revision -> model version, its config
        self.stats: dict[int, ArmStats] = {}
        self.in_flight: dict[int, int] = {}  # requests being forwarded to each revision now
        self._drains: dict[int, asyncio.Event] = {}  # revisions whose last request in flight someone awaits
        self.control: Control | None = None
        self.status_view: StatusView | None = None
        self.targets_view: TargetsView | None = None
        self._server: HttpServer | None = None
        self._upstreams: dict[str, Upstream] = {}  # backend address -> its keep-alive connections
        self._admissions: dict[int, Admission] = {}  # revisions whose requests are held (TorchServe's)
        self._joiners: dict[int, Joiner] = {}  # revisions whose requests are joined (TorchServe's, batching)
        self._fronts: dict[int, StandInFront] = {}  # revisions whose pod front the router stands in for
        self._mirrors: set[asyncio.Task[None]] = set()

    # --- what the runtime sets ---------------------------------------------------------------------------

    def set_split(self, split: Split | None, mirror: bool) -> None:
        self.split, self.mirror = split, mirror
        for revision in split.revisions if split else ():
            self.stats.setdefault(revision, ArmStats())

    def set_backend(
        self, revision: int, url: str | None, at_once: int | None = None, joining: Joining | None = None
    ) -> None:
        """Where a revision's server listens (None: nowhere now); ``at_once``, how many requests go to it at once
        while they are held (None: never held: the server orders its own queue); ``joining``, how requests to it are
        joined (None: one by one)."""
        previous = self.backends.get(revision)
        self.backends[revision] = url
        joiner = self._joiners.get(revision)
        if url is not None and joining is None:
            self._joiners.pop(revision, None)
        elif url is not None and joining is not None:
            if joiner is None:
                self._joiners[revision] = Joiner(self._upstream(url), joining)
            else:  # one for the revision's life: its counts carry on
                joiner.upstream, joiner.joining = self._upstream(url), joining
        held = self._admissions.get(revision)
        if url is not None and at_once is None:
            self._admissions.pop(revision, None)
        elif at_once is not None and held is None:
            self._admissions[revision] = Admission(at_once)
        elif at_once is not None and held is not None:  # one for the revision's life: its counts carry on
            held.limit = at_once
        if previous is not None and previous != url:
            self._retire(previous)

    def stand_in_front(self, revision: int, labels: str, metrics_address: Callable[[], str | None]) -> None:
        """Count for ``revision`` what its pod's front would, in series labelled ``labels``, and serve them with its
        server's metrics (at ``metrics_address()``, where it is now); one for the revision's life: its counts carry
        on across restarts of its server, as a front's across its TorchServe's."""
        front = self._fronts.get(revision)
        if front is None:
            self._fronts[revision] = StandInFront(ServerAnswers(labels), RequestDurations(labels), metrics_address)
        else:
            front.metrics_address = metrics_address

    def forget_front(self, revision: int) -> None:
        """``revision``'s server is gone: its counts and its scrapes' connections go with it."""
        front = self._fronts.pop(revision, None)
        if front is not None and front.scrapes is not None:
            front.scrapes.close()

    def _retire(self, url: str) -> None:
        """Close the connections to an address no revision uses any more."""
        if url not in self.backends.values() and (upstream := self._upstreams.pop(url, None)) is not None:
            upstream.close()

    def set_timeout(self, seconds: int | None) -> None:
        """Requests to the model servers time out after ``seconds`` (else ``ANSWER_SECONDS``), and each is told what
        is left of it (or of an earlier deadline its proxy said) as the gateway's Envoy tells it, so that
        esteira-kserve refuses at once what it cannot answer in time."""
        self.timeout_seconds = seconds
        for upstream in self._upstreams.values():
            upstream.answer_seconds = seconds or ANSWER_SECONDS

    def _upstream(self, url: str) -> Upstream:
        upstream = self._upstreams.get(url)
        if upstream is None:
            upstream = self._upstreams[url] = Upstream(url, answer_seconds=self.timeout_seconds or ANSWER_SECONDS)
        return upstream

    def describe(self, revision: int, version: str, config: ModelConfig | None) -> None:
        """The model version a revision serves and its config (None when its archive could not be read)."""
        self.models[revision] = (version, config)

    def arm(self, revision: int) -> ArmStats:
        stats = self.stats.get(revision)  # not setdefault: it would build a new ArmStats on every request
        if stats is None:
            stats = self.stats[revision] = ArmStats()
        return stats

    # --- lifecycle ---------------------------------------------------------------------------------------

    def routes(self) -> Routes:
        routes = protocol_routes(self)
        routes.add("GET", "/metrics", self._metrics)
        routes.add("GET", "/servers/{revision:[0-9]+}/metrics", self._server_metrics)
        routes.add("GET", "/targets", self._targets)
        routes.add("GET", "/status", self._status)
        routes.add("POST", "/control/{command}", self._control, max_body=MAX_CONTROL_BODY)
        return routes

    async def start(self) -> None:
        """Listen on 127.0.0.1:port, or raise PortInUse naming the port."""
        routes = self.routes()
        server = HttpServer(
            routes, self.limits, max_body=MAX_BODY, body_limit=routes.body_limit, abandon=runs_the_model
        )
        try:
            await server.start(HOST, self.port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    errno.EADDRINUSE,
                    f"port {self.port} on {HOST} is already in use: stop whatever listens there or pick another "
                    "with --port",
                ) from None
            raise
        self._server = server

    async def stop(self) -> None:
        """Stop listening, let in-flight requests (and mirror copies) finish, then close."""
        if self._server is not None:
            await self._server.stop(within=15.0)
            self._server = None
        if self._mirrors:
            await asyncio.wait(self._mirrors, timeout=10)
        for joiner in self._joiners.values():
            joiner.close()
        for upstream in self._upstreams.values():
            upstream.close()
        self._upstreams.clear()
        for front in self._fronts.values():
            if front.scrapes is not None:
                front.scrapes.close()

    # --- the model surface --------------------------------------------------------------------------------

    def _arms(self) -> tuple[int, ...]:
        return self.split.revisions if self.split is not None else ()

    def versions(self) -> Sequence[str]:
        """Model versions of the serving arms, stable's first."""
        served = [self.models[revision][0] for revision in self._arms() if revision in self.models]
        return list(dict.fromkeys(served))

    def _revisions_of(self, version: str | None) -> list[int]:
        arms = self._arms()
        if version is None:
            return list(arms)
        return [revision for revision in arms if self.models.get(revision, ("", None))[0] == version]

    def config(self, version: str | None) -> ModelConfig | None:
        revisions = self._revisions_of(version)
        return self.models.get(revisions[0], ("", None))[1] if revisions else None

    async def unready(self, version: str | None) -> str | None:
        if self.split is None:
            return "no revision is serving yet"
        revisions = self._revisions_of(version) if version else [self.split.stable]
        if any(self.backends.get(revision) for revision in revisions):
            return None
        return f"revision {', '.join(map(str, revisions))} of model {self.model!r} is not ready"

    async def infer(self, request: Request, protocol: Protocol, version: str | None) -> Response:
        path = f"/v1/models/{self.model}:predict" if protocol == "v1" else f"/v2/models/{self.model}/infer"
        split = self.split
        if split is None:
            return error_response(503, "no revision is serving yet")
        pinned = request.headers.get(REVISION_HEADER.lower())
        try:
            revision = self._choose(split, version, pinned)
        except NotServing as exc:
            return error_response(404, str(exc))
        # A pinned request is answered by its revision or not at all; one for a version, by a revision serving it.
        allowed = [revision] if pinned and pinned.strip() else self._revisions_of(version)
        body, due = request.body, self._due(request.headers)
        headers = forwarded_headers(request)
        # A request without an id gets one here, and its answer says it: the server's records are keyed on it,
        # and a caller labels a request by it (a server's own id for it never reached the caller).
        request_id = headers.setdefault(REQUEST_ID_HEADER, uuid.uuid4().hex)
        if should_mirror(split, revision, self.mirror) and split.canary is not None:
            task = asyncio.create_task(self._send(split.canary, path, body, headers, due))
            self._mirrors.add(task)
            task.add_done_callback(self._mirrors.discard)
        revision, answer = await self._forward_retrying(revision, allowed, path, body, headers, due, request.caller)
        response = relay(answer.status, answer.body, answer.headers, answer.reason)
        response.headers = {**response.headers, REVISION_HEADER: str(revision), REQUEST_ID_HEADER: request_id}
        return response

    def _due(self, headers: Mapping[str, str]) -> float | None:
        """When the caller gives up (``time.perf_counter``): the earlier of what a proxy in front said, as Envoy
        says it to the server behind it (and as Envoy honours it from another Envoy in front,
        ``respect_expected_rq_timeout``), and the spec's timeoutSeconds from now; None without either."""
        now = time.perf_counter()
        said = deadline(now, headers)
        if self.timeout_seconds is None:
            return said
        own = now + self.timeout_seconds
        return own if said is None else min(said, own)

    def _choose(self, split: Split, version: str | None, pinned: str | None) -> int:
        """By weight, unless pinned; a version narrows the choice to the arms serving it."""
        revision = choose(split, self.rng.random(), pinned)
        if version is None:
            return revision
        candidates = self._revisions_of(version)
        if revision in candidates:
            return revision
        if pinned is not None and pinned.strip():
            raise NotServing(f"revision {pinned.strip()} does not serve version {version!r}")
        return candidates[0]

    async def _forward_retrying(
        self,
        revision: int,
        allowed: Sequence[int],
        path: str,
        body: bytes,
        headers: dict[str, str],
        due: float | None,
        caller: object,
    ) -> tuple[int, Answer]:
        """Forward; while no server could answer (502/503 from the router itself), try another serving arm of
        ``allowed``, else wait for this one to come back, up to `retry_seconds` and never past the request's
        deadline (its caller has gone by then)."""
        began = time.perf_counter()
        answer = await self._forward(revision, path, body, headers, due, caller=caller)
        retrying_until = began + self.retry_seconds if due is None else min(due, began + self.retry_seconds)
        while answer.unanswered and time.perf_counter() < retrying_until:
            others = [r for r in self._arms() if r != revision and r in allowed and self.backends.get(r)]
            if others:
                revision = others[0]
            elif not self.backends.get(revision):
                await asyncio.sleep(0.1)
                continue
            answer = await self._forward(revision, path, body, headers, due, caller=caller)
        if answer.unanswered and not answer.reached:  # out of time, no server tried: this revision failed it
            self.arm(revision).observe(answer.status, time.perf_counter() - began, False)
        return revision, answer

    async def _send(self, revision: int, path: str, body: bytes, headers: dict[str, str], due: float | None) -> None:
        """A mirrored copy: its answer goes nowhere."""
        await self._forward(revision, path, body, headers, due, mirrored=True)

    async def _forward(
        self,
        revision: int,
        path: str,
        body: bytes,
        headers: dict[str, str],
        due: float | None,
        mirrored: bool = False,
        caller: object = None,
    ) -> Answer:
        """One request to a revision's TorchServe; a failure to reach it is a server error of that revision."""
        base = self.backends.get(revision)
        started = time.perf_counter()
        self.in_flight[revision] = self.in_flight.get(revision, 0) + 1
        try:
            return await self._post(revision, base, path, body, headers, due, mirrored, started, caller)
        finally:
            self.in_flight[revision] -= 1
            if self._drains and not self.in_flight[revision] and revision in self._drains:
                self._drains[revision].set()

    async def drained(self, revision: int) -> None:
        """Returns once no request is in flight to ``revision`` (the runtime stops sending it new ones first);
        callers bound the wait."""
        if not self.in_flight.get(revision, 0):
            return
        finished = self._drains.setdefault(revision, asyncio.Event())
        try:
            await finished.wait()
        finally:
            self._drains.pop(revision, None)

    async def _post(
        self,
        revision: int,
        base: str | None,
        path: str,
        body: bytes,
        headers: dict[str, str],
        due: float | None,
        mirrored: bool,
        started: float,
        caller: object,
    ) -> Answer:
        if base is None:
            not_ready = json.dumps({"error": f"revision {revision} is not ready"}).encode()
            answer = Answer(503, not_ready, unanswered=True, reached=False)
        else:
            upstream, admission = self._upstream(base), None if mirrored else self._admissions.get(revision)
            joiner = None if mirrored else self._joiners.get(revision)
            front = self._fronts.get(revision)

            def forward() -> Awaitable[Reply]:  # what is left of the deadline is said as the request goes on
                if joiner is None:
                    return upstream.request("POST", path, body, with_time_left(headers, due, time.perf_counter()))
                return joiner.post(path, body, headers, caller, due)

            try:
                if admission is None:
                    reply = await forward()
                else:
                    reply = await admission.send(due, started, forward, _answered)
                answer = Answer(reply.status, reply.body, reply.headers, reply.reason)
                if front is not None:
                    front.answers.answered(reply.status, reply.body)
            except TooLate:
                message = f"revision {revision} could not answer before the request's deadline; retry later"
                answer = Answer(503, json.dumps({"error": message}).encode(), {"retry-after": str(RETRY_AFTER_SECONDS)})
                if front is not None:  # the front's own refusal, counted with TorchServe's
                    front.answers.record(503)
            except TimedOut as exc:
                answer = self._timed_out(revision, base, exc)
                if front is not None and answer.unanswered:  # gone, not slow: as TorchServe's own timeout, counted
                    front.answers.record(answer.status)
            except asyncio.CancelledError:  # its caller left: the wait it had is evidence, its latency a floor
                if not mirrored:
                    self.arm(revision).observe(CALLER_LEFT_STATUS, time.perf_counter() - started)
                raise
            except UpstreamError as exc:
                answer = self._unanswered(revision, base, exc)
                if front is not None:
                    front.answers.record(502)
            finally:  # whatever came of it, a caller's leaving included, as the front times every request
                if front is not None:
                    front.durations.observe(time.perf_counter() - started)
        # An attempt its server left unanswered is that revision's error, though another arm then answers: a canary
        # that dropped its requests, each retried on the stable, showed no error to the analysis.
        if answer.reached or mirrored:
            self.arm(revision).observe(answer.status, time.perf_counter() - started, mirrored)
        return answer

    def _timed_out(self, revision: int, base: str, exc: TimedOut) -> Answer:
        """Past the spec's timeout the revision is slow, not gone: it failed this request (a 504, not retried
        elsewhere: it may have run) and serves on. Without one, no answer in ``ANSWER_SECONDS`` means it is gone."""
        if self.timeout_seconds is None:
            return self._unanswered(revision, base, exc)
        message = f"revision {revision}'s model server did not answer within timeoutSeconds ({exc})"
        return Answer(504, json.dumps({"error": message}).encode())

    def _unanswered(self, revision: int, base: str, exc: UpstreamError) -> Answer:
        """The router's 502, to be tried on another arm; the revision is taken out until the runtime puts it back."""
        logger.warning("revision %d at %s did not answer: %s: %s", revision, base, type(exc).__name__, exc)
        message = f"revision {revision}'s model server did not answer ({exc})"
        if self.backends.get(revision) == base:  # it is gone: stop choosing it until the runtime says so
            self.backends[revision] = None
            self._retire(base)
        return Answer(502, json.dumps({"error": message}).encode(), unanswered=True)

    # --- metrics, status, control ------------------------------------------------------------------------

    def _abandoned(self, revision: int) -> int | None:
        """Requests held for ``revision`` whose callers left before they were sent, waiting in its admission or to
        be joined (None: the router holds none of its requests)."""
        holders = (self._admissions.get(revision), self._joiners.get(revision))
        held = [holder.abandoned for holder in holders if holder is not None]
        return sum(held) if held else None

    async def _metrics(self, _: Request) -> Response:
        held = {revision: self._abandoned(revision) for revision in {*self._admissions, *self._joiners}}
        text = exposition(self.model, self.stats, {revision: count or 0 for revision, count in held.items()})
        return Response(200, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})

    async def _server_metrics(self, request: Request) -> Response:
        """A TorchServe revision's metrics with what the router counted as its front, as its pod's metrics port
        serves them."""
        revision = int(request.params["revision"])
        front = self._fronts.get(revision)
        address = front.metrics_address() if front is not None else None
        if front is None or address is None:
            return error_response(404, f"revision {revision} has no TorchServe server whose metrics the router serves")
        abandoned = self._abandoned(revision)
        return await with_front_counts(
            front.upstream(address), request.query, front.answers, front.durations, abandoned
        )

    async def _targets(self, _: Request) -> Response:
        """What a Prometheus scrapes, in its HTTP service discovery format (``http_sd_configs``)."""
        return json_response(self.targets_view() if self.targets_view else [])

    async def _status(self, _: Request) -> Response:
        return json_response(self.status_view() if self.status_view else {})

    async def _control(self, request: Request) -> Response:
        refused = refusal(request.headers, self.port, self.token)
        if refused is not None:
            return error_response(*refused)
        if self.control is None:
            return error_response(503, "no runtime attached")
        raw = request.body  # at most MAX_CONTROL_BODY: the route's cap, checked before it is read
        try:
            args = json.loads(raw) if raw.strip() else {}
        except (ValueError, RecursionError):
            return error_response(400, 'a command\'s body must be a JSON object, e.g. {"full": true}')
        if not isinstance(args, dict):
            return error_response(400, f"a command's body must be a JSON object, not a {type(args).__name__}")
        try:
            result = await self.control(request.params["command"], args)
        except ValueError as exc:
            return error_response(400, str(exc))
        return json_response(result)

"""``esteira-kserve``: Esteira's handler served by KServe's own model server (``kserve.ModelServer``).

KServe's server brings the HTTP stack (uvicorn, Starlette), health, the model repository, its request metrics
and graceful shutdown. Inference does not go through KServe's data plane: its v1 path decodes the JSON and its
v2 path builds pydantic objects before a model sees a byte, and neither batches. Esteira's inference routes, a
bare ASGI layer uvicorn calls ahead of KServe's application and its middleware
(:mod:`model_handlers.inference_asgi`), hand the body as it came to the adaptive batcher
(:mod:`model_handlers.batcher`), which runs batches
through ``EsteiraHandler.handle`` in-process (:mod:`model_handlers.inprocess`): the same parsing, validation,
errors, metrics, drift counting and logging as under TorchServe. Metadata and errors answer as Esteira's front
does (:mod:`esteira.packaging.surface`'s documents and ``{"error": ...}``). The loop is uvloop's, a batch's
answers leave together, one write each (:mod:`model_handlers.coalesced`), and torch gets one intra-op thread fewer
than the CPUs (:mod:`model_handlers.threads`).

Batching: ``ESTEIRA_BATCH_SIZE`` (else the archive's ``batchSize``) caps a batch; ``ESTEIRA_MAX_BATCH_DELAY_MS``
is accepted and not needed: a batch is whatever queued while the previous one ran, so nobody waits for company.
``ESTEIRA_IDLE_POLL_US`` (0-1000; unset or 0: off) lets the event loop poll up to that long after a lone request,
for lone callers' latency at the cost of CPU (:mod:`model_handlers.batcher`). ``ESTEIRA_WORKERS`` (1-64 or ``auto``,
default 1) runs that many server processes on the one port, each with the model, so the server uses more than one CPU
(:mod:`model_handlers.workers`). ``--unix-socket`` adds a listener on a Unix socket only the server's user may
connect to: ``esteira up``'s router sends inference there, a hop on one machine without TCP's work.

A batch that runs past the model's ``responseTimeout`` (the packaged ``config.properties``' key, which TorchServe
reads too) ends the process, so it restarts (:mod:`model_handlers.watchdog`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.exposition import choose_encoder
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from esteira.packaging.entrypoint import BatchSettings, batch_settings_from_env, idle_poll_from_env
from esteira.packaging.surface import model_metadata, server_metadata
from esteira.vocabulary import series_label
from model_handlers.batcher import AdaptiveBatcher
from model_handlers.coalesced import TurnHold, holding_protocol
from model_handlers.inference_asgi import ASGIApp, InferenceRoutes
from model_handlers.messages import Answer, RawRequest, answered_too_late, caller_left
from model_handlers.metrics import (
    ABANDONED_REQUESTS,
    ABANDONED_REQUESTS_HELP,
    SERVER_DURATION_BUCKETS,
    SERVER_REQUEST_DURATION,
    SERVER_REQUEST_DURATION_HELP,
)
from model_handlers.watchdog import Watchdog
from model_handlers.workers import (
    ENV_METRICS_DIR,
    Supervisor,
    exposed_registry,
    inherited_unix_listener,
    is_worker,
    tcp_listener,
    unix_listener,
    worker_command,
    workers_from_env,
)

if TYPE_CHECKING:  # the handler brings torch: a supervisor of workers never loads it
    from model_handlers.inprocess import InProcessHandler

DEFAULT_MODEL_DIR = "/mnt/models"
DEFAULT_WORK_DIR = "/tmp/esteira"
REQUEST_LOGGERS = ("kserve.trace", "uvicorn.access")
LOG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
IDLE_POLL_METRIC = "esteira_idle_poll_seconds"  # exported with _total, as a counter
IDLE_POLL_HELP = "Time esteira-kserve's event loop spent polling after lone requests"


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class EsteiraService:
    """The routes of one served model, in front of its batcher."""

    def __init__(
        self,
        handler: InProcessHandler,
        batch_size: int,
        idle_poll: float = 0.0,
        exposed: CollectorRegistry = REGISTRY,
    ) -> None:
        self.handler = handler
        self.name = handler.packaged.name
        self.version = handler.packaged.version
        self.config = handler.handler.config
        self.exposed = exposed
        # The CPU the idle poll costs (0 while it is off); a counter, so workers' polls add up.
        polled = Counter(IDLE_POLL_METRIC, IDLE_POLL_HELP, ["ModelName"]).labels(self.name)
        identity = handler.handler.identity  # each request's time here, labelled as the handler's series
        durations = Histogram(
            SERVER_REQUEST_DURATION,
            SERVER_REQUEST_DURATION_HELP,
            ["ModelName", "Revision"],
            buckets=SERVER_DURATION_BUCKETS,
        )
        revision = (series_label(identity.name), series_label(identity.revision))
        self.observe_duration = durations.labels(*revision).observe
        abandoned = Counter(ABANDONED_REQUESTS, ABANDONED_REQUESTS_HELP, ["ModelName", "Revision"])
        self.count_abandoned = abandoned.labels(*revision).inc
        self.answers = TurnHold()  # a batch's answers leave together (model_handlers.coalesced)
        self.batcher: AdaptiveBatcher[RawRequest, Answer] = AdaptiveBatcher(
            handler.run,
            batch_size,
            idle_poll=idle_poll,
            polled=polled.inc,
            answered=self.answers.until_turn_ends,
            left=caller_left,
            late=answered_too_late,
        )

    def routes(self) -> list[Route]:
        by_version = "/v2/models/{model}/versions/{version}"
        return [
            Route("/", self.root, methods=["GET"]),
            Route("/v1/models", self.v1_models, methods=["GET"]),
            Route("/v1/models/{model}", self.readiness, methods=["GET"]),
            Route("/v2", self.v2_server, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2/models/{model}/ready", self.readiness, methods=["GET"]),
            Route(f"{by_version}/ready", self.readiness, methods=["GET"]),
            Route("/v2/models/{model}", self.v2_model, methods=["GET"]),
            Route(by_version, self.v2_model, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    def _check(self, request: Request) -> None:
        name = request.path_params["model"]
        if name != self.name:
            raise HTTPException(404, f"model {name!r} is not served here (only {self.name!r})")
        version = request.path_params.get("version")
        if version is not None and version != self.version:
            raise HTTPException(404, f"model {name!r} has no version {version!r} (serving: {self.version})")

    async def root(self, _: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def v1_models(self, _: Request) -> Response:
        return JSONResponse({"models": [self.name]})

    async def readiness(self, request: Request) -> Response:
        self._check(request)
        return JSONResponse({"name": self.name, "ready": True})

    async def v2_server(self, _: Request) -> Response:
        return JSONResponse(server_metadata())

    async def live(self, _: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, _: Request) -> Response:
        return JSONResponse({"ready": True})

    async def v2_model(self, request: Request) -> Response:
        self._check(request)
        return JSONResponse(model_metadata(self.name, [self.version], self.config))

    async def metrics(self, request: Request) -> Response:
        """Prometheus's view: with workers, every worker's series added up, whichever worker is asked."""
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(self.exposed), headers={"Content-Type": content_type})

    def front(self, application: ASGIApp) -> InferenceRoutes:
        """Inference ahead of ``application`` (KServe's), which keeps every other route."""
        return InferenceRoutes(
            application,
            self.batcher,
            self.name,
            self.version,
            self.config.max_body_bytes,
            self.handler.refused,
            self.observe_duration,
            self.count_abandoned,
        )


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (and the routes' HTTPExceptions) as ``{"error": ...}`` naming what was wrong."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return error(405, f"{request.method} is not allowed on {request.url.path}; use {allowed}")
    if exc.status_code == 404 and exc.detail in ("", "Not Found"):
        return error(404, f"no such endpoint: {request.method} {request.url.path}")
    return error(exc.status_code, str(exc.detail))


def model_server_through(
    host: str,
    application: ASGIApp,
    front: Callable[[ASGIApp], ASGIApp],
    answers: TurnHold,
    forwarded_for_inference: bool = False,
    shared_port: bool = False,
    unix: socket.socket | None = None,
) -> type[Any]:
    """``kserve.ModelServer`` whose REST server listens on ``host`` (KServe always binds every interface), and on
    the Unix socket ``unix`` too when given, and hands uvicorn ``front(application)`` (``application`` is KServe's);
    its connections keep a batch's answers while ``answers`` is held. A worker (``shared_port``) listens on a port
    the other workers share.

    uvicorn's proxy-headers middleware (the forwarded client and scheme in place of the proxy's) stays in front of
    KServe's application, whose redirects name the scheme; inference skips it, since nothing there reads either,
    unless ``forwarded_for_inference`` (the access log names the client): it cost 2-4 % of the server's requests.

    Its ``stop`` also stops the REST server: KServe's signal handler, which stands until uvicorn installs its own
    as it starts serving, stops only KServe's other servers, so a SIGTERM in between was lost and the server
    served on until killed (a supervisor stopping a worker that was still starting hit it); one that comes before
    the event loop runs, where KServe's handler failed for want of a loop, leaves uvicorn to start and stop."""
    from kserve import model_server
    from kserve.protocol.rest.server import RESTServer
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    class EsteiraRESTServer(RESTServer):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            config = self.config  # read when uvicorn starts, after this
            config.host = host
            config.http = holding_protocol(answers)
            if forwarded_for_inference:
                config.app = front(application)
            else:
                config.proxy_headers = False
                config.app = front(ProxyHeadersMiddleware(application, trusted_hosts=config.forwarded_allow_ips))

        async def start(self) -> None:
            if not shared_port and unix is None:
                await super().start()
                return
            self.create_application()
            listeners = [tcp_listener(host, self.config.port, shared=shared_port)]
            await self._server.serve(sockets=listeners + ([unix] if unix is not None else []))

        def stop_serving(self) -> None:
            """uvicorn shuts down at its next check, or skips serving when it has not begun."""
            self._server.should_exit = True

    class EsteiraModelServer(model_server.ModelServer):  # type: ignore[misc]
        def stop(self, sig: int) -> None:
            rest = self._rest_server
            if isinstance(rest, EsteiraRESTServer):
                rest.stop_serving()
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # the loop has yet to start: uvicorn, told to exit, will start and stop at once
                return
            super().stop(sig)  # KServe's shutdown runs as a task on the loop

    model_server.RESTServer = EsteiraRESTServer
    return EsteiraModelServer


def use_uvloop() -> None:
    """uvloop under KServe's ``asyncio.run`` (KServe's uvicorn only picks its loop when uvicorn runs the loop itself);
    KServe also asks for the current loop before it starts, so there must be one."""
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esteira-kserve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get("ESTEIRA_MODEL_DIR", DEFAULT_MODEL_DIR)))
    parser.add_argument("--work-dir", type=Path, default=Path(os.environ.get("ESTEIRA_RUNTIME_DIR", DEFAULT_WORK_DIR)))
    parser.add_argument(
        "--host", default="0.0.0.0", help="address to listen on: every interface in a pod, 127.0.0.1 in esteira up"
    )
    parser.add_argument("--http-port", type=int, default=int(os.environ.get("ESTEIRA_HTTP_PORT", "8080")))
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="also serve Prometheus metrics on this port (the runtime's 8082, as TorchServe); 0: only on /metrics",
    )
    parser.add_argument(
        "--unix-socket",
        type=Path,
        help="also listen on this Unix socket, which only this user may connect to (esteira up's router reaches "
        "its revisions there: on one machine a hop without TCP)",
    )
    parser.add_argument(
        "--log-requests", action="store_true", help="keep KServe's per-request access and timing log lines"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    sys.argv = sys.argv[:1]  # kserve.model_server parses the command line when imported
    try:
        settings, idle_poll = batch_settings_from_env(os.environ), idle_poll_from_env(os.environ)
        workers = workers_from_env(os.environ)
    except ValueError as error:
        raise SystemExit(f"esteira-kserve: {error}") from None
    args.work_dir.mkdir(parents=True, exist_ok=True)
    worker = is_worker(os.environ)
    unix = inherited_unix_listener(os.environ) if worker else bind_unix_socket(args.unix_socket)
    try:
        if workers > 1 and not worker:
            supervise(args, argv, workers, unix)
        serve(args, settings, idle_poll, unix)
    finally:
        if unix is not None and not worker:
            with contextlib.suppress(FileNotFoundError):
                args.unix_socket.unlink()


def bind_unix_socket(path: Path | None) -> socket.socket | None:
    """The ``--unix-socket`` listener, bound before anything loads; SystemExit names the path and what is wrong."""
    if path is None:
        return None
    try:
        return unix_listener(path)
    except (OSError, ValueError) as error:
        raise SystemExit(f"esteira-kserve: --unix-socket {path}: {error}") from None


def supervise(args: argparse.Namespace, argv: Sequence[str], workers: int, unix: socket.socket | None) -> NoReturn:
    """Run ``workers`` copies of this server, each accepting on ``unix`` too, and serve their metrics, added up, on
    the metrics port; exit with the supervisor's status."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    metrics_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=args.work_dir))
    try:
        if args.metrics_port:
            start_http_server(args.metrics_port, addr=args.host, registry=exposed_registry(str(metrics_dir)))
        status = Supervisor(worker_command(argv), workers, os.environ, metrics_dir, unix).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    raise SystemExit(status)


def serve(args: argparse.Namespace, settings: BatchSettings, idle_poll: float, unix: socket.socket | None) -> None:
    """One server process: the model loaded, its routes in front of KServe's server."""
    import kserve
    from kserve.model_server import app

    from model_handlers.inprocess import InProcessHandler, PrometheusMetrics

    # KServe's loggers keep to their own handlers; the handler's (its load, what optimize decided) go to the root.
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    metrics = PrometheusMetrics()
    exposed = exposed_registry(os.environ.get(ENV_METRICS_DIR), metrics.flusher())
    handler = InProcessHandler(args.model_dir, Path(tempfile.mkdtemp(dir=args.work_dir)), metrics)
    service = EsteiraService(handler, settings.batch_size or handler.packaged.batch_size, idle_poll, exposed=exposed)
    Watchdog(service.batcher, handler.packaged.response_timeout, handler.flush_log).start()
    app.router.routes[:0] = service.routes()
    app.add_exception_handler(HTTPException, http_error)

    class ServedModel(kserve.Model):  # type: ignore[misc]
        """KServe's record of the model (health, repository); inference never reaches its ``predict``."""

        def load(self) -> bool:
            self.ready = True
            return True

    model = ServedModel(service.name)
    model.load()
    worker = is_worker(os.environ)
    if args.metrics_port and not worker:  # a supervisor serves the workers' metrics port
        start_http_server(args.metrics_port, addr=args.host)
    model_server = model_server_through(
        args.host,
        app,
        service.front,
        service.answers,
        forwarded_for_inference=args.log_requests,
        shared_port=worker,
        unix=unix,
    )
    use_uvloop()
    server = model_server(http_port=args.http_port, enable_grpc=False, workers=1)
    if not args.log_requests:
        quiet_request_logs()
    server.start([model])


def quiet_request_logs() -> None:
    """KServe logs two timing lines and an access line per request: a busy server drowns. And uvicorn works out
    each access line's arguments (the client, the quoted path) whenever its access logger has a handler, whatever
    the level: its own, or the root's, set up first, that it propagates to. So it has neither (with only its own
    handler gone, it went on working them out; ten alternating rounds at 1, 8 and 32 callers read the same rate
    either way, within the machine's spread)."""
    for name in REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False


if __name__ == "__main__":
    main()

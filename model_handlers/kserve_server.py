"""``esteira-kserve``: Esteira's handler served by KServe's own model server (``kserve.ModelServer``).

KServe's server brings the HTTP stack (uvicorn, Starlette), health, the model repository, its request metrics
and graceful shutdown. Inference does not go through KServe's data plane: its v1 path decodes the JSON and its
v2 path builds pydantic objects before a model sees a byte, and neither batches. Esteira's routes, put ahead of
KServe's, hand the body as it came to the adaptive batcher (:mod:`model_handlers.batcher`), which runs batches
through ``EsteiraHandler.handle`` in-process (:mod:`model_handlers.inprocess`): the same parsing, validation,
errors, metrics, drift counting and logging as under TorchServe. Metadata and errors answer as Esteira's front
does (:mod:`esteira.packaging.surface`'s documents and ``{"error": ...}``).

Batching: ``ESTEIRA_BATCH_SIZE`` (else the archive's ``batchSize``) caps a batch; ``ESTEIRA_MAX_BATCH_DELAY_MS``
is accepted and not needed: a batch is whatever queued while the previous one ran, so nobody waits for company.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from esteira.packaging.entrypoint import batch_settings_from_env
from esteira.packaging.surface import RESPONSE_HEADERS, model_metadata, server_metadata
from model_handlers.batcher import AdaptiveBatcher
from model_handlers.inprocess import Answer, InProcessHandler, PrometheusMetrics, RawRequest

DEFAULT_MODEL_DIR = "/mnt/models"
DEFAULT_WORK_DIR = "/tmp/esteira"
REQUEST_LOGGERS = ("kserve.trace", "uvicorn.access")
_RESPONSE_HEADERS = {key.lower(): key for key in RESPONSE_HEADERS}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class EsteiraService:
    """The routes of one served model, in front of its batcher."""

    def __init__(self, handler: InProcessHandler, batch_size: int) -> None:
        self.handler = handler
        self.name = handler.packaged.name
        self.version = handler.packaged.version
        self.config = handler.handler.config
        self.batcher: AdaptiveBatcher[RawRequest, Answer] = AdaptiveBatcher(handler.run, batch_size)

    def routes(self) -> list[Route]:
        by_version = "/v2/models/{model}/versions/{version}"
        return [
            Route("/", self.root, methods=["GET"]),
            Route("/v1/models", self.v1_models, methods=["GET"]),
            Route("/v1/models/{model}:predict", self.v1_predict, methods=["POST"]),
            Route("/v1/models/{model}", self.readiness, methods=["GET"]),
            Route("/v2", self.v2_server, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2/models/{model}/infer", self.v2_infer, methods=["POST"]),
            Route(f"{by_version}/infer", self.v2_infer, methods=["POST"]),
            Route("/v2/models/{model}/ready", self.readiness, methods=["GET"]),
            Route(f"{by_version}/ready", self.readiness, methods=["GET"]),
            Route("/v2/models/{model}", self.v2_model, methods=["GET"]),
            Route(by_version, self.v2_model, methods=["GET"]),
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
        if request.path_params["model"].endswith(":predict"):
            raise HTTPException(405, headers={"Allow": "POST"})
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

    async def v1_predict(self, request: Request) -> Response:
        self._check(request)
        return await self._infer(request)

    async def v2_infer(self, request: Request) -> Response:
        self._check(request)
        return await self._infer(request)

    async def _infer(self, request: Request) -> Response:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            async for _ in request.stream():  # read and drop it: a client still sending would see a reset
                pass
            return error(413, f"the request body of {declared} bytes exceeded the limit of {limit} bytes")
        body = await request.body()
        if len(body) > limit:
            return error(413, f"the request body of {len(body)} bytes exceeded the limit of {limit} bytes")
        answer = await self.batcher.submit(RawRequest(body, dict(request.headers)))
        headers = {
            _RESPONSE_HEADERS[key.lower()]: value
            for key, value in answer.headers.items()
            if key.lower() in _RESPONSE_HEADERS
        }
        return Response(answer.body, status_code=answer.status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (and the routes' HTTPExceptions) as ``{"error": ...}`` naming what was wrong."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return error(405, f"{request.method} is not allowed on {request.url.path}; use {allowed}")
    if exc.status_code == 404 and exc.detail in ("", "Not Found"):
        return error(404, f"no such endpoint: {request.method} {request.url.path}")
    return error(exc.status_code, str(exc.detail))


def listen_on(host: str) -> None:
    """Make the REST server ``kserve.ModelServer`` builds listen on ``host``: KServe always binds every interface."""
    from kserve import model_server
    from kserve.protocol.rest.server import RESTServer

    class BoundRESTServer(RESTServer):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = host  # read when uvicorn binds, after this

    model_server.RESTServer = BoundRESTServer


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
        "--log-requests", action="store_true", help="keep KServe's per-request access and timing log lines"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.argv = sys.argv[:1]  # kserve.model_server parses the command line when imported
    import kserve
    from kserve.model_server import app

    args.work_dir.mkdir(parents=True, exist_ok=True)
    handler = InProcessHandler(args.model_dir, Path(tempfile.mkdtemp(dir=args.work_dir)), PrometheusMetrics())
    batch_size = batch_settings_from_env(os.environ).batch_size or handler.packaged.batch_size
    service = EsteiraService(handler, batch_size)
    app.router.routes[:0] = service.routes()
    app.add_exception_handler(HTTPException, http_error)

    class ServedModel(kserve.Model):  # type: ignore[misc]
        """KServe's record of the model (health, repository); inference never reaches its ``predict``."""

        def load(self) -> bool:
            self.ready = True
            return True

    model = ServedModel(service.name)
    model.load()
    if args.metrics_port:
        start_http_server(args.metrics_port, addr=args.host)
    listen_on(args.host)
    server = kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1)
    if not args.log_requests:  # KServe logs two timing lines and an access line per request; a busy server drowns
        for name in REQUEST_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()

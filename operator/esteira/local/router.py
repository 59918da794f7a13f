"""The local router: one port in front of every revision's TorchServe, split by the rollout's weight.

It serves the inference routes a KServe predictor would (v1, v2, health), a `/metrics` endpoint with
per-revision counters, `GET /status` and `POST /control/<command>` for the CLI. Everything that decides
anything lives elsewhere: the split comes from `set_split`, control requests go to the runtime.
"""

from __future__ import annotations

import asyncio
import errno
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from esteira.local.routing import PIN_HEADER, NotServing, Split, choose, should_mirror
from esteira.local.stats import ArmStats, exposition

HOST = "127.0.0.1"
Control = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
StatusView = Callable[[], dict[str, Any]]
_FORWARDED = ("Content-Type", "Accept")


class PortInUse(OSError):
    """The router's port is taken; the message names it."""


class Router:
    """Routes inference requests to revisions' backends and keeps per-revision counters."""

    def __init__(self, model: str, port: int, rng: random.Random | None = None) -> None:
        self.model = model
        self.port = port
        self.rng = rng or random.Random()
        self.split: Split | None = None
        self.mirror = False
        self.backends: dict[int, str | None] = {}
        self.stats: dict[int, ArmStats] = {}
        self.control: Control | None = None
        self.status_view: StatusView | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._mirrors: set[asyncio.Task[None]] = set()

    # --- what the runtime sets ---------------------------------------------------------------------------

    def set_split(self, split: Split | None, mirror: bool) -> None:
        self.split, self.mirror = split, mirror
        for revision in split.revisions if split else ():
            self.stats.setdefault(revision, ArmStats())

    def set_backend(self, revision: int, url: str | None) -> None:
        self.backends[revision] = url

    def arm(self, revision: int) -> ArmStats:
        return self.stats.setdefault(revision, ArmStats())

    # --- lifecycle ---------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/models/{model}:predict", self._v1)
        app.router.add_post("/v2/models/{model}/infer", self._v2)
        app.router.add_get("/v1/models/{model}", self._model_ready)
        app.router.add_get("/v2/health/ready", self._ready)
        app.router.add_get("/v2/health/live", self._live)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        app.router.add_post("/control/{command}", self._control)
        return app

    async def start(self) -> None:
        """Listen on 127.0.0.1:port, or raise PortInUse naming the port."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=15.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, HOST, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            await self._session.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    errno.EADDRINUSE,
                    f"port {self.port} on {HOST} is already in use: stop whatever listens there or pick another "
                    "with --port",
                ) from None
            raise
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening, let in-flight requests (and mirror copies) finish, then close."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._mirrors:
            await asyncio.wait(self._mirrors, timeout=10)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- inference ---------------------------------------------------------------------------------------

    async def _v1(self, request: web.Request) -> web.StreamResponse:
        return await self._route(request, f"/v1/models/{self.model}:predict")

    async def _v2(self, request: web.Request) -> web.StreamResponse:
        return await self._route(request, f"/v2/models/{self.model}/infer")

    async def _route(self, request: web.Request, path: str) -> web.StreamResponse:
        if request.match_info["model"] != self.model:
            return _error(404, f"model {request.match_info['model']!r} is not served here (only {self.model!r})")
        split = self.split
        if split is None:
            return _error(503, "no revision is serving yet")
        try:
            revision = choose(split, self.rng.random(), request.headers.get(PIN_HEADER))
        except NotServing as exc:
            return _error(404, str(exc))
        body = await request.read()
        headers = {k: request.headers[k] for k in _FORWARDED if k in request.headers}
        if should_mirror(split, revision, self.mirror) and split.canary is not None:
            task = asyncio.create_task(self._send(split.canary, path, body, headers, mirrored=True))
            self._mirrors.add(task)
            task.add_done_callback(self._mirrors.discard)
        status, payload, content_type = await self._forward(revision, path, body, headers)
        response = web.Response(status=status, body=payload, content_type=content_type)
        response.headers[PIN_HEADER] = str(revision)
        return response

    async def _send(self, revision: int, path: str, body: bytes, headers: dict[str, str], mirrored: bool) -> None:
        await self._forward(revision, path, body, headers, mirrored)

    async def _forward(
        self, revision: int, path: str, body: bytes, headers: dict[str, str], mirrored: bool = False
    ) -> tuple[int, bytes, str]:
        """One request to a revision's TorchServe; a failure to reach it is a server error of that revision."""
        base = self.backends.get(revision)
        started = time.perf_counter()
        if base is None or self._session is None:
            status, payload = 503, json.dumps({"error": f"revision {revision} is not ready"}).encode()
            content_type = "application/json"
        else:
            try:
                async with self._session.post(base + path, data=body, headers=headers) as answer:
                    status, payload = answer.status, await answer.read()
                    content_type = answer.content_type or "application/json"
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, content_type = 502, "application/json"
                payload = json.dumps({"error": f"revision {revision}: {type(exc).__name__}: {exc}"}).encode()
        self.arm(revision).observe(status, time.perf_counter() - started, mirrored)
        return status, payload, content_type

    # --- health, metrics, status, control ----------------------------------------------------------------

    async def _ready(self, _: web.Request) -> web.Response:
        ready = self.split is not None and self.backends.get(self.split.stable) is not None
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _live(self, _: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def _model_ready(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != self.model:
            return _error(404, f"model {request.match_info['model']!r} is not served here")
        ready = self.split is not None and self.backends.get(self.split.stable) is not None
        return web.json_response({"name": self.model, "ready": ready})

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(text=exposition(self.model, self.stats), content_type="text/plain")

    async def _status(self, _: web.Request) -> web.Response:
        return web.json_response(self.status_view() if self.status_view else {})

    async def _control(self, request: web.Request) -> web.Response:
        if self.control is None:
            return _error(503, "no runtime attached")
        try:
            args = await request.json() if request.can_read_body else {}
        except ValueError:
            return _error(400, "body must be JSON")
        try:
            result = await self.control(request.match_info["command"], dict(args or {}))
        except ValueError as exc:
            return _error(400, str(exc))
        return web.json_response(result)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)

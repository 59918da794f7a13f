"""The KServe v1 and Open Inference Protocol v2 REST surface of one served model, in aiohttp.

TorchServe 0.12 in OIP mode answers only part of it on its own: ``/v2`` with its own name and a misspelled
extension list, ``/v2/health/ready`` true even before a model loads, ``/v2/models/<m>`` and its ``/ready`` as
404, every ``/versions/<v>`` form as 501, ``GET /v1/models`` not at all, and its errors as
``{"code", "type", "message"}``. So both places that face clients, the model server's front in a pod and the
local router of ``esteira up``, register these routes and implement :class:`ModelSurface` underneath: the
front forwards to one TorchServe, the router to the revision the traffic split picks. Metadata comes from the
model's own ``esteira-model.json`` inside its archive (:func:`served_model`).

Every 4xx and 5xx answer is ``{"error": "..."}``, including the router's own 404/405/413 and a backend's errors.
"""

from __future__ import annotations

import abc
import json
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from esteira import __version__
from esteira.packaging.config import CONFIG_PATH, MODEL_STORE, parse_properties
from esteira.vocabulary import REQUEST_ID_HEADER
from model_handlers.config import CONFIG_FILE, ModelConfig, parse_config
from model_handlers.protocol import BINARY_HEADER

Protocol = Literal["v1", "v2"]
SERVER_NAME = "esteira"
EXTENSIONS = ("binary_tensor_data",)
# What travels between a client and a model server, both ways; everything else stays on its hop.
# The caller's request id reaches the model: inference records are keyed on it, and labels are sent for it.
REQUEST_HEADERS = ("Content-Type", "Accept", BINARY_HEADER, REQUEST_ID_HEADER)
RESPONSE_HEADERS = ("Content-Type", BINARY_HEADER)
_RESPONSE_HEADER_NAMES = tuple((key, key.lower()) for key in RESPONSE_HEADERS)
_MODEL = "{model:[^/:]+}"


class ArchiveError(ValueError):
    """The packaged folder does not describe a servable model; the message says what is missing."""


@dataclass(frozen=True)
class ServedModel:
    """The model one packaged folder serves: its URL name, its archive's version and its config."""

    name: str
    version: str
    config: ModelConfig


def served_model(model_dir: Path) -> ServedModel:
    """Read ``config/config.properties`` (the first model of its snapshot) and that archive's config file."""
    properties = parse_properties((model_dir / CONFIG_PATH).read_text())
    try:
        models = json.loads(properties.get("model_snapshot") or "{}").get("models") or {}
    except (ValueError, AttributeError):
        raise ArchiveError(f"{model_dir / CONFIG_PATH}: model_snapshot is not a JSON object") from None
    if not models:
        raise ArchiveError(f"{model_dir / CONFIG_PATH}: model_snapshot lists no models")
    name, versions = next(iter(models.items()))
    version, entry = next(iter(versions.items()))
    archive = model_dir / MODEL_STORE / str(entry.get("marName", f"{name}.mar"))
    return ServedModel(str(name), str(version), parse_config(_archive_config(archive), f"{archive}:{CONFIG_FILE}"))


def _archive_config(archive: Path) -> Any:
    try:
        if archive.is_dir():  # an unpacked (no-archive) model
            return json.loads((archive / CONFIG_FILE).read_text())
        with zipfile.ZipFile(archive) as mar:
            return json.loads(mar.read(CONFIG_FILE))
    except KeyError:
        raise ArchiveError(f"{archive}: no {CONFIG_FILE} inside") from None
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ArchiveError(f"{archive}: cannot read {CONFIG_FILE}: {exc}") from None


# --- documents ---------------------------------------------------------------------------------------


def server_metadata() -> dict[str, Any]:
    """``GET /v2``."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def model_metadata(name: str, versions: Sequence[str], config: ModelConfig) -> dict[str, Any]:
    """``GET /v2/models/<m>``: inputs and outputs as the handler reads and answers them."""
    return {
        "name": name,
        "versions": list(versions),
        "platform": "pytorch",
        "inputs": [config.input_tensor().to_json()],
        "outputs": [tensor.to_json() for tensor in config.output_tensors()],
    }


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def error_message(status: int, body: bytes, reason: str) -> str:
    """What a backend's error body says: its ``error``, TorchServe's ``message``, its text, or the reason."""
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, Mapping):
        for key in ("error", "message"):
            if isinstance(decoded.get(key), str) and decoded[key]:
                return str(decoded[key])
    text = body.decode("utf-8", "replace").strip()
    return text[:500] if text and decoded is None else (reason or f"HTTP {status}")


def relay(status: int, body: bytes, headers: Mapping[str, str], reason: str = "") -> web.Response:
    """A backend's answer as the caller gets it: protocol headers kept, an error made ``{"error": ...}``.

    ``headers`` has lower-case names, as :class:`esteira.packaging.upstream.Reply` gives them.
    """
    if status >= 400:
        return error_response(status, error_message(status, body, reason))
    response = web.Response(status=status, body=body)
    for key, name in _RESPONSE_HEADER_NAMES:
        if name in headers:
            response.headers[key] = headers[name]
    return response


def forwarded_headers(request: web.Request) -> dict[str, str]:
    return {key: request.headers[key] for key in REQUEST_HEADERS if key in request.headers}


# --- the surface -------------------------------------------------------------------------------------


class ModelSurface(abc.ABC):
    """One model as clients see it: what is served, whether it is ready, and how inference reaches it."""

    name: str

    @abc.abstractmethod
    def versions(self) -> Sequence[str]:
        """Versions served now, the default first (empty while nothing serves)."""

    @abc.abstractmethod
    def config(self, version: str | None) -> ModelConfig | None:
        """The config of that version (None: the default one); None when it is not known."""

    @abc.abstractmethod
    async def unready(self, version: str | None) -> str | None:
        """Why that version (None: any) cannot answer now, or None when it can."""

    @abc.abstractmethod
    async def infer(self, request: web.Request, protocol: Protocol, version: str | None) -> web.StreamResponse:
        """Send a v1 predict or v2 infer request on; ``version`` is checked to be served."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_protocol_routes(app: web.Application, surface: ModelSurface) -> None:
    """Register v1 and v2 routes for ``surface`` and turn every error into ``{"error": ...}``."""
    routes = _Routes(surface)
    app.middlewares.append(json_errors)
    app.router.add_get("/", routes.root)
    app.router.add_get("/v1/models", routes.v1_models)
    app.router.add_get(f"/v1/models/{_MODEL}", routes.v1_model)
    app.router.add_post("/v1/models/{model}:predict", routes.v1_predict)
    app.router.add_get("/v2", routes.v2_server)
    app.router.add_get("/v2/health/live", routes.v2_live)
    app.router.add_get("/v2/health/ready", routes.v2_ready)
    for prefix in (f"/v2/models/{_MODEL}", f"/v2/models/{_MODEL}/versions/{{version}}"):
        app.router.add_get(prefix, routes.v2_model)
        app.router.add_get(prefix + "/ready", routes.v2_model_ready)
        app.router.add_post(prefix + "/infer", routes.v2_infer)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own 404, 405 and 413 (and any other HTTP error raised) as JSON naming what was wrong."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(exc.allowed_methods))
            message = f"{request.method} is not allowed on {request.path}; use {allowed}"
        elif isinstance(exc, web.HTTPNotFound) and exc.text in ("", "404: Not Found"):
            message = f"no such endpoint: {request.method} {request.path}"
        else:
            message = exc.text or exc.reason
        return error_response(exc.status, message)


class _Routes:
    def __init__(self, surface: ModelSurface) -> None:
        self.surface = surface

    def _version(self, request: web.Request) -> str | None:
        """The version in the path after checking model and version are served; HTTPNotFound otherwise."""
        name = request.match_info["model"]
        if name != self.surface.name:
            raise web.HTTPNotFound(text=f"model {name!r} is not served here (only {self.surface.name!r})")
        version = request.match_info.get("version")
        if version is None:  # no version in the path: whichever is served answers
            return None
        served = list(self.surface.versions())
        if version not in served:
            raise web.HTTPNotFound(
                text=f"model {name!r} has no version {version!r} (serving: {', '.join(served) or 'none'})"
            )
        return version

    async def root(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def v1_models(self, _: web.Request) -> web.Response:
        return web.json_response({"models": [self.surface.name]})

    async def v1_model(self, request: web.Request) -> web.Response:
        self._version(request)
        return await self._readiness(None)

    async def v1_predict(self, request: web.Request) -> web.StreamResponse:
        self._version(request)
        return await self.surface.infer(request, "v1", None)

    async def v2_server(self, _: web.Request) -> web.Response:
        return web.json_response(server_metadata())

    async def v2_live(self, _: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def v2_ready(self, _: web.Request) -> web.Response:
        reason = await self.surface.unready(None)
        return web.json_response({"ready": True}) if reason is None else error_response(503, reason)

    async def v2_model(self, request: web.Request) -> web.Response:
        version = self._version(request)
        config = self.surface.config(version)
        if config is None:
            return error_response(503, f"the metadata of model {self.surface.name!r} is not known yet")
        versions = [version] if version else self.surface.versions()
        return web.json_response(model_metadata(self.surface.name, versions, config))

    async def v2_model_ready(self, request: web.Request) -> web.Response:
        return await self._readiness(self._version(request))

    async def v2_infer(self, request: web.Request) -> web.StreamResponse:
        version = self._version(request)
        return await self.surface.infer(request, "v2", version)

    async def _readiness(self, version: str | None) -> web.Response:
        reason = await self.surface.unready(version)
        if reason is not None:
            return error_response(503, reason)
        return web.json_response({"name": self.surface.name, "ready": True})

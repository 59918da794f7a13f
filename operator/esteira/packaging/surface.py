"""The KServe v1 and Open Inference Protocol v2 REST surface of one served model, on :mod:`esteira.packaging.httpserver`.

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
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from esteira import __version__
from esteira.packaging.config import CONFIG_PATH, MODEL_STORE, parse_properties
from esteira.packaging.httpserver import HttpError, Request, Response, Routes, error_response, json_response
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
_REQUEST_HEADER_NAMES = tuple((key, key.lower()) for key in REQUEST_HEADERS)
_RESPONSE_HEADER_NAMES = tuple((key, key.lower()) for key in RESPONSE_HEADERS)
_MODEL = "{model:[^/:]+}"
# The inference paths, v1 predict and v2 infer (of a version too): (model, version or None) in named groups.
INFERENCE_PATH = re.compile(
    r"^/v1/models/(?P<v1>[^/:]+):predict$|^/v2/models/(?P<v2>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer$"
)


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


def relay(status: int, body: bytes, headers: Mapping[str, str], reason: str = "") -> Response:
    """A backend's answer as the caller gets it: protocol headers kept, an error made ``{"error": ...}`` (with
    the backend's ``Retry-After``, where a refusal says when to come back).

    ``headers`` has lower-case names, as :class:`esteira.packaging.upstream.Reply` gives them.
    """
    if status >= 400:
        refused = error_response(status, error_message(status, body, reason))
        if "retry-after" in headers:
            refused.headers = {**refused.headers, "Retry-After": headers["retry-after"]}
        return refused
    return Response(status, body, {key: headers[name] for key, name in _RESPONSE_HEADER_NAMES if name in headers})


def forwarded_headers(request: Request) -> dict[str, str]:
    headers = request.headers
    return {key: headers[name] for key, name in _REQUEST_HEADER_NAMES if name in headers}


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
    async def infer(self, request: Request, protocol: Protocol, version: str | None) -> Response:
        """Send a v1 predict or v2 infer request on; ``version`` is checked to be served."""


def runs_the_model(request: Request) -> bool:
    """Whether ``request`` is inference, whose answer is worth nothing once its caller has gone."""
    return request.method == "POST" and INFERENCE_PATH.match(request.path) is not None


def protocol_routes(surface: ModelSurface) -> Routes:
    """The v1 and v2 routes of ``surface``; every error is ``{"error": ...}``."""
    routes, handlers = Routes(), _Routes(surface)
    routes.add("GET", "/", handlers.root)
    routes.add("GET", "/v1/models", handlers.v1_models)
    routes.add("GET", f"/v1/models/{_MODEL}", handlers.v1_model)
    routes.add("POST", "/v1/models/{model}:predict", handlers.v1_predict)
    routes.add("GET", "/v2", handlers.v2_server)
    routes.add("GET", "/v2/health/live", handlers.v2_live)
    routes.add("GET", "/v2/health/ready", handlers.v2_ready)
    for prefix in (f"/v2/models/{_MODEL}", f"/v2/models/{_MODEL}/versions/{{version}}"):
        routes.add("GET", prefix, handlers.v2_model)
        routes.add("GET", prefix + "/ready", handlers.v2_model_ready)
        routes.add("POST", prefix + "/infer", handlers.v2_infer)
    return routes


class _Routes:
    def __init__(self, surface: ModelSurface) -> None:
        self.surface = surface

    def _version(self, request: Request) -> str | None:
        """The version in the path after checking model and version are served; a 404 otherwise."""
        name = request.params["model"]
        if name != self.surface.name:
            raise HttpError(404, f"model {name!r} is not served here (only {self.surface.name!r})")
        version = request.params.get("version")
        if version is None:  # no version in the path: whichever is served answers
            return None
        served = list(self.surface.versions())
        if version not in served:
            raise HttpError(404, f"model {name!r} has no version {version!r} (serving: {', '.join(served) or 'none'})")
        return version

    async def root(self, _: Request) -> Response:
        return json_response({"status": "alive"})

    async def v1_models(self, _: Request) -> Response:
        return json_response({"models": [self.surface.name]})

    async def v1_model(self, request: Request) -> Response:
        self._version(request)
        return await self._readiness(None)

    async def v1_predict(self, request: Request) -> Response:
        self._version(request)
        return await self.surface.infer(request, "v1", None)

    async def v2_server(self, _: Request) -> Response:
        return json_response(server_metadata())

    async def v2_live(self, _: Request) -> Response:
        return json_response({"live": True})

    async def v2_ready(self, _: Request) -> Response:
        reason = await self.surface.unready(None)
        return json_response({"ready": True}) if reason is None else error_response(503, reason)

    async def v2_model(self, request: Request) -> Response:
        version = self._version(request)
        config = self.surface.config(version)
        if config is None:
            return error_response(503, f"the metadata of model {self.surface.name!r} is not known yet")
        versions = [version] if version else self.surface.versions()
        return json_response(model_metadata(self.surface.name, versions, config))

    async def v2_model_ready(self, request: Request) -> Response:
        return await self._readiness(self._version(request))

    async def v2_infer(self, request: Request) -> Response:
        version = self._version(request)
        return await self.surface.infer(request, "v2", version)

    async def _readiness(self, version: str | None) -> Response:
        reason = await self.surface.unready(version)
        if reason is not None:
            return error_response(503, reason)
        return json_response({"name": self.surface.name, "ready": True})

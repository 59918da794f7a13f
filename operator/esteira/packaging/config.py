"""Pure builders for what KServe's TorchServe layout needs: ``config/config.properties`` and the archive's
model-config YAML, plus a reader and an in-place editor for Java properties text.

A ``storageUri`` for TorchServe holds ``config/config.properties`` and ``model-store/<name>.mar``; KServe
mounts it at ``/mnt/models``. The model name in inference URLs is the key under ``model_snapshot.models``.
TorchServe reads the snapshot's workers and batching at start-up, ahead of the archive's model-config YAML,
so both carry the same values: the YAML only matters when the archive is registered some other way.

Token authorization is off (``disable_token_authorization=true``) because KServe's wrapper, its ingress and
Knative's queue-proxy send no TorchServe token, and a key file written inside the pod could not be handed to
them anyway. That is acceptable because only the inference API (predictions, health) and the read-only
metrics API listen beyond the pod: the management API is bound to 127.0.0.1, so only processes sharing the
pod's network namespace reach it, and the model-registration API stays disabled (``enable_model_api=false``),
so not even they can make TorchServe fetch and run a new archive. Authentication of inference callers belongs
at KServe's ingress or the service mesh, as for every other KServe runtime.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

DEFAULT_MODEL_DIR = "/mnt/models"
CONFIG_PATH = "config/config.properties"
METRICS_CONFIG_PATH = "config/metrics.yaml"
MODEL_STORE = "model-store"
# Requests that may wait for a model in TorchServe (its default): more are refused with a 503.
JOB_QUEUE_SIZE = 100
# Seconds a batch may take before the model's process is ended and restarted (TorchServe's default, read by both).
RESPONSE_TIMEOUT_SECONDS = 120
MAX_MESSAGE_BYTES = 6_553_500  # TorchServe's default max_request_size and max_response_size

# A model name is a ModelDeployment's spec.model.name, a DNS label: a name torch-model-archiver takes (capitals,
# '_', '.') packaged a model no ModelDeployment could serve. A version follows torch-model-archiver's rule, 63
# characters at most as spec.model.version. Both end up in URLs, in file names and inside the snapshot JSON, so
# nothing else is let through (no '/', ':', quotes or backslashes).
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
MAX_NAME = 63
_ADDRESS = re.compile(r"https?://[^\s/]+:\d+")


@dataclass(frozen=True)
class ModelSpec:
    """One model as TorchServe serves it: name, version, workers and server-side batching."""

    name: str
    version: str
    batch_size: int = 1
    max_batch_delay_ms: int = 10
    min_workers: int = 1
    max_workers: int = 1
    response_timeout_s: int = RESPONSE_TIMEOUT_SECONDS
    startup_timeout_s: int = 120
    device_type: Literal["cpu", "gpu"] | None = None

    def __post_init__(self) -> None:
        problems = []
        if len(self.name) > MAX_NAME or not _NAME.fullmatch(self.name):
            problems.append(
                f"name {self.name!r}: a ModelDeployment's spec.model.name, so lower-case letters, digits and '-', "
                f"{MAX_NAME} at most, a letter or digit at each end"
            )
        if len(self.version) > MAX_NAME or not _VERSION.fullmatch(self.version):
            problems.append(
                f"version {self.version!r}: use letters, digits, '.', '_' or '-' ({MAX_NAME} at most, alnum first)"
            )
        if not 1 <= self.batch_size <= 1024:
            problems.append(f"batch_size {self.batch_size}: must be 1 to 1024")
        if not 0 <= self.max_batch_delay_ms <= 60_000:
            problems.append(f"max_batch_delay_ms {self.max_batch_delay_ms}: must be 0 to 60000")
        if not 1 <= self.min_workers <= self.max_workers:
            problems.append(f"workers {self.min_workers}..{self.max_workers}: need 1 <= min_workers <= max_workers")
        for label, seconds in (
            ("response_timeout_s", self.response_timeout_s),
            ("startup_timeout_s", self.startup_timeout_s),
        ):
            if seconds < 1:
                problems.append(f"{label} {seconds}: must be at least 1")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def mar_name(self) -> str:
        return f"{self.name}.mar"


@dataclass(frozen=True)
class ServerSpec:
    """Where TorchServe listens and finds its files inside the model server container.

    The inference port defaults to 8085 because KServe's stock TorchServe image runs its wrapper on 8080 and
    forwards there; in Esteira's runtime ``TS_INFERENCE_ADDRESS`` names 8080, where the entrypoint's front
    listens, and TorchServe itself moves to a loopback port behind it.
    """

    model_dir: str = DEFAULT_MODEL_DIR
    inference_address: str = "http://0.0.0.0:8085"
    management_address: str = "http://127.0.0.1:8081"
    metrics_address: str = "http://0.0.0.0:8082"
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    metrics_config: str | None = METRICS_CONFIG_PATH  # relative to model_dir; None: TorchServe's default
    netty_threads: int = 4
    job_queue_size: int = JOB_QUEUE_SIZE

    def __post_init__(self) -> None:
        for label, address in (
            ("inference_address", self.inference_address),
            ("management_address", self.management_address),
            ("metrics_address", self.metrics_address),
        ):
            if not _ADDRESS.fullmatch(address):
                raise ValueError(f"{label} {address!r}: expected http(s)://HOST:PORT")
        if _host(self.management_address) not in ("127.0.0.1", "localhost", "[::1]"):
            raise ValueError("management_address must be a loopback address: token authorization is off")
        if not self.model_dir.startswith("/"):
            raise ValueError(f"model_dir {self.model_dir!r} must be absolute")

    @property
    def model_store(self) -> str:
        return f"{self.model_dir.rstrip('/')}/{MODEL_STORE}"


def _host(address: str) -> str:
    return address.split("://", 1)[1].rsplit(":", 1)[0]


# --- the archive's model-config YAML ------------------------------------------------------------


# A model that cannot load stops being retried after this long, so TorchServe reports itself unhealthy and
# the pod fails readiness instead of restarting workers forever.
MAX_RETRY_TIMEOUT_S = 60


def _worker_settings(model: ModelSpec) -> dict[str, Any]:
    """Workers, batching and timeouts: the same in the archive's model config and the model snapshot."""
    return {
        "minWorkers": model.min_workers,
        "maxWorkers": model.max_workers,
        "batchSize": model.batch_size,
        "maxBatchDelay": model.max_batch_delay_ms,
        "responseTimeout": model.response_timeout_s,
        "startupTimeout": model.startup_timeout_s,
    }


def model_config(model: ModelSpec) -> dict[str, Any]:
    """The keys TorchServe reads from ``--config-file`` (handlers also see them as ``context.model_yaml_config``)."""
    config = {**_worker_settings(model), "maxRetryTimeoutInSec": MAX_RETRY_TIMEOUT_S}
    if model.device_type is not None:
        config["deviceType"] = model.device_type
    return config


def model_config_yaml(model: ModelSpec) -> str:
    return yaml.safe_dump(model_config(model), sort_keys=False)


# --- config.properties --------------------------------------------------------------------------


def snapshot_entry(model: ModelSpec) -> dict[str, Any]:
    """One version's entry under ``model_snapshot.models.<name>``; TorchServe requires the first four keys."""
    return {"defaultVersion": True, "marName": model.mar_name, **_worker_settings(model)}


def model_snapshot(models: list[ModelSpec]) -> dict[str, Any]:
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique in one server: {names}")
    return {
        "name": "startup.cfg",
        "modelCount": len(models),
        "models": {m.name: {m.version: snapshot_entry(m)} for m in models},
    }


def dump_snapshot(snapshot: Mapping[str, Any]) -> str:
    """Compact JSON on one line, as a properties value must be."""
    return json.dumps(snapshot, separators=(",", ":"))


_HEADER = """\
# TorchServe configuration in KServe's layout: this file at config/config.properties, archives in model-store/.
# Written by `esteira package`. Esteira's runtime copies it at start-up, writing ESTEIRA_BATCH_SIZE and
# ESTEIRA_MAX_BATCH_DELAY_MS into model_snapshot; TS_* environment variables override the keys below.
#
# Token authorization is off: KServe's wrapper and ingress send no TorchServe token. Only the inference and
# metrics APIs listen beyond the pod; the management API is bound to 127.0.0.1 and model registration is off.
"""


def config_properties(models: list[ModelSpec], server: ServerSpec | None = None) -> str:
    """The whole ``config.properties`` text for ``models`` served by one TorchServe."""
    server = server or ServerSpec()
    if not models:
        raise ValueError("at least one model is needed")
    properties: dict[str, str] = {
        "inference_address": server.inference_address,
        "management_address": server.management_address,
        "metrics_address": server.metrics_address,
        "grpc_inference_address": "127.0.0.1",
        "grpc_management_address": "127.0.0.1",
        "grpc_inference_port": str(server.grpc_inference_port),
        "grpc_management_port": str(server.grpc_management_port),
        "disable_token_authorization": "true",
        "enable_model_api": "false",
        "enable_envvars_config": "true",
        "enable_metrics_api": "true",
        "metrics_mode": "prometheus",
    }
    if server.metrics_config:
        properties["metrics_config"] = f"{server.model_dir.rstrip('/')}/{server.metrics_config}"
    properties |= {
        "install_py_dep_per_model": "false",
        "number_of_netty_threads": str(server.netty_threads),
        "job_queue_size": str(server.job_queue_size),
        "default_response_timeout": str(max(m.response_timeout_s for m in models)),
        "model_store": server.model_store,
        "model_snapshot": dump_snapshot(model_snapshot(models)),
    }
    return _HEADER + "".join(f"{key}={escape_value(value)}\n" for key, value in properties.items())


# --- reading and editing properties text --------------------------------------------------------

_SEPARATORS = "=: \t\f"
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def escape_value(value: str) -> str:
    """Java properties escaping for a value: backslashes, line breaks and a leading space."""
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return "\\" + out if out.startswith((" ", "\t")) else out


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
        else:
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
    return "".join(out)


def _continues(line: str) -> bool:
    """A line ending in an odd number of backslashes continues on the next one."""
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1


@dataclass(frozen=True)
class _Entry:
    first: int  # index of the first physical line
    last: int  # index of the last physical line
    key: str
    value: str


def _entries(lines: list[str]) -> Iterator[_Entry]:
    i = 0
    while i < len(lines):
        first = i
        stripped = lines[i].lstrip(" \t\f")
        if not stripped or stripped[0] in "#!":
            i += 1
            continue
        logical = stripped
        while _continues(logical) and i + 1 < len(lines):
            i += 1
            logical = logical[:-1] + lines[i].lstrip(" \t\f")
        i += 1
        key_end = 0
        while key_end < len(logical) and logical[key_end] not in _SEPARATORS:
            key_end += 2 if logical[key_end] == "\\" else 1
        key = logical[:key_end]
        rest = logical[key_end:].lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        yield _Entry(first, i - 1, _unescape(key), _unescape(rest))


def parse_properties(text: str) -> dict[str, str]:
    """Key to value as java.util.Properties reads them (later keys win)."""
    return {entry.key: entry.value for entry in _entries(text.splitlines())}


def set_properties(text: str, updates: Mapping[str, str]) -> str:
    """``text`` with each key in ``updates`` set: rewritten where it stands, appended when absent.
    Comments, order and every other line are kept as they were."""
    lines = text.splitlines()
    replaced: dict[int, str] = {}
    drop: set[int] = set()
    seen: set[str] = set()
    for entry in _entries(lines):
        if entry.key in updates:
            if entry.key in seen:  # a repeated key: keep only the first, rewritten
                drop.update(range(entry.first, entry.last + 1))
                continue
            seen.add(entry.key)
            replaced[entry.first] = f"{entry.key}={escape_value(updates[entry.key])}"
            drop.update(range(entry.first + 1, entry.last + 1))
    out = [replaced.get(i, line) for i, line in enumerate(lines) if i not in drop]
    out += [f"{key}={escape_value(value)}" for key, value in updates.items() if key not in seen]
    return "\n".join(out) + "\n"

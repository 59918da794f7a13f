"""The words every layer shares: decisions, commands, labels and annotations, API versions, environment
names, headers and time formats. The bottom of the core: it imports nothing from Esteira, and nothing
above it defines these again.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args

from esteira import API_GROUP

# -- objects Esteira writes -------------------------------------------------------------------------------

ISVC_API_VERSION = "serving.kserve.io/v1beta1"
HTTPROUTE_API_VERSION = "gateway.networking.k8s.io/v1"
ESTEIRA_RUNTIME = "esteira-torchserve"  # Esteira's ClusterServingRuntime (TorchServe 0.12)
MODEL_CONTAINER = "kserve-container"  # KServe's name for the model server container

LABEL_DEPLOYMENT = f"{API_GROUP}/deployment"
LABEL_REVISION = f"{API_GROUP}/revision"
ANNOTATION_MODEL_VERSION = f"{API_GROUP}/model-version"
ANNOTATION_LAST_APPLIED = f"{API_GROUP}/last-applied"
COMMAND_ANNOTATION = f"{API_GROUP}/command"

KSERVE_DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
KSERVE_AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
KSERVE_PROMETHEUS_SCRAPING = "serving.kserve.io/enable-prometheus-scraping"
KSERVE_TAG_ROUTING = "serving.kserve.io/enable-tag-routing"
KNATIVE_AUTOSCALING_CLASS = "autoscaling.knative.dev/class"

# -- the model server's environment and the revision header ---------------------------------------------

ENV_DEPLOYMENT = "ESTEIRA_DEPLOYMENT"
ENV_MODEL_NAME = "ESTEIRA_MODEL_NAME"
ENV_REVISION = "ESTEIRA_REVISION"
ENV_MODEL_VERSION = "ESTEIRA_MODEL_VERSION"
ENV_BATCH_SIZE = "ESTEIRA_BATCH_SIZE"
ENV_MAX_BATCH_DELAY_MS = "ESTEIRA_MAX_BATCH_DELAY_MS"
REVISION_HEADER = "x-model-revision"  # pins a request to one revision; answers say which one served it

# -- decisions and commands ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Something Esteira decided, worth an Event: Normal or Warning, a reason and a message."""

    reason: str
    message: str
    warning: bool = False


Action = Literal["promote", "pause", "resume", "abort", "retry", "rollback"]
ACTIONS: tuple[Action, ...] = get_args(Action)


@dataclass(frozen=True)
class Command:
    """A person's instruction, carried out once (its id is remembered in status.lastCommand)."""

    id: str
    action: Action
    full: bool = False
    revision: int | None = None

    def encode(self) -> str:
        """The command annotation's value."""
        return json.dumps({k: v for k, v in asdict(self).items() if v not in (None, False)}, sort_keys=True)

    @classmethod
    def decode(cls, raw: str) -> Command:
        """Parse an annotation value; ValueError names what is wrong."""
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        action = data.get("action")
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
        revision = data.get("revision")
        if revision is not None and (not isinstance(revision, int) or isinstance(revision, bool) or revision < 1):
            raise ValueError(f"revision must be a positive integer, got {revision!r}")
        if "id" not in data:
            raise ValueError("missing id")
        return cls(id=str(data["id"]), action=action, full=bool(data.get("full", False)), revision=revision)


# -- time ------------------------------------------------------------------------------------------------

_DURATION = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def parse_duration(text: str) -> timedelta:
    """'1m30s' -> 90 seconds (the CRD's duration pattern)."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return timedelta(seconds=sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))


def format_time(moment: datetime) -> str:
    return moment.strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT)

"""What the collector stores: one inference record, one label, one audit entry. Parsing lives in `wire`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from esteira.quality.scores import Answer


@dataclass(frozen=True)
class Record:
    """One CloudEvent from a model server: the request or the response of one inference."""

    namespace: str
    deployment: str
    revision: str
    request_id: str
    kind: str  # "request" or "response"
    at: float  # seconds since the epoch
    body: str  # the payload as logged (already redacted at the source)
    model: str = ""
    version: str = ""
    predictions: tuple[Answer, ...] = ()  # response only: one label or value per instance


@dataclass(frozen=True)
class Label:
    """The truth for one request: one answer, or one per instance."""

    namespace: str
    deployment: str
    request_id: str
    truth: Answer | tuple[Answer, ...]
    at: float

    @property
    def key(self) -> tuple[str, str, str]:
        """The request it is the truth for."""
        return self.namespace, self.deployment, self.request_id


@dataclass(frozen=True)
class AuditEntry:
    """One operator decision (or a person's command) about one ModelDeployment."""

    namespace: str
    deployment: str
    reason: str
    message: str
    at: float
    warning: bool = False
    actor: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    entry_id: str | None = None  # the sender's id: a resent entry (its first answer lost) is stored once


@dataclass(frozen=True)
class Joined:
    """A labelled prediction, counted once, when its record and its label have both arrived."""

    namespace: str
    deployment: str
    revision: str
    request_id: str
    index: int
    predicted: Answer
    actual: Answer
    predicted_at: float
    joined_at: float

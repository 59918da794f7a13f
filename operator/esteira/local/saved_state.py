"""What `esteira up` keeps in a `--workdir` between runs, so a restart resumes where the last run stopped.

Without it a restart began from nothing: the file's build was served as stable at once, so stopping `esteira up`
in the middle of a canary promoted the canary with no analysis, a rolled-back build came back, and the history,
drift incidents, retraining runs and the last command carried out were gone. The status is written after every
change (a temporary file renamed over the last, so a crash leaves one whole file), with the build a rollback
asked for while the file still names another.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from esteira.api.spec import ModelDeploymentSpec, ModelSource
from esteira.api.status import ModelDeploymentStatus
from esteira.vocabulary import Decision

STATE_FILE = "status.json"
FORMAT = 1
STOPPED_WHILE_RUNNING = "esteira up stopped while its command ran; it was not started again"


class StateFileError(ValueError):
    """The saved state cannot be used; the message names the file, the reason and what to do."""


@dataclass(frozen=True)
class SavedState:
    status: ModelDeploymentStatus
    rollback_model: ModelSource | None  # the build a rollback asked for, while the file's spec is `file_spec`
    file_spec: str  # the digest of the file's spec when the rollback was asked for


def spec_digest(spec: ModelDeploymentSpec) -> str:
    """Which spec the file held: a rollback's build stands only until the file changes."""
    wire = json.dumps(spec.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(wire.encode()).hexdigest()


def load_state(path: Path, namespace: str, name: str) -> SavedState | None:
    """The state saved at ``path`` for ModelDeployment ``namespace/name``; None when there is none."""
    afresh = f"move it away to start afresh (the rollout state it holds is then lost): {path}"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateFileError(f"{path}: unreadable ({exc}); {afresh}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise StateFileError(f"{path}: format {found!r}, this esteira reads format {FORMAT}; {afresh}")
    saved = (raw.get("namespace"), raw.get("name"))
    if saved != (namespace, name):
        raise StateFileError(
            f"{path}: holds ModelDeployment {saved[0]}/{saved[1]}, not {namespace}/{name}; give each its own "
            "--workdir, or " + afresh
        )
    field = "status"
    try:
        status = ModelDeploymentStatus.model_validate(raw.get("status") or {})
        field, rollback = "rollbackModel", raw.get("rollbackModel")
        model = None if rollback is None else ModelSource.model_validate(rollback)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in (field, *problem["loc"]))
        raise StateFileError(f"{path}: {where}: {problem['msg']}; {afresh}") from None
    return SavedState(status, model, str(raw.get("fileSpec") or ""))


def save_state(path: Path, namespace: str, name: str, state: SavedState) -> None:
    """Write ``state`` whole: a temporary file beside ``path``, renamed over it."""
    raw: dict[str, Any] = {
        "format": FORMAT,
        "namespace": namespace,
        "name": name,
        "status": state.status.to_wire(),
        "fileSpec": state.file_spec,
    }
    if state.rollback_model is not None:
        raw["rollbackModel"] = state.rollback_model.model_dump(mode="json", by_alias=True, exclude_none=True)
    path.parent.mkdir(parents=True, exist_ok=True)  # a --workdir named before any run made it
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(json.dumps(raw, indent=1) + "\n")
        handle.flush()
        os.fsync(handle.fileno())  # on disk before the rename: after a power cut, the old file or the new, whole
    os.replace(temporary, path)


def resumed(status: ModelDeploymentStatus, now: str) -> tuple[ModelDeploymentStatus, list[Decision]]:
    """``status`` as a new run takes it over. A canary's step starts again now: the traffic it was judged on and
    the time it has been unready were counted by processes that are gone. A retraining command that was running
    ended with them."""
    status = status.model_copy(deep=True)
    decisions = []
    canary = status.canary
    if canary is not None:
        update = {"step_started_at": now, "last_analysis_at": None, "unready_since": None, "router_behind_since": None}
        status.canary = canary.model_copy(update=update)
    retraining = status.retraining
    if retraining is not None:
        for index, run in enumerate(retraining.runs):
            if run.outcome == "Running" and run.job_seen:
                retraining.runs[index] = run.model_copy(update={"outcome": "Failed", "message": STOPPED_WHILE_RUNNING})
                message = f"Retraining run {run.run} ({run.job}) failed: {STOPPED_WHILE_RUNNING}"
                decisions.append(Decision("RetrainingFailed", message, True))
    return status, decisions

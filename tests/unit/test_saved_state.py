"""`esteira up` keeps its status in a --workdir: written whole, read back as it was, refused with the reason and
what to do when it cannot be used, and taken over by a new run with the canary's step starting again."""

from __future__ import annotations

from pathlib import Path

import pytest

from esteira.api.spec import ModelDeploymentSpec, ModelSource
from esteira.api.status import CanaryRecord, ModelDeploymentStatus, RetrainingRun, RetrainingStatus, RevisionRecord
from esteira.local.runtime import LocalRuntime
from esteira.local.saved_state import (
    STATE_FILE,
    STOPPED_WHILE_RUNNING,
    SavedState,
    StateFileError,
    load_state,
    resumed,
    save_state,
    spec_digest,
)
from tests.support.prerequisites import REPO_ROOT, require_file
from tests.support.specs import spec

STABLE = RevisionRecord(revision=1, model_version="1", storage_uri="file:///m/1", since="2026-12-01T10:00:00Z")
CANARY = CanaryRecord(
    revision=2,
    model_version="2",
    storage_uri="file:///m/2",
    since="2026-12-01T11:00:00Z",
    weight=25,
    step=1,
    step_started_at="2026-12-01T11:05:00Z",
    last_analysis_at="2026-12-01T11:06:00Z",
    unready_since="2026-12-01T11:06:30Z",
)


def status() -> ModelDeploymentStatus:
    runs = [
        RetrainingRun(
            run=1, at="t", signal="drift", reason="r", outcome="Running", job="iris-retrain-1", job_seen=True
        ),
        RetrainingRun(run=2, at="t", signal="drift", reason="r", outcome="Succeeded", job="iris-retrain-2"),
    ]
    return ModelDeploymentStatus(
        stable=STABLE, canary=CANARY, latest_revision=2, last_command="c1", retraining=RetrainingStatus(runs=runs)
    )


def test_the_state_is_read_back_as_it_was_written(tmp_path: Path) -> None:
    path = tmp_path / "new-folder" / STATE_FILE
    model = ModelSource(name="iris", version="1", storageUri="file:///m/1")
    parsed = ModelDeploymentSpec.parse(spec())
    save_state(path, "local", "iris", SavedState(status(), model, spec_digest(parsed)))
    loaded = load_state(path, "local", "iris")
    assert loaded == SavedState(status(), model, spec_digest(parsed))
    assert [p.name for p in path.parent.iterdir()] == [STATE_FILE], "no temporary file left beside it"
    assert load_state(tmp_path / "none" / STATE_FILE, "local", "iris") is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "unreadable"),
        ('{"format": 9}', "format 9, this esteira reads format 1"),
        ('{"format": 1, "namespace": "local", "name": "wine", "status": {}}', "holds ModelDeployment local/wine"),
        (
            '{"format": 1, "namespace": "local", "name": "iris", "status": {"latestRevision": -1}}',
            "status.latestRevision: Input should be greater than or equal to 0",
        ),
    ],
)
def test_a_state_that_cannot_be_used_is_refused_naming_the_file_the_reason_and_the_way_out(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / STATE_FILE
    path.write_text(content)
    with pytest.raises(StateFileError) as refused:
        load_state(path, "local", "iris")
    assert str(refused.value).startswith(f"{path}: ") and reason in str(refused.value)
    assert "move it away to start afresh" in str(refused.value)


def test_a_new_run_restarts_the_canary_s_step_and_ends_the_command_that_was_running() -> None:
    taken, decisions = resumed(status(), "2026-12-01T12:00:00Z")
    canary = taken.canary
    assert canary is not None and (canary.revision, canary.weight, canary.step) == (2, 25, 1)
    assert canary.step_started_at == "2026-12-01T12:00:00Z"
    assert canary.last_analysis_at is None and canary.unready_since is None
    assert taken.stable == STABLE and taken.last_command == "c1"
    assert taken.retraining is not None
    assert [(r.outcome, r.message) for r in taken.retraining.runs] == [
        ("Failed", STOPPED_WHILE_RUNNING),
        ("Succeeded", ""),
    ]
    assert [d.reason for d in decisions] == ["RetrainingFailed"]
    assert status().canary == CANARY, "the given status is left as it was"


def test_esteira_up_refuses_a_state_whose_stable_build_is_gone_before_anything_starts(tmp_path: Path) -> None:
    manifest = tmp_path / "iris.yaml"
    folder = REPO_ROOT / "build" / "models" / "iris-1.0.0"
    require_file(folder / "config" / "config.properties", "run `make models`")
    manifest.write_text(
        "apiVersion: serving.esteira.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: iris}\n"
        f"spec:\n  model: {{name: iris, version: '1', storageUri: '{folder}'}}\n"
    )
    workdir = tmp_path / "run"
    gone = STABLE.model_copy(update={"storage_uri": str(tmp_path / "gone")})
    state = SavedState(ModelDeploymentStatus(stable=gone, latest_revision=1), None, "")
    save_state(workdir / STATE_FILE, "default", "iris", state)
    with pytest.raises(StateFileError, match="stable revision 1's build cannot be served"):
        LocalRuntime(manifest, workdir=workdir)
    assert sorted(p.name for p in workdir.iterdir()) == [STATE_FILE], "nothing started"

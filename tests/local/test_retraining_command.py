"""`esteira up` runs spec.retraining.command for a trigger, with the evidence in its environment, and
records the command's outcome as the operator records a Job's."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus
from esteira.local.retraining import CommandRunner
from esteira.local.runtime import LocalRuntime
from esteira.local.server import free_port
from esteira.render import RenderContext
from esteira.state.retrain import plan_retraining
from tests.local.conftest import MODELS
from tests.support.specs import spec
from tests.support.waiting import eventually

NOW = datetime(2026, 6, 1, 12, 0, 0)


async def finished(runner: CommandRunner, name: str, within: float = 30.0) -> dict[str, object]:
    """Poll the runner (its processes are reaped on this event loop) until the command has an outcome."""
    async with asyncio.timeout(within):
        while not (job := runner.jobs()[name])["status"].get("conditions"):  # noqa: ASYNC110 - polled like a Job
            await asyncio.sleep(0.05)
    return job


WRITE_EVIDENCE = "import os, pathlib; pathlib.Path('evidence.json').write_text(os.environ['ESTEIRA_RETRAIN_EVIDENCE'])"


async def test_a_scheduled_trigger_runs_the_command_and_records_success(tmp_path: Path) -> None:
    md = ModelDeploymentSpec.parse(
        spec(retraining={"triggers": {"schedule": "24h"}, "command": [sys.executable, "-c", WRITE_EVIDENCE]})
    )
    status, runner, ctx = ModelDeploymentStatus(), CommandRunner(tmp_path), RenderContext("iris", "default")
    plan = plan_retraining(
        ctx, md, status, runner.jobs(), NOW, labelled_data="http://127.0.0.1:1/v1/export", runs_commands=True
    )
    (run,) = plan.commands
    await runner.start("iris", run, md.retraining.command or [], tmp_path)  # type: ignore[union-attr]
    await finished(runner, "command-1")
    evidence = (tmp_path / "evidence.json").read_text()
    assert json.loads(evidence)["signal"] == "Schedule"
    assert json.loads(evidence)["labelledData"] == "http://127.0.0.1:1/v1/export"
    done = plan_retraining(ctx, md, status, runner.jobs(), NOW + timedelta(minutes=1), runs_commands=True)
    assert [d.reason for d in done.decisions] == ["RetrainingSucceeded"]
    assert status.retraining is not None and status.retraining.runs[0].outcome == "Succeeded"


async def test_a_failing_command_is_recorded_as_failed(tmp_path: Path) -> None:
    md = ModelDeploymentSpec.parse(
        spec(retraining={"triggers": {"schedule": "24h"}, "command": [sys.executable, "-c", "raise SystemExit(3)"]})
    )
    status, runner, ctx = ModelDeploymentStatus(), CommandRunner(tmp_path), RenderContext("iris", "default")
    (run,) = plan_retraining(ctx, md, status, runner.jobs(), NOW, runs_commands=True).commands
    await runner.start("iris", run, md.retraining.command or [], tmp_path)  # type: ignore[union-attr]
    await finished(runner, "command-1")
    done = plan_retraining(ctx, md, status, runner.jobs(), NOW + timedelta(minutes=1), runs_commands=True)
    assert [(d.reason, d.warning) for d in done.decisions] == [("RetrainingFailed", True)]


async def test_a_command_that_cannot_start_fails_its_run_and_says_why_in_its_log(tmp_path: Path) -> None:
    """Not found, or not executable: raised, it stopped esteira up and everything it served."""
    missing = str(tmp_path / "no-such-trainer")
    md = ModelDeploymentSpec.parse(spec(retraining={"triggers": {"schedule": "24h"}, "command": [missing]}))
    status, runner, ctx = ModelDeploymentStatus(), CommandRunner(tmp_path), RenderContext("iris", "default")
    (run,) = plan_retraining(ctx, md, status, runner.jobs(), NOW, runs_commands=True).commands
    log = await runner.start("iris", run, [missing], tmp_path)
    assert "cannot start" in log.read_text() and "no-such-trainer" in log.read_text()
    done = plan_retraining(ctx, md, status, runner.jobs(), NOW + timedelta(minutes=1), runs_commands=True)
    assert [d.reason for d in done.decisions] == ["RetrainingFailed"]
    assert status.retraining is not None and status.retraining.runs[0].outcome == "Failed"


IGNORES_SIGTERM_WITH_A_CHILD = (
    "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
    "open('child.pid', 'w').write(str(child.pid)); time.sleep(300)"
)


async def test_stopping_ends_a_command_that_ignores_sigterm_and_what_it_started(tmp_path: Path) -> None:
    """Waited for without end, it held Ctrl-C; stopped alone, a shell's children outlived esteira up."""
    md = ModelDeploymentSpec.parse(
        spec(
            retraining={
                "triggers": {"schedule": "24h"},
                "command": [sys.executable, "-c", IGNORES_SIGTERM_WITH_A_CHILD],
            }
        )
    )
    status, runner, ctx = ModelDeploymentStatus(), CommandRunner(tmp_path), RenderContext("iris", "default")
    (run,) = plan_retraining(ctx, md, status, runner.jobs(), NOW, runs_commands=True).commands
    await runner.start("iris", run, md.retraining.command or [], tmp_path)  # type: ignore[union-attr]
    pid_file = tmp_path / "child.pid"
    await asyncio.to_thread(eventually, lambda: pid_file.exists() and pid_file.read_text(), 30, "its child")
    child = int(pid_file.read_text())
    async with asyncio.timeout(20):
        await runner.stop(grace=0.5)
    await asyncio.to_thread(eventually, lambda: not running(child), 10, "the command's child gone")


def running(pid: int) -> bool:
    """Whether a process runs (a zombie, ended and not yet reaped by its parent, does not)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text().lower()
    except FileNotFoundError:
        return False


def test_esteira_up_runs_no_retraining_without_a_command_and_says_so_once(tmp_path: Path) -> None:
    """A run recorded for a Job or a webhook, which only a cluster runs, would be Running for ever here and hold
    every later trigger."""
    manifest = tmp_path / "iris.yaml"
    manifest.write_text(
        "apiVersion: serving.esteira.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: iris}\nspec:\n"
        f"  model: {{name: iris, version: '1.0.0', storageUri: '{MODELS / 'iris-1.0.0'}'}}\n"
        "  retraining: {triggers: {schedule: 1h}, webhook: 'http://127.0.0.1:1/retrain'}\n"
    )
    runtime = LocalRuntime(manifest, port=free_port(), workdir=tmp_path / "run", log=lambda _: None)
    asyncio.run(runtime._retrain(NOW))
    asyncio.run(runtime._retrain(NOW))
    said = [(e.reason, e.warning) for e in runtime.timeline]
    assert said == [("RetrainingNotRun", True)]
    assert runtime.status.retraining is not None and runtime.status.retraining.runs == []

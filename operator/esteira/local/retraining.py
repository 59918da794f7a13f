"""`esteira up` runs `spec.retraining.command` where a cluster would run a Job: one process per trigger,
the trigger's evidence in its environment, its exit status as the run's outcome."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from esteira.api.status import RetrainingRun
from esteira.vocabulary import ENV_DEPLOYMENT, ENV_RETRAIN_EVIDENCE, ENV_RETRAIN_REASON, ENV_RETRAIN_RUN

COMMAND_NOT_STARTED = 127  # a shell's status for a command it could not run
STOP_GRACE_SECONDS = 10.0  # how long a command has to end after SIGTERM before its process group is killed


class CommandRunner:
    """Starts retraining commands and reports them the way the Job controller reports Jobs (conditions)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._running: dict[str, asyncio.subprocess.Process] = {}
        self._exit: dict[str, int] = {}

    async def start(self, deployment: str, run: RetrainingRun, command: list[str], cwd: Path) -> Path:
        """Start `command` for `run`; its output goes to a log file whose path is returned."""
        name = run.job or f"command-{run.run}"
        log = self.workdir / f"retrain-{run.run}.log"
        env = {
            **os.environ,
            ENV_DEPLOYMENT: deployment,
            ENV_RETRAIN_RUN: str(run.run),
            ENV_RETRAIN_REASON: run.reason,
            ENV_RETRAIN_EVIDENCE: json.dumps(run.evidence, sort_keys=True),
        }
        with log.open("wb") as out:
            try:
                self._running[name] = await asyncio.create_subprocess_exec(
                    *command,
                    cwd=cwd,
                    env=env,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopping it stops what it started too
                )
            except OSError as exc:  # not found, not executable: the run fails, esteira up serves on
                out.write(f"cannot start {command[0]!r}: {exc}\n".encode())
                self._exit[name] = COMMAND_NOT_STARTED
        return log

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Every command as a Job-like object: no conditions while it runs, Complete or Failed once it exits."""
        for name, process in list(self._running.items()):
            if process.returncode is not None:
                self._exit[name] = process.returncode
                del self._running[name]
        found: dict[str, dict[str, Any]] = {name: {"status": {}} for name in self._running}
        for name, code in self._exit.items():
            kind = "Complete" if code == 0 else "Failed"
            found[name] = {"status": {"conditions": [{"type": kind, "status": "True"}]}}
        return found

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop commands still running, with whatever they started (Ctrl-C stops everything `esteira up`
        started): SIGTERM to each one's process group, SIGKILL to what is left after ``grace``. A command that
        took its time over SIGTERM held Ctrl-C for as long, and a shell's children outlived it."""
        running = [p for p in self._running.values() if p.returncode is None]
        _signal_groups(running, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), grace)
        except TimeoutError:
            _signal_groups(running, signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in running), return_exceptions=True)
        _signal_groups(running, signal.SIGKILL)  # what a command left running when it exited


def _signal_groups(processes: list[asyncio.subprocess.Process], sig: signal.Signals) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)

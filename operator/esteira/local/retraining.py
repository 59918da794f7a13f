"""`esteira up` runs `spec.retraining.command` where a cluster would run a Job: one process per trigger,
the trigger's evidence in its environment, its exit status as the run's outcome."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from esteira.api.status import RetrainingRun
from esteira.vocabulary import ENV_DEPLOYMENT, ENV_RETRAIN_EVIDENCE, ENV_RETRAIN_REASON, ENV_RETRAIN_RUN

COMMAND_NOT_STARTED = 127  # a shell's status for a command it could not run


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
                    *command, cwd=cwd, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
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

    async def stop(self) -> None:
        """Stop commands still running (Ctrl-C stops everything `esteira up` started)."""
        for process in self._running.values():
            if process.returncode is None:
                process.terminate()
        await asyncio.gather(*(p.wait() for p in self._running.values()), return_exceptions=True)

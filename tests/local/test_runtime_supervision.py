"""How `esteira up` looks after its model servers, with a stand-in server (one `sleep` process, ready while it
runs): a start that fails, a relaunch and a retirement of one server at once, crashes counted afresh after a
steady run, and a control token in place before the router listens."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import HistoryEntry
from esteira.local.cli import serve
from esteira.local.runtime import MAX_RESTARTS, STEADY_SECONDS, LocalRuntime
from esteira.local.server import free_port
from esteira.packaging.processes import group_members
from tests.local.conftest import MODELS
from tests.support.prerequisites import require_file
from tests.support.specs import spec
from tests.support.stand_ins import StandInServer
from tests.support.waiting import eventually


@dataclass
class StandIn(StandInServer):
    """A model server that is one process group running ``command``; ready while its launcher runs."""

    runtime = "StandIn"
    log_name = "stand-in.log"
    command: tuple[str, ...] = ("sleep", "300")
    launched: list[int] | None = None  # every process group it started

    @property
    def url(self) -> str | None:
        return "http://127.0.0.1:1" if self.ready else None

    def prepare(self) -> list[str]:
        if not self.model_dir.exists():
            raise FileNotFoundError(f"{self.model_dir}: no such folder")
        return list(self.command)

    async def launch(self) -> None:
        await super().launch()
        if self.launched is not None and self.pgid is not None:
            self.launched.append(self.pgid)

    async def check_ready(self, session: aiohttp.ClientSession) -> bool:
        return self._process is not None and self.exited() is None


@asynccontextmanager
async def local_runtime(tmp_path: Path) -> AsyncIterator[LocalRuntime]:
    require_file(MODELS / "iris-1.0.0" / "config" / "config.properties", "run `make models`")
    manifest = tmp_path / "md.yaml"
    manifest.write_text(
        "apiVersion: serving.esteira.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: iris}\n"
        f"spec: {{model: {{name: iris, version: '1.0.0', storageUri: {MODELS / 'iris-1.0.0'}}}}}\n"
    )
    runtime = LocalRuntime(manifest, port=free_port(), workdir=tmp_path / "work", log=lambda _: None)
    async with aiohttp.ClientSession() as session:
        runtime._session = session
        try:
            yield runtime
        finally:
            await runtime.stop()


def stand_in(runtime: LocalRuntime, folder: Path, **fields: Any) -> StandIn:
    return StandIn(1, "iris", "1.0.0", folder, runtime.workdir / "revision-1", runtime.spec, **fields)


def test_a_server_that_cannot_start_is_said_and_given_up_not_left_pending(tmp_path: Path) -> None:
    """Its task died unseen: nothing on the timeline, no restart counted, the revision pending for ever."""

    async def scenario() -> None:
        async with local_runtime(tmp_path) as runtime:
            server = runtime.servers[1] = stand_in(runtime, tmp_path / "gone")
            await runtime._bring_up(server, "Starting")
            failed = [event.message for event in runtime.timeline if event.reason == "ServerFailed"]
            assert failed and "could not start" in failed[0] and "no such folder" in failed[0]
            assert server.restarts == MAX_RESTARTS and not server.ready

    asyncio.run(scenario())


def test_a_relaunch_and_a_retirement_of_one_server_leave_no_process_behind(tmp_path: Path) -> None:
    """Both stopped the crashed server's old group; whichever returned first, the new launch was tracked by
    nobody and outlived `esteira up`."""
    launched: list[int] = []

    async def scenario() -> None:
        async with local_runtime(tmp_path) as runtime:
            # Its launcher dies, and a child that ignores SIGTERM lingers a moment (as TorchServe's workers outlive
            # a killed JVM), so both stops wait on the old group.
            command = ("sh", "-c", "(trap '' TERM; exec sleep 1) & exec sleep 300")
            server = runtime.servers[1] = stand_in(runtime, tmp_path, command=command, launched=launched)
            await runtime._bring_up(server, "Starting")
            assert server.ready and server.pgid is not None
            os.kill(server.pgid, signal.SIGKILL)
            runtime._supervise()  # the crash noticed: a relaunch ...
            await runtime._retire_servers()  # ... while the step no longer wants the revision
            await asyncio.gather(*runtime._tasks)

    asyncio.run(scenario())
    left = [group for group in launched if group_members(group)]
    for group in left:
        os.killpg(group, signal.SIGKILL)
    assert not left, f"process groups left running: {left}"


def test_crashes_after_a_steady_run_are_counted_afresh(tmp_path: Path) -> None:
    """Five crashes, whenever they came, gave the revision up for good."""

    async def scenario() -> None:
        async with local_runtime(tmp_path) as runtime:
            server = runtime.servers[1] = stand_in(runtime, tmp_path)
            server.restarts = MAX_RESTARTS - 1
            await runtime._bring_up(server, "Starting")
            assert server.ready and server.pgid is not None and server.ready_since is not None
            server.ready_since = time.monotonic() - STEADY_SECONDS - 1  # up ten minutes since its last start
            os.kill(server.pgid, signal.SIGKILL)
            await eventually_async(lambda: server.exited() is not None)
            runtime._supervise()
            assert server.restarts == 1
            assert not [event for event in runtime.timeline if event.reason == "ServerFailed"]

    asyncio.run(scenario())


async def eventually_async(condition: Any, within: float = 10.0) -> None:
    await asyncio.to_thread(eventually, condition, within, "the condition")


def test_the_control_token_is_set_before_the_router_listens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set after the router listened (and the collector started), a control request in between ran with none."""
    tokens: list[str | None] = []

    async def scenario() -> None:
        async with local_runtime(tmp_path) as runtime:
            listen = runtime.router.start

            async def start() -> None:
                tokens.append(runtime.router.token)
                await listen()

            monkeypatch.setattr(runtime.router, "start", start)
            monkeypatch.setattr(runtime, "tick", _no_tick)
            with pytest.raises(_Stopped):
                await runtime.start()

    asyncio.run(scenario())
    assert tokens and tokens[0]


class _Stopped(Exception):
    """The start stops before any model server would."""


async def _no_tick(command: object = None) -> list[object]:
    raise _Stopped


def test_stable_accuracy_is_read_at_most_once_a_minute_as_the_operator_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read on every tick (each second), a query over the whole accuracy window ran for nothing."""
    from esteira.api.status import RevisionRecord
    from esteira.local.collector import BuiltInCollector
    from esteira.quality.scores import Tally
    from tests.support.specs import spec

    reads: list[int] = []

    async def tally(namespace: str, name: str, revision: int, window: int) -> Tally:
        reads.append(window)
        return Tally(200, 100)

    monkeypatch.setattr(BuiltInCollector, "tallies", property(lambda _: tally))

    async def scenario() -> list[Tally | None]:
        async with local_runtime(tmp_path) as runtime:
            retraining = {"triggers": {"accuracyBelow": 0.9, "accuracyWindow": "30m"}, "command": ["train"]}
            runtime.override = ModelDeploymentSpec.parse(spec(retraining=retraining))
            runtime.status.stable = RevisionRecord(revision=1, model_version="1.0.0", storage_uri="x", since="now")
            return [await runtime._stable_accuracy() for _ in range(3)]

    first, *rest = asyncio.run(scenario())
    assert first == Tally(200, 100) and rest == [None, None] and reads == [1800]


@dataclass
class DiesLoading(StandIn):
    """Once ``dying``, never ready: each launch ends before its model has loaded."""

    dying: bool = False

    async def check_ready(self, session: aiohttp.ClientSession) -> bool:
        return not self.dying and await super().check_ready(session)


def test_a_server_that_crashes_as_it_starts_again_after_a_steady_run_is_given_up(tmp_path: Path) -> None:
    """Its readiness of ten minutes ago stood for each new launch: every crash counted as the first after a
    steady run, and it was started again for ever."""

    async def scenario() -> None:
        async with local_runtime(tmp_path) as runtime:
            server = runtime.servers[1] = DiesLoading(
                1, "iris", "1.0.0", tmp_path, runtime.workdir / "revision-1", runtime.spec
            )
            await runtime._bring_up(server, "Starting")
            assert server.pgid is not None
            server.ready_since = time.monotonic() - STEADY_SECONDS - 1  # up ten minutes
            server.command, server.dying = ("sh", "-c", "sleep 0.3; exit 3"), True  # from now on, dies loading
            os.kill(server.pgid, signal.SIGKILL)
            for _ in range(MAX_RESTARTS + 1):
                await eventually_async(lambda: server.exited() is not None and not server.stopping)
                runtime._supervise()
                await asyncio.gather(*runtime._tasks)
            failed = [event.message for event in runtime.timeline if event.reason == "ServerFailed"]
            assert failed and f"restart {MAX_RESTARTS}: giving up" in failed[0]

    asyncio.run(scenario())


@dataclass
class SlowToLoad(StandIn):
    """Answers its readiness check only ``loading`` seconds after it starts; waited for a short while a time."""

    loading: float = 1.0
    started: float = 0.0

    async def launch(self) -> None:
        self.started = time.monotonic()
        await super().launch()

    async def check_ready(self, session: aiohttp.ClientSession) -> bool:
        return await super().check_ready(session) and time.monotonic() - self.started >= self.loading

    async def wait_ready(self, session: aiohttp.ClientSession, within: float = 180.0) -> None:
        await super().wait_ready(session, within=0.2)


def test_a_server_still_loading_past_the_wait_serves_once_it_is_ready(tmp_path: Path) -> None:
    """Left out after the wait, it ran, ready, and took no traffic for good (a pod serves once Ready)."""

    async def scenario() -> None:
        async with local_runtime(tmp_path) as runtime:
            server = runtime.servers[1] = SlowToLoad(
                1, "iris", "1.0.0", tmp_path, runtime.workdir / "revision-1", runtime.spec
            )
            await runtime._bring_up(server, "Starting")
            assert server.ready and runtime.router.backends.get(1)
            waited = [event.message for event in runtime.timeline if event.reason == "ServerNotReady"]
            assert waited and "still waiting" in waited[0]

    asyncio.run(scenario())


class BreaksWhileServing:
    """A runtime whose run raises what nobody foresaw; records whether it was stopped."""

    url, spec = "http://127.0.0.1:1", ModelDeploymentSpec.parse(spec())

    def __init__(self) -> None:
        self.stopped = False

    async def start(self) -> None:
        return None

    def say(self, reason: str, message: str) -> None:
        return None

    async def run(self, stop: asyncio.Event) -> None:
        raise KeyError("unforeseen")

    async def stop(self) -> None:
        self.stopped = True


def test_an_unforeseen_error_while_serving_still_stops_the_model_servers() -> None:
    """Its model servers run in sessions of their own: esteira up exited, and they served on, unstopped."""
    runtime = BreaksWhileServing()
    assert asyncio.run(serve(runtime)) == 1  # type: ignore[arg-type]
    assert runtime.stopped


def test_a_rollback_to_a_build_whose_folder_is_gone_is_refused_naming_it(tmp_path: Path) -> None:
    """Taken, it answered that the revision was stable, then the server could not start and nothing served."""

    async def scenario() -> None:
        async with local_runtime(tmp_path) as runtime:
            gone = (tmp_path / "iris-0.9.0").as_uri()
            entry = HistoryEntry(
                revision=1, model_version="0.9.0", storage_uri=gone, started_at="x", outcome="Superseded"
            )
            runtime.status.history = [entry]
            with pytest.raises(ValueError, match=r"revision 1's build cannot be served again: spec\.model\.storageUri"):
                runtime._rollback_build(1)
            assert runtime.override is None
            runtime.status.history[0].storage_uri = (MODELS / "iris-1.0.0").as_uri()
            runtime._rollback_build(1)
            assert runtime.override is not None and runtime.override.model.version == "0.9.0"

    asyncio.run(scenario())

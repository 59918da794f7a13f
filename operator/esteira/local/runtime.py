"""The local runtime: an adapter that feeds the operator's pure rollout engine and carries out its answer.

Every tick (one second, or at once for a command) it re-reads the ModelDeployment file, gathers evidence
when `analysis_due` says so, runs the same `rollout_step` as the operator, starts or stops one model server
per revision the step's plan serves (TorchServe, or esteira-kserve when `spec.model.runtime` says so), and
hands the resulting weights to the router. All decisions are the step's; this module only does I/O and
reports what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus
from esteira.evidence import MetricProvider
from esteira.evidence.prometheus import PrometheusClient, PrometheusProvider
from esteira.evidence.quality import WithQuality
from esteira.local.access import new_token, remove_token, write_token
from esteira.local.collector import BuiltInCollector
from esteira.local.drift import DriftReadings, drift_totals
from esteira.local.kserve_server import KServeServer, RuntimeUnavailable, find_kserve_python
from esteira.local.manifest import LocalManifest, load_manifest, model_dir, storage_problems
from esteira.local.model_server import ModelServer, StillStarting
from esteira.local.provider import LocalMetricProvider, class_counts
from esteira.local.retraining import CommandRunner
from esteira.local.router import Router
from esteira.local.saved_state import (
    STATE_FILE,
    SavedState,
    StateFileError,
    load_state,
    resumed,
    save_state,
    spec_digest,
)
from esteira.local.server import TorchServeServer
from esteira.local.split import Split
from esteira.local.stats import Counters
from esteira.packaging.front_metrics import model_labels
from esteira.packaging.surface import served_model
from esteira.quality.scores import Tally
from esteira.render.inferenceservice import RenderContext
from esteira.rollout.cycle import rollout_step
from esteira.rollout.engine import analysis_due
from esteira.rollout.evidence import MetricsUnavailable
from esteira.rollout.inputs import ObservedRoute, RolloutInput
from esteira.rollout.phase import Serving, phase_of
from esteira.state.monitoring import drift_due, monitor
from esteira.state.retrain import ACCURACY_READ_SECONDS, plan_retraining
from esteira.vocabulary import (
    ACTIONS,
    COLLECTOR_EXPORT_PATH,
    DEFAULT_GRACE_PERIOD_SECONDS,
    ESTEIRA_KSERVE_RUNTIME,
    Command,
    Decision,
    format_time,
    parse_duration,
)
from model_handlers.protocol import Identity

MAX_RESTARTS = 5
# A server that stayed up this long since its last start has its crashes counted afresh (as the kubelet resets a
# container's restart backoff after ten minutes of running): five crashes over days gave a revision up for good.
STEADY_SECONDS = 600.0
MAX_PORT_RETRIES = 3  # launches in a row that find a picked port taken; past that, each counts as a crash


@dataclass(frozen=True)
class Event:
    """One line of the timeline: when, the engine's (or the runtime's) reason, and the message with evidence."""

    at: str
    reason: str
    message: str
    warning: bool = False


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


class LocalRuntime:
    """Runs one ModelDeployment file on this machine until `stop`."""

    def __init__(
        self,
        manifest_path: Path,
        port: int = 8080,
        workdir: Path | None = None,
        log: Callable[[str], None] = print,
        tick_seconds: float = 1.0,
        kserve_python: Path | None = None,
    ) -> None:
        self.path = manifest_path
        self.port = port
        self.log = log
        self.tick_seconds = tick_seconds
        self._kserve_python_option = kserve_python
        self.kserve_python: Path | None = None  # found once a spec asks for esteira-kserve
        self.manifest: LocalManifest = load_manifest(manifest_path)  # before any folder exists: a bad file leaves none
        self._check_runtime(self.manifest.spec)  # likewise: a runtime this machine lacks fails here
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="esteira-local-"))
        self._seen = self._stamp()
        self.override: ModelDeploymentSpec | None = None  # a rollback's build, until the file changes
        self.status = ModelDeploymentStatus()
        # A --workdir keeps the status between runs (:mod:`esteira.local.saved_state`); a temporary one goes with it.
        self.state_path = None if self._own_workdir else self.workdir / STATE_FILE
        self._resumed = self._resume()
        self._saved: str | None = ""  # the state last written; None while writing it fails
        self.servers: dict[int, ModelServer] = {}
        self.retiring: list[ModelServer] = []  # left the plan, draining or stopping; `stop` ends them too
        self.timeline: list[Event] = []
        self.router = Router(self.manifest.spec.model.name, port)
        self.router.control = self.control
        self.router.status_view = self.status_view
        self.router.targets_view = self.scrape_targets
        self.local_provider = LocalMetricProvider(self._read_counters)
        self.drift_readings = DriftReadings()
        self.collector = BuiltInCollector(self.workdir)
        self.commands = CommandRunner(self.workdir)
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._probing: set[int] = set()  # revisions the router took out whose readiness is being checked
        self._accuracy_read = -ACCURACY_READ_SECONDS  # when stable's labelled accuracy was last read (monotonic)
        self._session: aiohttp.ClientSession | None = None
        self._token_path: Path | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def _resume(self) -> list[Decision]:
        """Take over the status an earlier run saved in the --workdir (StateFileError when it cannot be used, before
        any server starts); the decisions to report once the router listens."""
        if self.state_path is None:
            return []
        saved = load_state(self.state_path, self.manifest.namespace, self.manifest.name)
        if saved is None:
            return []
        stable = saved.status.stable
        if stable is not None and (problems := storage_problems(stable.storage_uri, self.manifest.spec.model.name)):
            raise StateFileError(
                f"{self.state_path}: stable revision {stable.revision}'s build cannot be served: {problems[0]}; "
                "put it back, or move the file away to start afresh (the rollout state it holds is then lost)"
            )
        self.status, decisions = resumed(saved.status, format_time(_now()))
        if saved.rollback_model is not None and saved.file_spec == spec_digest(self.manifest.spec):
            self.override = self.manifest.spec.model_copy(update={"model": saved.rollback_model})
        canary = self.status.canary
        where = f"stable revision {stable.revision}" if stable else "no stable revision"
        if canary is not None:
            where += f", canary revision {canary.revision} at {canary.weight}% (its step starts again)"
        return [Decision("Resumed", f"from {self.state_path}: {where}"), *decisions]

    def _save(self) -> None:
        """Write the status (and a rollback's build) to the --workdir when it changed since the last write."""
        if self.state_path is None:
            return
        state = SavedState(self.status, self.override.model if self.override else None, spec_digest(self.manifest.spec))
        wire = repr((state.status.to_wire(), state.rollback_model, state.file_spec))
        if wire == self._saved:
            return
        try:
            save_state(self.state_path, self.manifest.namespace, self.manifest.name, state)
        except OSError as exc:
            if self._saved is not None:  # said once until a write succeeds again, not every tick
                self.say(
                    "StateNotSaved",
                    f"{self.state_path}: {exc.strerror or exc}; a restart would resume from the last one written",
                    True,
                )
            self._saved = None
            return
        self._saved = wire

    @property
    def spec(self) -> ModelDeploymentSpec:
        return self.override or self.manifest.spec

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, ready_within: float = 180.0) -> None:
        """Bind the router (a taken port fails here, before any model server starts), then serve stable."""
        # The token before the router listens (a control request in between was carried out with none); its file
        # once the port is ours (another run on it keeps its own).
        self.router.token = new_token()
        await self.router.start()
        self._token_path = write_token(self.port, self.router.token)
        await self.collector.start()
        self._session = aiohttp.ClientSession()
        self.say(
            "Started",
            f"router listening on {self.url} (model {self.spec.model.name!r}); labels and records: "
            f"{self.collector.url}",
        )
        self._report(self._resumed)
        await self.tick()
        stable = self.status.stable
        assert stable is not None
        server = self.servers[stable.revision]
        deadline = asyncio.get_running_loop().time() + ready_within
        while not server.ready:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(
                    f"revision {stable.revision} not ready after {ready_within:.0f}s:\n{server.log_tail()}"
                )
            if server.restarts >= MAX_RESTARTS:
                raise RuntimeError(f"revision {stable.revision} keeps failing:\n{server.log_tail()}")
            await asyncio.sleep(0.2)
            await self.tick()

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.tick_seconds)
            if not stop.is_set():
                await self.tick()

    async def stop(self) -> None:
        """Finish in-flight requests, then end every model server's process group, then the collector (the
        servers post their last inference records to it as they stop)."""
        self.say("Stopping", "router stops accepting; in-flight requests finish")
        await self.router.stop()
        await self.commands.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        every = [*self.servers.values(), *self.retiring]  # a cancelled drain has not stopped its server
        await asyncio.gather(*(self._stop_server(s) for s in every), return_exceptions=True)
        self.servers.clear()
        self.retiring.clear()
        await self.collector.stop()
        if self._session is not None:
            await self._session.close()
        if self._token_path is not None and self.router.token is not None:
            remove_token(self._token_path, self.router.token)
        self.discard_workdir()
        self.say("Stopped", "every model server has exited")

    def discard_workdir(self) -> None:
        """Remove the temporary folder this run made (a --workdir given by the user stays)."""
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- reporting ---------------------------------------------------------------------------------------

    def say(self, reason: str, message: str, warning: bool = False) -> None:
        event = Event(datetime.now(UTC).strftime("%H:%M:%S"), reason, message, warning)
        self.timeline.append(event)
        self.log(f"{event.at}  {'!' if warning else ' '} {reason:<20} {message}")

    def status_view(self) -> dict[str, Any]:
        """What `esteira status` and `GET /status` show."""
        canary = self.status.canary
        return {
            "name": self.manifest.name,
            "model": self.spec.model.name,
            "phase": self.phase(),
            "url": self.url,
            "weights": {
                str(self.status.stable.revision if self.status.stable else 0): 100 - (canary.weight if canary else 0),
                **({str(canary.revision): canary.weight} if canary else {}),
            },
            "status": self.status.to_wire(),
            "servers": {
                str(r): {
                    "ready": s.ready,
                    "restarts": s.restarts,
                    "pgid": s.pgid,
                    "version": s.model_version,
                    "runtime": s.runtime,
                    "metrics": self.scrape_url(s),  # its series as its pod serves them, for a Prometheus to scrape
                }
                for r, s in self.servers.items()
            },
            "timeline": [e.__dict__ for e in self.timeline[-50:]],
        }

    def scrape_url(self, server: ModelServer) -> str | None:
        """Where a Prometheus scrapes a model server's series as its pod serves them: TorchServe's on the router,
        which adds what the pod's front counts; esteira-kserve's on its own port."""
        if isinstance(server, TorchServeServer):
            return f"{self.url}/servers/{server.revision}/metrics" if server.metrics_address() else None
        return server.metrics_url

    def scrape_targets(self) -> list[dict[str, Any]]:
        """Each model server's series as Prometheus' HTTP service discovery lists targets, labelled with the
        namespace the operator's queries select, as a pod's scrape labels them, and each with an instance of its own
        (TorchServe's share the router's address, and their series without a revision label merged); a draining
        server's too, as a terminating pod is scraped until it is gone."""
        targets = []
        for server in sorted([*self.servers.values(), *self.retiring], key=lambda server: server.revision):
            url = self.scrape_url(server)
            if url is not None:
                where = urlsplit(url)
                labels = {
                    "__metrics_path__": where.path,
                    "instance": f"{where.netloc}{where.path}",
                    "namespace": self.manifest.namespace,
                }
                targets.append({"targets": [where.netloc], "labels": labels})
        return targets

    def phase(self) -> str:
        stable = self.status.stable
        if stable is None:
            return "Pending"
        return phase_of(self.spec, self.status, self._serving(stable.revision))

    def _serving(self, revision: int) -> Serving:
        server = self.servers.get(revision)
        if server is not None and server.ready:
            return "ready"
        if server is not None and server.restarts >= MAX_RESTARTS:
            return "failed"
        return "pending"

    # --- the tick ----------------------------------------------------------------------------------------

    def _stamp(self) -> tuple[int, int]:
        try:
            stat = self.path.stat()
        except OSError:
            return (0, 0)
        return (stat.st_mtime_ns, stat.st_size)

    def _reload(self) -> None:
        stamp = self._stamp()
        if stamp == self._seen:
            return
        self._seen = stamp
        try:
            manifest = load_manifest(self.path)
            self._check_runtime(manifest.spec)
        except (OSError, ValueError, RecursionError) as exc:  # InvalidSpec lists every problem; YAML nested deep
            self.say("InvalidSpec", f"{self.path}: {exc}; still running the last valid spec", True)
            return
        except RuntimeUnavailable as exc:
            self.say("RuntimeUnavailable", f"{self.path}: {exc}; still running the last valid spec", True)
            return
        if manifest.spec != self.manifest.spec:
            self.override = None
            self.manifest = manifest
            self.say(
                "SpecChanged",
                f"{self.path.name}: model {manifest.spec.model.version} ({manifest.spec.model.storage_uri})",
            )

    def provider(self) -> MetricProvider:
        url = self.spec.monitoring.prometheus_url
        inner: MetricProvider = PrometheusProvider(PrometheusClient(url)) if url else self.local_provider
        return WithQuality(inner, self.collector.tallies)  # labelled predictions from the built-in collector

    async def tick(self, command: Command | None = None) -> list[Decision]:
        async with self._lock:
            return await self._tick(command)

    async def _tick(self, command: Command | None) -> list[Decision]:
        self._reload()
        spec, now = self.spec, _now()
        self._supervise()
        canary, stable = self.status.canary, self.status.stable
        evidence, error = None, None
        if canary is not None and stable is not None and analysis_due(spec, self.status, now):
            try:
                evidence = await self.provider().collect(
                    self.manifest.namespace, self.manifest.name, spec, stable.revision, canary.revision
                )
            except MetricsUnavailable as exc:
                error = str(exc)
        before = (canary.weight, canary.mirroring, canary.paused) if canary else None
        self._report(await self._monitor(spec, now))  # before the step: BlockRollouts reads it
        out = rollout_step(
            RolloutInput(
                spec=spec,
                status=self.status,
                now=now,
                route=self._observed_route(),
                evidence=evidence,
                metrics_error=error,
                command=command,
            )
        )
        held = (canary.hold, canary.pause_reason) if canary else None
        self.status = out.status
        self._report(out.decisions)
        self._report_extension(held)
        self._ensure_servers()
        after, stable = self.status.canary, self.status.stable
        # A step began, or a pause ended (its traffic is judged from the resume on, as the operator's window is)
        if after is not None and stable is not None and (after.weight, after.mirroring, after.paused) != before:
            with contextlib.suppress(MetricsUnavailable):
                await self.local_provider.mark(stable.revision, after.revision)
        self._apply_split()
        await self._retire_servers()
        decisions = out.decisions + await self._retrain(now)
        self._save()
        return decisions

    async def _retrain(self, now: datetime) -> list[Decision]:
        """spec.retraining here: the same planning as the operator's, a command where a cluster runs a Job."""
        if self.spec.retraining is None:
            return []
        ctx = RenderContext(self.manifest.name, self.manifest.namespace, collector_url=self.collector.url)
        export = (
            f"{self.collector.url}{COLLECTOR_EXPORT_PATH}?deployment={self.manifest.name}"
            f"&namespace={self.manifest.namespace}"
        )
        plan = plan_retraining(
            ctx,
            self.spec,
            self.status,
            self.commands.jobs(),
            now,
            labelled_data=export,
            stable_accuracy=await self._stable_accuracy(),
            runs_commands=True,
        )
        for run in plan.commands:
            log = await self.commands.start(
                self.manifest.name, run, self.spec.retraining.command or [], self.path.parent
            )
            self.say(
                "RetrainingStarted",
                f"retraining run {run.run}: {' '.join(self.spec.retraining.command or [])} (log: {log})",
            )
        self._report(plan.decisions)
        return plan.decisions

    async def _stable_accuracy(self) -> Tally | None:
        """Stable's labelled predictions over retraining.triggers.accuracyWindow in the built-in collector, for
        triggers.accuracyBelow, read at most every ``ACCURACY_READ_SECONDS`` as the operator reads them (not on
        every tick); None when not asked for or not due."""
        retraining, stable = self.spec.retraining, self.status.stable
        if retraining is None or retraining.triggers.accuracy_below is None or stable is None:
            return None
        if time.monotonic() - self._accuracy_read < ACCURACY_READ_SECONDS:
            return None
        self._accuracy_read = time.monotonic()
        window = int(parse_duration(retraining.triggers.accuracy_window).total_seconds())
        return await self.collector.tallies(self.manifest.namespace, self.manifest.name, stable.revision, window)

    def _observed_route(self) -> ObservedRoute:
        """The local router's split and the canary server's readiness, as the step expects a backend's report."""
        canary = self.status.canary
        if canary is None:
            return ObservedRoute(None)
        server = self.servers.get(canary.revision)
        split = self.router.split
        weight = split.weight if split is not None and split.canary == canary.revision else 0
        return ObservedRoute(canary.revision, server is not None and server.ready, weight)

    def _report(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            self.say(decision.reason, decision.message, decision.warning)

    def _report_extension(self, before: tuple[str | None, str | None] | None) -> None:
        """A step extended for want of traffic is no decision, so it is logged here, once per new message."""
        canary = self.status.canary
        if canary is None or canary.hold != "ExtendingStep" or (canary.hold, canary.pause_reason) == before:
            return
        self.say("ExtendingStep", f"canary revision {canary.revision}: {canary.pause_reason}")

    # --- model servers -----------------------------------------------------------------------------------

    def _wanted(self) -> dict[int, tuple[str, str]]:
        wanted = {}
        for record in (self.status.stable, self.status.canary):
            if record is not None:
                wanted[record.revision] = (record.model_version, record.storage_uri)
        return wanted

    def _check_runtime(self, spec: ModelDeploymentSpec) -> None:
        """Find the esteira-kserve runtime's Python when the spec asks for it (RuntimeUnavailable: none here)."""
        if spec.model.runtime == ESTEIRA_KSERVE_RUNTIME and self.kserve_python is None:
            self.kserve_python = find_kserve_python(self._kserve_python_option)

    def _new_server(self, revision: int, version: str, uri: str) -> ModelServer:
        """The spec's runtime for a new revision: esteira-kserve when it says so, TorchServe otherwise."""
        served = (
            revision,
            self.spec.model.name,
            version,
            model_dir(uri),
            self.workdir / f"revision-{revision}",
            self.spec,
            self.collector.env(self.spec, self.manifest.namespace, self.manifest.name),
        )
        if self.spec.model.runtime == ESTEIRA_KSERVE_RUNTIME:
            assert self.kserve_python is not None  # _check_runtime accepted this spec
            return KServeServer(*served, python=self.kserve_python)
        return TorchServeServer(*served)

    def _ensure_servers(self) -> None:
        for revision, (version, uri) in self._wanted().items():
            if revision not in self.servers:
                server = self._new_server(revision, version, uri)
                self.servers[revision] = server
                if isinstance(server, TorchServeServer):  # a pod serves it behind Esteira's front: the router is that
                    identity = Identity(server.model_name, server.model_version, str(revision))
                    labels = model_labels(identity, socket.gethostname())
                    self.router.stand_in_front(revision, labels, server.metrics_address)
                self._describe(revision, version, server.model_dir)
                self._spawn(self._bring_up(server, "Starting"))

    def _describe(self, revision: int, version: str, folder: Path) -> None:
        """Tell the router which model version and config a revision serves (for metadata and /versions)."""
        try:
            config = served_model(folder).config
        except (OSError, ValueError, RuntimeError) as exc:  # ConfigError is a RuntimeError
            self.say("MetadataUnavailable", f"revision {revision}: {exc}", True)
            config = None
        self.router.describe(revision, version, config)

    def _supervise(self) -> None:
        """A model server that exited without being asked is reported and started again; one that runs, though the
        router took it out after a request it did not answer, goes back once it answers its readiness check."""
        for server in self.servers.values():
            code = server.exited()
            if code is None:
                self._reinstate_if_taken_out(server)
                continue
            if server.stopping or server.restarts >= MAX_RESTARTS:
                continue
            server.ready = False
            self.router.set_backend(server.revision, None)
            if server.lost_a_port() and server.port_retries < MAX_PORT_RETRIES:
                server.port_retries += 1
                self.say(
                    "PortTaken",
                    f"revision {server.revision} {server.runtime} found a port picked for it taken by another "
                    "process; starting it again on fresh ports",
                    True,
                )
                self._relaunch(server)
                continue
            if server.ready_since is not None and time.monotonic() - server.ready_since >= STEADY_SECONDS:
                server.restarts = 0  # it served steadily since its last crash: this one starts a new count
            server.restarts += 1
            message = f"revision {server.revision} {server.runtime} {server.how_it_ended()}; restart {server.restarts}"
            if server.restarts >= MAX_RESTARTS:
                self.say("ServerFailed", f"{message}: giving up, see {server.log_path}", True)
                continue
            self.say("ServerCrashed", message, True)
            self._relaunch(server)

    def _reinstate_if_taken_out(self, server: ModelServer) -> None:
        """The router takes a revision out when its server leaves a request unanswered (refused, dropped, silent),
        and only a restart put it back: one dropped connection, or one request slower than the router waits, took
        a server that still ran out of the split for good."""
        taken_out = server.ready and not server.stopping and not self.router.backends.get(server.revision)
        if taken_out and server.revision not in self._probing:
            self._probing.add(server.revision)
            self._spawn(self._reinstate(server))

    async def _reinstate(self, server: ModelServer) -> None:
        assert self._session is not None
        try:
            answers = await server.check_ready(self._session)
        finally:
            self._probing.discard(server.revision)
        still_out = server.ready and not server.stopping and not self.router.backends.get(server.revision)
        if answers and still_out and self.servers.get(server.revision) is server:
            self.router.set_backend(server.revision, server.url, server.at_once, server.joining)
            self.say("ServerReinstated", f"revision {server.revision} answers its readiness check again: it serves")

    def _relaunch(self, server: ModelServer) -> None:
        server.stopping = True  # until the relaunch, so the next tick does not count it again
        self._spawn(self._bring_up(server, "Restarting"))

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _bring_up(self, server: ModelServer, verb: str) -> None:
        assert self._session is not None
        await server.stop()
        if self.servers.get(server.revision) is not server:  # retired meanwhile: nothing would track a new start
            return
        try:
            await server.launch()
        except Exception as exc:  # a folder gone, a binary missing: no restart mends it, so it is given up at once
            server.stopping, server.restarts = False, MAX_RESTARTS
            self.say("ServerFailed", f"revision {server.revision} {server.runtime} could not start: {exc}", True)
            return
        self.say(
            verb,
            f"revision {server.revision} (model {server.model_version}) {server.runtime} on {server.listening()}, "
            f"pgid {server.pgid}",
        )
        while True:
            try:
                await server.wait_ready(self._session)
                break
            except StillStarting as exc:  # it runs: it serves once ready, as a pod does (a deadline judges a canary)
                self.say("ServerNotReady", f"{exc}; still waiting for it", True)
            except RuntimeError as exc:
                self.say("ServerNotReady", str(exc).splitlines()[0], True)
                return
        self.router.set_backend(server.revision, server.url, server.at_once, server.joining)
        self.say("ServerReady", f"revision {server.revision} (model {server.model_version}) is ready")

    def _ready(self, revision: int) -> bool:
        server = self.servers.get(revision)
        return server is not None and server.ready

    def _apply_split(self) -> None:
        """Traffic moves only to a ready server: until the new stable is ready, the one serving now stands in."""
        stable, canary = self.status.stable, self.status.canary
        if stable is None:
            self.router.set_split(None, False)
            return
        serving = self.router.split
        primary = stable.revision
        if not self._ready(primary) and serving is not None and self._ready(serving.stable):
            primary = serving.stable
        arm = canary.revision if canary and self._ready(canary.revision) and canary.revision != primary else None
        mirroring = canary is not None and canary.mirroring
        self.router.set_split(Split(primary, arm, canary.weight if canary else 0), mirroring)
        self.router.set_timeout(self.spec.timeout_seconds)

    async def _retire_servers(self) -> None:
        """A server leaves once no step wants it and the router no longer sends it traffic; it drains first."""
        serving = set(self.router.split.revisions) if self.router.split else set()
        wanted = self._wanted().keys() | serving
        for revision in [r for r in self.servers if r not in wanted]:
            server = self.servers.pop(revision)
            self.retiring.append(server)
            self.say("Stopping", f"revision {revision} (model {server.model_version}) no longer serves traffic")
            self._spawn(self._drain_and_stop(server))

    def _grace_seconds(self) -> float:
        """``spec.termination.gracePeriodSeconds`` (else Kubernetes' default): as a pod's grace period bounds its
        drain and its server's stop, this bounds a retiring server's requests in flight and its stop together.
        ``drainSeconds`` has no part here: it waits for a cluster's endpoints to go, and the router stops sending
        to a retiring server at once."""
        termination = self.spec.termination
        if termination is None or termination.grace_period_seconds is None:
            return float(DEFAULT_GRACE_PERIOD_SECONDS)
        return float(termination.grace_period_seconds)

    async def _drain_and_stop(self, server: ModelServer) -> None:
        """Let the requests already sent to this server finish, then stop it, both within the grace period."""
        grace = self._grace_seconds()
        deadline = time.monotonic() + grace
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.router.drained(server.revision), grace)
        self.router.set_backend(server.revision, None)
        await server.stop(grace=max(0.0, deadline - time.monotonic()))
        self.retiring = [s for s in self.retiring if s is not server]
        if server.revision not in self.servers:  # gone as a pod goes: nothing left to scrape
            self.router.forget_front(server.revision)

    async def _stop_server(self, server: ModelServer) -> None:
        await server.stop(grace=self._grace_seconds())

    async def _monitor(self, spec: ModelDeploymentSpec, now: datetime) -> list[Decision]:
        """spec.monitoring.drift on the stable server's own counters, judged as the operator judges them."""
        revision, window, error = drift_due(spec, self.status, now), None, None
        server = self.servers.get(revision) if revision is not None else None
        if revision is not None and spec.monitoring.drift is not None:
            try:
                if server is None or server.metrics_url is None or self._session is None:
                    raise MetricsUnavailable(f"revision {revision} has no model server")
                launch, timeout = server.launches, aiohttp.ClientTimeout(total=5)
                async with self._session.get(server.metrics_url, timeout=timeout) as response:
                    totals = drift_totals(await response.text(), revision, launch=launch)
                if server.launches != launch:
                    raise MetricsUnavailable(
                        f"revision {revision}'s model server restarted while its counters were read"
                    )
                span = parse_duration(spec.monitoring.drift.window)
                window = self.drift_readings.window(revision, now, totals, span)
            except (MetricsUnavailable, aiohttp.ClientError, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
        return monitor(spec, self.status, format_time(now), None, window, error)

    async def _read_counters(self, revision: int) -> Counters:
        server = self.servers.get(revision)
        if server is None or server.metrics_url is None or self._session is None:
            raise MetricsUnavailable(f"revision {revision} has no model server")
        launch = server.launches
        async with self._session.get(server.metrics_url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            text = await response.text()
        if server.launches != launch:
            raise MetricsUnavailable(f"revision {revision}'s model server restarted while its counters were read")
        arm = self.router.arm(revision).counters()
        return Counters(outcomes=arm.outcomes, buckets=arm.buckets, classes=class_counts(text, revision), launch=launch)

    # --- commands ----------------------------------------------------------------------------------------

    async def control(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """A person's command, carried out at once by the engine; answers its decisions and the status."""
        if action not in ACTIONS:
            raise ValueError(f"unknown command {action[:50]!r}; use one of {', '.join(ACTIONS)}")
        unknown = sorted(str(key)[:50] for key in args if key not in ("full", "revision"))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; a command takes 'full' and 'revision'")
        if not isinstance(args.get("full", False), bool):
            raise ValueError("'full' must be true or false")
        revision = args.get("revision")
        if revision is not None and (isinstance(revision, bool) or not isinstance(revision, int)):
            raise ValueError("'revision' must be an integer")
        if action == "rollback":
            if not isinstance(revision, int):
                raise ValueError("rollback needs an integer revision")
            self._rollback_build(revision)
        command = Command(
            id=uuid.uuid4().hex,
            action=action,
            full=bool(args.get("full")),
            revision=revision,
        )
        self.say(
            "Command", f"{action}{' --full' if command.full else ''}{f' to revision {revision}' if revision else ''}"
        )
        decisions = await self.tick(command)
        return {
            "decisions": [{"reason": d.reason, "message": d.message} for d in decisions],
            "status": self.status_view(),
        }

    def _rollback_build(self, revision: int) -> None:
        """The spec used until the file changes: the model build that revision `revision` served."""
        records = [*self.status.history, self.status.stable, self.status.last_rollout]
        for record in records:
            if record is not None and record.revision == revision:
                if problems := storage_problems(record.storage_uri, self.spec.model.name):  # gone since, say
                    raise ValueError(f"revision {revision}'s build cannot be served again: {problems[0]}")
                # Its card too: the new stable revision records it, and the retraining gate scores against it.
                card = getattr(record, "card", None)  # a last rollout's record keeps none
                model = self.spec.model.model_copy(
                    update={"version": record.model_version, "storage_uri": record.storage_uri, "card": card}
                )
                self.override = self.spec.model_copy(update={"model": model})
                return
        raise ValueError(f"revision {revision} is not in the history")

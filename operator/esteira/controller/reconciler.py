"""Reads a ModelDeployment and its InferenceService, plans, applies, and reports the decisions."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import kopf

from esteira.api.command import RolloutCommandSpec, RolloutCommandStatus, parse_command
from esteira.api.errors import InvalidSpec
from esteira.api.spec import ModelDeploymentSpec
from esteira.api.status import ModelDeploymentStatus
from esteira.controller import telemetry
from esteira.controller.collector_link import ANNOTATION_REQUESTER, Asked, CollectorLink
from esteira.controller.kube import KubeAPI
from esteira.controller.observed import FULL_READ_SECONDS, FullReads, Observed, retrains
from esteira.controller.retry import ApiError, with_backoff
from esteira.controller.webhooks import WebhookFailed, post_cloud_event
from esteira.drift.evaluate import DriftWindow
from esteira.evidence.drift import drift_window
from esteira.evidence.prometheus import PrometheusAuth, PrometheusClient, PrometheusProvider
from esteira.evidence.quality import WithQuality, prometheus_tallies
from esteira.quality.scores import Tally
from esteira.rollout.engine import analysis_due
from esteira.rollout.evidence import Evidence, MetricsUnavailable
from esteira.rollout.queries import MetricNames, Scope, drift_queries
from esteira.routing import key_of
from esteira.state.monitoring import drift_due
from esteira.state.reconcile import ReconcileInput, ReconcilePlan, Result, plan_reconcile
from esteira.state.retrain import ACCURACY_READ_SECONDS, end_before_start, record_delivery
from esteira.vocabulary import (
    COMMAND_ANNOTATION,
    DEFAULT_INGRESS_DOMAIN,
    LABEL_PROMETHEUS_AUTH,
    LABEL_RETRAIN_RUN,
    Command,
    Decision,
    format_time,
    parse_duration,
    parse_time,
)

logger = logging.getLogger(__name__)
# How long a list of a namespace's RolloutCommands that found none open stands in for the next ones. Every
# RolloutCommand event voids it at once, so this bounds only a command whose event the operator never saw.
NO_OPEN_COMMANDS_SECONDS = 300.0


class Reconciler:
    """One per operator: serialises work per ModelDeployment so event- and timer-driven runs never race."""

    def __init__(
        self,
        api: KubeAPI,
        prometheus_url: str | None,
        prometheus_auth_dir: Path | None = None,
        full_read_seconds: float = FULL_READ_SECONDS,
        ingress_domain: str = DEFAULT_INGRESS_DOMAIN,
    ) -> None:
        self.api = api
        self.prometheus_url = prometheus_url
        self.ingress_domain = ingress_domain
        self.prometheus_auth_dir = prometheus_auth_dir
        self.full_reads = FullReads(full_read_seconds)
        self.collector = CollectorLink.from_env()
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._in_flight: Counter[tuple[str, str]] = Counter()  # reconciles holding or waiting for each lock
        self._command_events: defaultdict[str, int] = defaultdict(int)  # namespace -> RolloutCommand events seen
        # namespace -> (when, events seen before) a list of its RolloutCommands found none open
        self._no_open_commands: dict[str, tuple[float, int]] = {}
        # (namespace, name) -> when (monotonic) stable's accuracy was last read, of which revision, and what it was
        self._accuracy_read: dict[tuple[str, str], tuple[float, int | None, Tally | None]] = {}
        self._refused: dict[tuple[str, str], str] = {}  # (namespace, name) -> the child writes last refused
        # (namespace, name) -> when (monotonic) its last plan's next time-based work is due, and whether it rolls out
        self._due: dict[tuple[str, str], tuple[float, bool]] = {}

    def command_event(self, namespace: str) -> None:
        """A RolloutCommand of ``namespace`` changed: the next reconcile there lists them again."""
        self._command_events[namespace] += 1
        self._no_open_commands.pop(namespace, None)

    def forget(self, namespace: str, name: str) -> None:
        """Drop a gone object's bookkeeping. Its lock stays while a reconcile holds or waits for it (that one
        finds the object gone and forgets it then): dropped, a ModelDeployment made again under the name could
        be reconciled twice at once."""
        if (namespace, name) not in self._in_flight:
            self._locks.pop((namespace, name), None)
        self._accuracy_read.pop((namespace, name), None)
        self._refused.pop((namespace, name), None)
        self._due.pop((namespace, name), None)
        self.full_reads.forget((namespace, name))
        telemetry.forget_deployment(namespace, name)

    def due(self, namespace: str, name: str) -> tuple[float, bool] | None:
        """Seconds until the last plan's next time-based work (a drift evaluation, an analysis), and whether the
        object rolls out; None when nothing is due."""
        due = self._due.get((namespace, name))
        return None if due is None else (due[0] - time.monotonic(), due[1])

    async def reconcile(
        self,
        namespace: str,
        name: str,
        watched: Observed | None = None,
        started: Callable[[], None] | None = None,
    ) -> Result | None:
        """Bring one ModelDeployment's children and status in line; None when the object is gone (and then its
        bookkeeping goes). With ``watched`` (what the watches delivered), nothing is read from the API server
        unless the plan acts (:mod:`esteira.controller.observed`). ``started`` is called once this reconcile
        holds the object, before it reads anything."""
        began, key = time.perf_counter(), (namespace, name)
        self._in_flight[key] += 1
        try:
            async with self._locks[key]:
                if started is not None:
                    started()
                result = await self._reconcile(namespace, name, watched)
        except ApiError:
            telemetry.RECONCILES.labels("error").inc()
            raise
        finally:
            telemetry.RECONCILE_SECONDS.observe(time.perf_counter() - began)
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]
        if result is None:  # gone: its children's deletion events each made its lock again, for good
            self.forget(namespace, name)
            return None
        telemetry.RECONCILES.labels(result).inc()
        return result

    async def _read(self, namespace: str, name: str) -> Observed | None:
        """The ModelDeployment, its children and its retraining Jobs from the API server; None when it is gone."""
        md = await with_backoff(lambda: self.api.get_model_deployment(namespace, name), "read ModelDeployment")
        if md is None:
            return None
        objects = await with_backoff(lambda: self.api.list_children(namespace, name), "list children")
        jobs: dict[str, dict[str, Any]] = {}
        if retrains(md):
            jobs = await with_backoff(lambda: self.api.list_retrain_jobs(namespace, name), "list retraining Jobs")
        self.full_reads.read((namespace, name))
        return Observed(md, objects, jobs)

    def _plannable(self, namespace: str, name: str, watched: Observed | None) -> Observed | None:
        """``watched`` when a plan may start from it: the API server was read recently enough."""
        return None if watched is None or self.full_reads.due((namespace, name)) else watched

    async def _reconcile(
        self, namespace: str, name: str, watched: Observed | None = None, read: Observed | None = None
    ) -> Result | None:
        """Plan from ``watched`` (what the watches delivered) when it may be, else from ``read`` or a fresh read."""
        watched = self._plannable(namespace, name, watched)
        state = watched or read or await self._read(namespace, name)
        if state is None or state.md["metadata"].get("deletionTimestamp"):
            return None
        md = state.md
        pending = await self._pending_command(namespace, name)
        now = format_time(datetime.now(UTC))
        parsed = _parsed(md)
        evidence, metrics_error = await self._evidence(md, parsed, now)
        drift, drift_error = await self._drift(md, parsed, now)
        stable_accuracy = await self._stable_accuracy(md, parsed)
        plan = plan_reconcile(
            ReconcileInput(
                name=name,
                namespace=namespace,
                generation=md["metadata"].get("generation"),
                spec=md.get("spec") or {},
                status=md.get("status") or {},
                objects=state.children,
                now=now,
                prometheus_url=self.prometheus_url,
                collector_url=self.collector.url,
                ingress_domain=self.ingress_domain,
                evidence=evidence,
                metrics_error=metrics_error,
                drift=drift,
                drift_error=drift_error,
                command=pending.command if pending else read_command(md),
                retrain_jobs=state.jobs,
                stable_accuracy=stable_accuracy,
                owner_uid=md["metadata"].get("uid"),
            )
        )
        if watched is not None and (pending is not None or acts(plan)):
            current = await self._read(namespace, name)  # a plan that acts is applied to what the API server has
            if current is None:
                return None
            if not watched.matches(current):
                telemetry.RECONCILE_READS.labels("stale").inc()
                return await self._reconcile(namespace, name, read=current)  # planned again from what was read
            md, watched = current.md, None
        telemetry.RECONCILE_READS.labels("api" if watched is None else "watch").inc()
        await self._apply(md, plan, asked_for(md, pending, plan))  # nothing to write when planned from the watch
        telemetry.record_status(namespace, name, plan.status)
        if plan.requeue_after is None:
            self._due.pop((namespace, name), None)
        else:
            self._due[(namespace, name)] = (time.monotonic() + plan.requeue_after, bool(plan.status.get("canary")))
        if pending is not None:
            await self._finish_command(md, pending, plan, now)
        if drift is not None or drift_error is not None:
            self._record_drift(namespace, name, plan.status, drift_error)
        return plan.result

    async def _prometheus(
        self, md: dict[str, Any], spec: ModelDeploymentSpec
    ) -> tuple[PrometheusClient | None, str | None]:
        """The spec's Prometheus (or the operator's) with its credentials, or why there is none."""
        url = spec.monitoring.prometheus_url or self.prometheus_url
        if not url:
            return None, "no Prometheus URL: set spec.monitoring.prometheusUrl or the operator's --prometheus-url"
        try:
            auth = await self._prometheus_auth(md["metadata"]["namespace"], spec)
        except CredentialsUnavailable as exc:
            return None, str(exc)
        return PrometheusClient(url, auth=auth), None

    async def _evidence(
        self, md: dict[str, Any], parsed: Parsed | None, now: str
    ) -> tuple[Evidence | None, str | None]:
        """Query the metrics only when an analysis is due; a failure becomes the engine's reason to hold."""
        if parsed is None:
            return None, None
        spec, status = parsed
        if status.canary is None or status.stable is None or not analysis_due(spec, status, parse_time(now)):
            return None, None
        client, unavailable = await self._prometheus(md, spec)
        if client is None:
            return None, unavailable
        provider = WithQuality(PrometheusProvider(client), prometheus_tallies(client))
        try:
            evidence = await provider.collect(
                md["metadata"]["namespace"],
                md["metadata"]["name"],
                spec,
                status.stable.revision,
                status.canary.revision,
            )
        except MetricsUnavailable as exc:
            return None, str(exc)
        except Exception as exc:  # a fault of its own holds the analysis; raised, it stopped commands too (abort)
            logger.exception(
                "gathering the evidence of %s/%s failed", md["metadata"]["namespace"], md["metadata"]["name"]
            )
            return None, f"gathering the evidence failed: {type(exc).__name__}"
        return evidence, None

    async def _stable_accuracy(self, md: dict[str, Any], parsed: Parsed | None) -> Tally | None:
        """Stable's labelled predictions over retraining.triggers.accuracyWindow, for triggers.accuracyBelow, read
        at most every ``ACCURACY_READ_SECONDS``, the last reading standing between reads (a reading dropped with
        a plan made again, or not applied, waited a whole interval); None when not asked for or not readable (an
        incident is never made of missing figures)."""
        if parsed is None:
            return None
        spec, status = parsed
        triggers = spec.retraining.triggers if spec.retraining else None
        if triggers is None or triggers.accuracy_below is None or status.stable is None:
            return None
        key, revision = (md["metadata"]["namespace"], md["metadata"]["name"]), status.stable.revision
        when, read_revision, tally = self._accuracy_read.get(key, (-ACCURACY_READ_SECONDS, None, None))
        if read_revision == revision and time.monotonic() - when < ACCURACY_READ_SECONDS:
            return tally
        self._accuracy_read[key] = (time.monotonic(), revision, None)
        client, _ = await self._prometheus(md, spec)
        if client is None:
            return None
        window = int(parse_duration(triggers.accuracy_window).total_seconds())
        try:
            tally = await prometheus_tallies(client)(*key, revision, window)
        except MetricsUnavailable as exc:
            logger.warning("stable's labelled accuracy of %s/%s could not be read: %s", *key, exc)
            return None
        self._accuracy_read[key] = (time.monotonic(), revision, tally)
        return tally

    async def _prometheus_auth(self, namespace: str, spec: ModelDeploymentSpec) -> PrometheusAuth | None:
        """The spec's Secret, or the operator's own credentials, which only ever go to the operator's own URL."""
        ref = spec.monitoring.prometheus_auth
        if ref is None:
            if spec.monitoring.prometheus_url or self.prometheus_auth_dir is None:
                return None
            try:
                return PrometheusAuth.from_directory(self.prometheus_auth_dir)
            except (OSError, ValueError) as exc:
                raise CredentialsUnavailable(f"the operator's --prometheus-auth-dir: {exc}") from None
        name = ref.secret_ref.name
        where = f"spec.monitoring.prometheusAuth.secretRef: Secret {name}"
        try:
            labels, data = await with_backoff(lambda: self.api.read_secret(namespace, name), "read Secret")
        except ApiError as exc:
            reason = {404: "not found", 403: "the operator may not read it (see the chart's RBAC)"}
            raise CredentialsUnavailable(f"{where}: {reason.get(exc.status, str(exc))}") from None
        if labels.get(LABEL_PROMETHEUS_AUTH) != "true":
            raise CredentialsUnavailable(f'{where} lacks the label {LABEL_PROMETHEUS_AUTH}: "true"')
        try:
            return PrometheusAuth.from_mapping(data)
        except ValueError as exc:
            raise CredentialsUnavailable(f"{where}: {exc}") from None

    async def _drift(
        self, md: dict[str, Any], parsed: Parsed | None, now: str
    ) -> tuple[DriftWindow | None, str | None]:
        """The stable revision's drift window when an evaluation is due; a failure is recorded, not raised."""
        if parsed is None:
            return None, None
        spec, status = parsed
        revision = drift_due(spec, status, parse_time(now))
        if revision is None or spec.monitoring.drift is None:
            return None, None
        client, unavailable = await self._prometheus(md, spec)
        if client is None:
            return None, unavailable
        names = MetricNames()
        scope = Scope(md["metadata"]["namespace"], md["metadata"]["name"], spec.model.name)
        queries = drift_queries(names, scope, revision, spec.monitoring.drift.window)
        try:
            async with client.session() as session:
                return await drift_window(client, session, queries, names), None
        except MetricsUnavailable as exc:
            return None, str(exc)

    @staticmethod
    def _record_drift(namespace: str, name: str, status: dict[str, Any], error: str | None) -> None:
        if error is not None:
            telemetry.DRIFT_EVALUATION_ERRORS.inc()
            return
        monitoring = ModelDeploymentStatus.model_validate(status).monitoring
        if monitoring is None:
            return
        telemetry.DRIFT_EVALUATIONS.labels(monitoring.verdict).inc()
        telemetry.record_drift(namespace, name, {f.name: f.score for f in monitoring.features if f.score is not None})

    async def _pending_command(self, namespace: str, name: str) -> PendingCommand | None:
        """The oldest RolloutCommand for this ModelDeployment that has no outcome yet.

        Listed afresh unless a recent list found none open in the namespace and no RolloutCommand event came
        since (one comes for every command created): most reconciles, resyncs above all, find none, and the list
        was a quarter of their reads. Only the absence of open commands is remembered, never a command, so none
        is carried out twice."""
        events = self._command_events[namespace]
        known = self._no_open_commands.get(namespace)
        if known is not None and known[1] == events and time.monotonic() - known[0] < NO_OPEN_COMMANDS_SECONDS:
            return None
        items = await with_backoff(lambda: self.api.list_rollout_commands(namespace), "list RolloutCommands")
        waiting: list[tuple[str, str, str, RolloutCommandSpec]] = []
        open_anywhere = False
        for item in items:
            meta = item.get("metadata") or {}
            try:
                spec, outcome = parse_command(item)
            except ValueError:
                continue  # the CRD's schema keeps such objects out
            open_anywhere = open_anywhere or outcome is None
            if spec.deployment == name and outcome is None:
                waiting.append(
                    (meta.get("creationTimestamp") or "", meta["name"], meta.get("uid") or meta["name"], spec)
                )
        if not open_anywhere and self._command_events[namespace] == events:  # no event while the list was read
            self._no_open_commands[namespace] = (time.monotonic(), events)
        if not waiting:
            return None
        _, command_name, uid, spec = min(waiting, key=lambda entry: entry[:2])
        return PendingCommand(command_name, spec, spec.command(uid))

    async def _finish_command(self, md: dict[str, Any], pending: PendingCommand, plan: ReconcilePlan, now: str) -> None:
        """Record the outcome on the RolloutCommand (who asked is in the CommandReceived Event already)."""
        phase, message = command_outcome(plan, pending.command)
        await self.close_command(md["metadata"]["namespace"], pending.name, phase, message, now)

    async def close_command(self, namespace: str, name: str, phase: str, message: str, now: str) -> None:
        """Write a RolloutCommand's outcome; written once, it is never carried out again."""
        status = RolloutCommandStatus.model_validate({"phase": phase, "message": message[:1024], "completedAt": now})
        await with_backoff(
            lambda: self.api.patch_rollout_command_status(namespace, name, status.to_wire()),
            "patch RolloutCommand status",
        )

    async def _apply(self, md: dict[str, Any], plan: ReconcilePlan, asked: Asked | None = None) -> None:
        """Status first, then the children, then the Events.

        The children are derived from status, so a crash after the status write is finished by the next
        reconcile (which plans the same children again); acting first and crashing before status would let
        the next run undo the step or the rollback from the old status, and carry a command out twice.
        """
        namespace = md["metadata"]["namespace"]
        if plan.status_patch:
            await with_backoff(
                lambda: self.api.patch_model_deployment_status(namespace, md["metadata"]["name"], plan.status_patch),
                "patch ModelDeployment status",
            )
        refused: list[str] = []
        for child in plan.creates:
            kopf.adopt(child, owner=cast(kopf.Body, md))
            what = f"create {child['kind']} {child['metadata']['name']}"
            await _unless_refused(functools.partial(self._create_or_patch, namespace, child), what, refused)
        for key, patch in plan.patches:
            patched = functools.partial(self.api.patch_child, namespace, key, patch)
            await _unless_refused(patched, f"patch {key[1]} {key[2]}", refused, gone_too=False)
        for key, owners in plan.adopt:
            ours: dict[str, Any] = {"metadata": {}}
            kopf.adopt(ours, owner=cast(kopf.Body, md))
            adopted = {"metadata": {"ownerReferences": [*owners, *ours["metadata"]["ownerReferences"]]}}
            adopting = functools.partial(self.api.patch_child, namespace, key, adopted)
            await _unless_refused(adopting, f"adopt {key[1]} {key[2]}", refused, gone_too=False)
        for key in plan.deletes:
            deleting = functools.partial(self.api.delete_child, namespace, key)
            await _unless_refused(deleting, f"delete {key[1]} {key[2]}", refused)
        self._say_refused(md, plan, refused)
        await self._create_retrain_jobs(md, plan)
        await self._send_retrain_events(md, plan)
        decisions = [asked.decision(), *plan.decisions] if asked else plan.decisions
        for decision in decisions:
            if decision.reason in ("Promoted", "RolledBack"):
                telemetry.ROLLOUTS.labels(decision.reason).inc()
            kopf.event(
                cast(kopf.Body, md),
                type="Warning" if decision.warning else "Normal",
                reason=decision.reason,
                message=decision.message,
            )
            log = logger.warning if decision.warning else logger.info
            log("%s/%s %s: %s", namespace, md["metadata"]["name"], decision.reason, decision.message)
        self.collector.record(namespace, md["metadata"]["name"], decisions, asked)

    def _say_refused(self, md: dict[str, Any], plan: ReconcilePlan, refused: list[str]) -> None:
        """A Warning for child writes the API server refused for good (a policy, a webhook, a name held by
        someone else's object), once for as long as the refusals stay the same; the next resync tries again.
        Raised, they were retried every five seconds, each try an error Event, for as long as they lasted."""
        key = (md["metadata"]["namespace"], md["metadata"]["name"])
        said = "; ".join(refused)
        if not refused:
            self._refused.pop(key, None)
        elif self._refused.get(key) != said:
            self._refused[key] = said
            message = f"The API server refused: {said}. Tried again at the next resync"
            plan.decisions.append(Decision("ChildRefused", message, warning=True))

    async def _create_retrain_jobs(self, md: dict[str, Any], plan: ReconcilePlan) -> None:
        """Create each run's Job; one the API server refuses for good (an invalid template, a quota, admission)
        ends its run Failed with the server's message. Raised, it failed every reconcile after the status write,
        and the run stayed Running, holding every later trigger."""
        for job in plan.retrain_jobs:
            kopf.adopt(job, owner=cast(kopf.Body, md))
            try:
                await with_backoff(
                    functools.partial(self.api.create_job, md["metadata"]["namespace"], job), "create Job"
                )
            except ApiError as exc:
                if exc.retryable:
                    raise
                run = int(job["metadata"]["labels"][LABEL_RETRAIN_RUN])
                message = f"Retraining run {run}: the API server refused its Job {job['metadata']['name']}: {exc}"
                await self._end_run(md, plan, run, "Failed", Decision("RetrainingFailed", message, warning=True))

    async def _send_retrain_events(self, md: dict[str, Any], plan: ReconcilePlan) -> None:
        """POST each CloudEvent owed to the spec's webhook and record what came of it (`record_delivery`): the
        run says Sent, or its event is sent again later, or it ends SendFailed; a failure is a Warning."""
        url = str(((md.get("spec") or {}).get("retraining") or {}).get("webhook") or "")
        for event in plan.retrain_events:
            run, failure, final = event["data"]["run"], None, False
            if not owed(plan.status, run):  # its run ended before it was sent (its Job refused)
                continue
            try:
                await post_cloud_event(url, event)
            except WebhookFailed as exc:
                failure, final = str(exc), exc.final
            retraining = plan.status.setdefault("retraining", {})
            runs, decision = record_delivery(retraining.get("runs") or [], run, datetime.now(UTC), failure, final)
            if decision is not None:
                retraining["runs"] = runs
                await self._write_runs(md, plan, run, decision)

    async def _end_run(
        self, md: dict[str, Any], plan: ReconcilePlan, run: int, outcome: str, decision: Decision
    ) -> None:
        """A retraining run that could not start: its outcome and the decision's message in status, and the
        decision said."""
        retraining = plan.status.setdefault("retraining", {})
        retraining["runs"] = end_before_start(retraining.get("runs") or [], run, outcome, decision.message)
        await self._write_runs(md, plan, run, decision)

    async def _write_runs(self, md: dict[str, Any], plan: ReconcilePlan, run: int, decision: Decision) -> None:
        """Write the runs as ``plan.status`` has them now, and say ``decision`` (about run ``run``)."""
        plan.decisions.append(decision)
        retraining = plan.status["retraining"]
        namespace, name = md["metadata"]["namespace"], md["metadata"]["name"]
        await with_backoff(
            functools.partial(
                self.api.patch_model_deployment_status, namespace, name, {"retraining": {"runs": retraining["runs"]}}
            ),
            f"record retraining run {run}: {decision.reason}",
        )

    async def _create_or_patch(self, namespace: str, child: dict[str, Any]) -> None:
        """Create; if a retried create already went through (409 AlreadyExists), patch to the same content."""
        try:
            await self.api.create_child(namespace, child)
        except ApiError as exc:
            if exc.status != 409 or not exc.retryable:  # NameTaken: someone else's
                raise
            metadata = {k: child["metadata"][k] for k in ("labels", "annotations", "ownerReferences")}
            await self.api.patch_child(namespace, key_of(child), {"metadata": metadata, "spec": child["spec"]})


def owed(status: dict[str, Any], run: int) -> bool:
    """Whether run ``run``'s CloudEvent is still owed to the webhook, as ``status`` (wire form) has it."""
    runs = (status.get("retraining") or {}).get("runs") or []
    return any(r.get("run") == run and r.get("webhook") == "Pending" for r in runs)


async def _unless_refused(
    call: Callable[[], Awaitable[Any]], what: str, refused: list[str], gone_too: bool = True
) -> None:
    """``call`` with retries; a refusal for good (a 4xx but 409 and 429) is added to ``refused``, not raised.
    Without ``gone_too``, a 404 is no refusal: the object went meanwhile, and its deletion event reconciles."""
    try:
        await with_backoff(call, what)
    except ApiError as exc:
        if exc.retryable:
            raise
        if exc.status != 404 or gone_too:
            refused.append(f"{what}: {exc}")


def acts(plan: ReconcilePlan) -> bool:
    """Whether applying ``plan`` writes anything: a status, a child, a Job, a webhook call or an Event."""
    return bool(
        plan.status_patch
        or plan.creates
        or plan.patches
        or plan.adopt
        or plan.deletes
        or plan.retrain_jobs
        or plan.retrain_events
        or plan.decisions
    )


@dataclass(frozen=True)
class PendingCommand:
    """A RolloutCommand not carried out yet, as the engine's command."""

    name: str
    spec: RolloutCommandSpec
    command: Command


class CredentialsUnavailable(Exception):
    """Prometheus credentials could not be had; the rollout holds, as for missing metrics."""


def command_outcome(plan: ReconcilePlan, command: Command) -> tuple[str, str]:
    """Done or Ignored, and why, for a command this reconcile was given."""
    carried = plan.status.get("lastCommand") == command.id
    ignored = [d.message for d in plan.decisions if d.reason == "CommandIgnored"]
    phase = "Done" if carried and not ignored else "Ignored"
    said = "; ".join(ignored or [d.message for d in plan.decisions])
    if said:
        return phase, said
    if phase == "Done":
        return phase, f"{command.action} carried out"
    condition: dict[str, Any] = next((c for c in plan.status.get("conditions") or [] if c.get("type") == "Ready"), {})
    why = condition.get("message") or f"the ModelDeployment is {plan.status.get('phase') or 'not ready'}"
    return phase, f"{command.action} not carried out: {why}"


def asked_for(md: dict[str, Any], pending: PendingCommand | None, plan: ReconcilePlan) -> Asked | None:
    """Who asked for the command this reconcile took: a RolloutCommand's requester, or nobody known for the
    annotation (recorded once, when the engine first takes it)."""
    if pending is not None:
        phase, _ = command_outcome(plan, pending.command)
        return Asked(pending.spec.action, pending.spec.requested_by, phase, f"RolloutCommand {pending.name}")
    command = read_command(md)
    if command is None or (md.get("status") or {}).get("lastCommand") == command.id:
        return None
    if plan.status.get("lastCommand") != command.id:
        return None
    return Asked(command.action, ANNOTATION_REQUESTER, command_outcome(plan, command)[0])


Parsed = tuple[ModelDeploymentSpec, ModelDeploymentStatus]


def _parsed(md: dict[str, Any]) -> Parsed | None:
    """Spec and status, read once for the queries a reconcile may make; None when the spec is invalid (the
    planner then reports why, with every field)."""
    try:
        return ModelDeploymentSpec.parse(md.get("spec") or {}), ModelDeploymentStatus.model_validate(
            md.get("status") or {}
        )
    except (InvalidSpec, ValueError):
        return None


def read_command(md: dict[str, Any]) -> Command | None:
    """The last command a person left on the object (`kubectl esteira promote|pause|...` writes it)."""
    raw = ((md.get("metadata") or {}).get("annotations") or {}).get(COMMAND_ANNOTATION)
    if not raw:
        return None
    try:
        return Command.decode(raw)
    except ValueError as exc:
        logger.warning("ignoring unreadable %s annotation %r: %s", COMMAND_ANNOTATION, raw, exc)
        return None

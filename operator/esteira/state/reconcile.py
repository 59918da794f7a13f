"""One reconcile, planned without I/O: the ModelDeployment, its live children and evidence in, actions out.

The adapter (`esteira.controller`) reads the objects (and, when an analysis is due, the metrics), calls
`plan_reconcile`, applies what it returns and posts the decisions as Events. Planning twice on the same
input gives the same plan, which is what makes the operator idempotent across restarts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from esteira import KIND
from esteira.api.errors import InvalidSpec
from esteira.api.spec import ModelDeploymentSpec, check_name
from esteira.api.status import ModelDeploymentStatus
from esteira.drift.evaluate import DriftWindow
from esteira.quality.scores import Tally
from esteira.render.applied import last_applied
from esteira.render.inferenceservice import RenderContext
from esteira.rollout.cycle import rollout_step
from esteira.rollout.evidence import Evidence
from esteira.rollout.inputs import NOTHING_OBSERVED, RolloutInput
from esteira.rollout.revisions import traffic_plan
from esteira.routing import ObjectKey, router_for
from esteira.routing.base import key_of
from esteira.state import merge_patch
from esteira.state.conditions import set_condition
from esteira.state.drift import drift_patch, managed_view, with_last_applied
from esteira.state.monitoring import monitor, seconds_to_next
from esteira.state.observe import Observation, observe_kserve
from esteira.state.retrain import plan_retraining
from esteira.vocabulary import (
    COLLECTOR_EXPORT_PATH,
    DEFAULT_INGRESS_DOMAIN,
    KSERVE_DEPLOYMENT_MODE,
    Command,
    Decision,
    parse_time,
)

Result = Literal["created", "updated", "unchanged", "invalid"]


@dataclass(frozen=True)
class ReconcileInput:
    name: str
    namespace: str
    generation: int | None
    spec: dict[str, Any]
    status: dict[str, Any]
    objects: Mapping[ObjectKey, dict[str, Any]]  # the live children, by (apiVersion, kind, name)
    now: str
    prometheus_url: str | None = None
    collector_url: str | None = None
    ingress_domain: str = DEFAULT_INGRESS_DOMAIN
    evidence: Evidence | None = None
    drift: DriftWindow | None = None  # the stable revision's inputs over monitoring.drift.window, when due
    drift_error: str | None = None
    metrics_error: str | None = None
    command: Command | None = None
    retrain_jobs: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # this deployment's Jobs by name
    stable_accuracy: Tally | None = None  # stable's labelled predictions over triggers.accuracyWindow, when read
    owner_uid: str | None = None  # the ModelDeployment's uid: a child it keeps must name it as its owner


@dataclass
class ReconcilePlan:
    result: Result
    status: dict[str, Any]
    status_changed: bool
    status_patch: dict[str, Any] = field(default_factory=dict)  # merge patch from the status read to `status`
    creates: list[dict[str, Any]] = field(default_factory=list)
    patches: list[tuple[ObjectKey, dict[str, Any]]] = field(default_factory=list)
    # Children kept that do not name this ModelDeployment as their owner, with the owners they do name: without
    # it, deleting the ModelDeployment leaves them behind (one orphaned by `kubectl delete --cascade=orphan`).
    adopt: list[tuple[ObjectKey, list[dict[str, Any]]]] = field(default_factory=list)
    deletes: list[ObjectKey] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    requeue_after: float | None = None  # seconds until its next drift evaluation or analysis is due
    retrain_jobs: list[dict[str, Any]] = field(default_factory=list)  # Jobs to create for retraining runs
    retrain_events: list[dict[str, Any]] = field(default_factory=list)  # CloudEvents for spec.retraining.webhook

    @property
    def create(self) -> dict[str, Any] | None:
        """The first object to create (the single InferenceService of the KServe router)."""
        return self.creates[0] if self.creates else None

    @property
    def patch(self) -> dict[str, Any] | None:
        """The first patch (the single InferenceService of the KServe router)."""
        return self.patches[0][1] if self.patches else None


def _read_status(raw: dict[str, Any]) -> ModelDeploymentStatus:
    """Status as last written; unreadable status starts afresh rather than blocking the object forever, but
    keeps which commands were carried out: forgotten, the command annotation still on the object was carried
    out again (a rollback twice, say)."""
    try:
        return ModelDeploymentStatus.model_validate(raw or {})
    except ValueError:
        done = {key: raw[key] for key in ("lastCommand", "lastAnnotationCommand") if isinstance(raw.get(key), str)}
        return ModelDeploymentStatus.model_validate(done)


def _invalid(inp: ReconcileInput, status: ModelDeploymentStatus, exc: InvalidSpec) -> ReconcilePlan:
    before = status.to_wire()
    message = str(exc)
    set_condition(status, "Ready", False, "InvalidSpec", message, inp.now, inp.generation)
    status.phase = "Invalid"
    status.observed_generation = inp.generation
    after = status.to_wire()
    decisions = [Decision("InvalidSpec", f"Spec rejected, nothing changed: {message}", warning=True)]
    if before == after:
        decisions = []  # already reported for this generation
    patch = merge_patch.diff(inp.status or {}, after)
    return ReconcilePlan("invalid", after, before != after, status_patch=patch, decisions=decisions)


def _check_mode_unchanged(spec: ModelDeploymentSpec, objects: Mapping[ObjectKey, dict[str, Any]]) -> None:
    modes = {
        ((obj.get("metadata") or {}).get("annotations") or {}).get(KSERVE_DEPLOYMENT_MODE)
        for key, obj in objects.items()
        if key[1] == "InferenceService"
    } - {None}
    for current in modes:
        if current == spec.deployment_mode:
            continue
        raise InvalidSpec.single(
            "spec.deploymentMode",
            f"cannot change from {current} to {spec.deployment_mode} after creation (KServe forbids it): "
            "create a new ModelDeployment instead",
        )


def _export_url(ctx: RenderContext, spec: ModelDeploymentSpec) -> str | None:
    """Where a retraining run reads the labelled data of the window that triggered it (the collector's export)."""
    if ctx.collector_url is None or spec.retraining is None:
        return None
    return f"{ctx.collector_url.rstrip('/')}{COLLECTOR_EXPORT_PATH}?deployment={ctx.name}&namespace={ctx.namespace}"


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def _other_owners(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The owners a child keeps when adopted: all but a ModelDeployment of an earlier life (a reference to the one
    deleted and made again under this name), which as a second controller the API server would refuse."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [ref for ref in refs if ref.get("kind") != KIND]


def _own_jobs(inp: ReconcileInput) -> Mapping[str, dict[str, Any]]:
    """The retraining Jobs this ModelDeployment owns: one of the same name and labels left by an earlier one of
    this name (orphaned when it was deleted) would hand its outcome to this one's run of that number."""
    if inp.owner_uid is None:
        return inp.retrain_jobs
    return {name: job for name, job in inp.retrain_jobs.items() if _owned_by(job, inp.owner_uid)}


def plan_reconcile(inp: ReconcileInput) -> ReconcilePlan:
    """Decide what to create, patch or delete, where the rollout goes, and what the status becomes."""
    status = _read_status(inp.status)
    before = status.to_wire()
    try:
        check_name(inp.name)
        spec = ModelDeploymentSpec.parse(inp.spec)
        _check_mode_unchanged(spec, inp.objects)
        ctx = RenderContext(
            inp.name,
            inp.namespace,
            inp.prometheus_url,
            collector_url=inp.collector_url,
            ingress_domain=inp.ingress_domain,
        )
        router = router_for(spec.rollout.router)
        # What the backend reports about the canary as status knows it; the step matches it to its canary.
        route = router.observe(ctx, spec, traffic_plan(status), inp.objects) if status.stable else NOTHING_OBSERVED
        watched = monitor(spec, status, inp.now, inp.generation, inp.drift, inp.drift_error)
        step = rollout_step(
            RolloutInput(
                spec=spec,
                status=status,
                now=parse_time(inp.now),
                evidence=inp.evidence,
                metrics_error=inp.metrics_error,
                command=inp.command,
                route=route,
                router_copies=router.copies_requests,
            )
        )
        status, decisions, requeue_after = step.status, watched + step.decisions, step.requeue_after
        next_evaluation = seconds_to_next(spec, status, parse_time(inp.now))
        if next_evaluation is not None:
            requeue_after = next_evaluation if requeue_after is None else min(requeue_after, next_evaluation)
        retraining = plan_retraining(
            ctx,
            spec,
            status,
            _own_jobs(inp),
            parse_time(inp.now),
            labelled_data=_export_url(ctx, spec),
            stable_accuracy=inp.stable_accuracy,
        )
        decisions += retraining.decisions
        desired = [with_last_applied(obj) for obj in router.desired(ctx, spec, step.plan, inp.objects)]
    except InvalidSpec as exc:
        return _invalid(inp, _read_status(inp.status), exc)

    plan = ReconcilePlan(
        "unchanged",
        {},
        False,
        decisions=decisions,
        requeue_after=requeue_after,
        retrain_jobs=retraining.jobs,
        retrain_events=retraining.webhook_events,
    )
    wanted = {key_of(obj): obj for obj in desired}
    for key, obj in wanted.items():
        live = inp.objects.get(key)
        if live is None:
            plan.creates.append(obj)
            plan.decisions.append(Decision("Created", f"Created {key[1]} {key[2]}"))
        else:
            if inp.owner_uid is not None and not _owned_by(live, inp.owner_uid):
                plan.adopt.append((key, _other_owners(live)))
                plan.decisions.append(
                    Decision(
                        "Adopted", f"{key[1]} {key[2]} did not name this ModelDeployment as its owner: it does now"
                    )
                )
            if (patch := drift_patch(live, obj)) is None:
                continue
            plan.patches.append((key, patch))
            if last_applied(live) == managed_view(obj):
                plan.decisions.append(
                    Decision("DriftCorrected", f"Put back a manual change to {key[1]} {key[2]}", True)
                )
            else:
                plan.decisions.append(Decision("Updated", f"Updated {key[1]} {key[2]} to the current spec"))
    for key in inp.objects:
        if key not in wanted:
            plan.deletes.append(key)
            plan.decisions.append(Decision("Deleted", f"Deleted {key[1]} {key[2]}: no longer serves any revision"))
    if plan.creates:
        plan.result = "created"
    elif plan.patches or plan.deletes or plan.adopt:
        plan.result = "updated"

    primary = router.primary(ctx, step.plan)
    touched = any(key == primary for key, _ in plan.patches) or primary in {key_of(o) for o in plan.creates}
    observation = Observation(
        inp.name, inp.objects.get(primary), touched, inp.generation, inp.now, url=router.url(ctx, spec)
    )
    plan.decisions += observe_kserve(spec, status, observation)
    plan.status = status.to_wire()
    plan.status_changed = plan.status != before
    plan.status_patch = merge_patch.diff(inp.status or {}, plan.status)
    return plan

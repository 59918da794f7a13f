"""`kubectl esteira`: status, manual control and history of ModelDeployment rollouts.

Installed as `kubectl-esteira`, so kubectl finds it as a plugin. Commands are written to the
`serving.esteira.io/command` annotation with a fresh id (this needs `patch` on the ModelDeployment), or with
`--via command` created as a RolloutCommand (this needs only `create` on rolloutcommands, and records who
asked); the operator carries each one out once and records it in `status.lastCommand`.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, cast

from esteira import API_GROUP, API_VERSION, PLURAL
from esteira.api.command import COMMAND_KIND, COMMAND_PLURAL
from esteira.api.errors import api_server_message
from esteira.api.spec import Rollout
from esteira.drift.report import monitoring_lines
from esteira.retraining.report import card_summary, retraining_lines
from esteira.vocabulary import COMMAND_ANNOTATION, Action, Command

DEFAULTS = Rollout()  # what the CRD fills in where the spec is silent


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _value(value: Any) -> str:
    return "-" if value is None else str(value)


def format_status(md: dict[str, Any]) -> str:
    """What `kubectl esteira status` prints: phase, arms, the step plan and the last analysis."""
    meta, spec, status = md["metadata"], md.get("spec") or {}, md.get("status") or {}
    rollout = spec.get("rollout") or {}
    steps: list[int] = rollout.get("steps") or DEFAULTS.steps
    lines = [
        f"{meta['namespace']}/{meta['name']}  phase: {status.get('phase', '-')}  url: {status.get('url', '-')}",
    ]
    for cond in status.get("conditions") or []:
        lines.append(f"  {cond['type']}={cond['status']} ({cond.get('reason', '')}): {cond.get('message', '')}")
    stable, canary = status.get("stable"), status.get("canary")
    arms = [["ARM", "REVISION", "MODEL", "WEIGHT", "STORAGE"]]
    if stable:
        weight = 100 - (canary or {}).get("weight", 0)
        arms.append(["stable", str(stable["revision"]), stable["modelVersion"], f"{weight}%", stable["storageUri"]])
    if canary:
        arms.append(
            ["canary", str(canary["revision"]), canary["modelVersion"], f"{canary['weight']}%", canary["storageUri"]]
        )
    lines += ["", _table(arms)]
    if canary:
        mirroring = canary.get("copies") == "Sending"
        marks = [f"{'>' if mirroring else ' '}copies"] if rollout.get("mirror") else []
        for index, weight in enumerate(steps):
            mark = ">" if index == canary.get("step") and not mirroring else " "
            gate = " (pause)" if weight in (rollout.get("pauseBefore") or []) else ""
            marks.append(f"{mark}{weight}%{gate}")
        lines += [
            "",
            f"steps: {'  '.join(marks)}   interval {rollout.get('interval', DEFAULTS.interval)}, "
            f"failed checks {canary.get('failedChecks', 0)}/{rollout.get('threshold', DEFAULTS.threshold)}",
        ]
        if canary.get("pauseReason"):
            lines.append(f"held: {canary['pauseReason']}")
        checks = canary.get("checks") or []
        if checks:
            rows = [["CHECK", "VALUE", "THRESHOLD", "SAMPLE", "VERDICT"]]
            rows += [
                [c["name"], _value(c.get("value")), c["threshold"], str(c["sampleSize"]), c["verdict"]] for c in checks
            ]
            lines += ["", f"last analysis {canary.get('lastAnalysisAt', '-')}:", _table(rows)]
    last = status.get("lastRollout")
    if last and not canary:
        lines += ["", f"last rollout: revision {last['revision']} {last['outcome']} at {last['at']}: {last['reason']}"]
    if status.get("monitoring"):
        lines += ["", *monitoring_lines(status["monitoring"])]
    if runs := retraining_lines(status.get("retraining")):
        lines += ["", *runs]
    return "\n".join(lines)


def format_history(md: dict[str, Any]) -> str:
    rows = [["REVISION", "MODEL", "OUTCOME", "STARTED", "FINISHED", "CARD", "REASON"]]
    for entry in (md.get("status") or {}).get("history") or []:
        rows.append(
            [
                str(entry["revision"]),
                entry["modelVersion"],
                entry["outcome"],
                entry["startedAt"],
                _value(entry.get("finishedAt")),
                card_summary(entry.get("card")),
                entry.get("reason", ""),
            ]
        )
    return _table(rows)


def command_patch(action: Action, *, full: bool = False, revision: int | None = None) -> dict[str, Any]:
    command = Command(id=uuid.uuid4().hex, action=action, full=full, revision=revision)
    return {"metadata": {"annotations": {COMMAND_ANNOTATION: command.encode()}}}


def rollback_patch(md: dict[str, Any], revision: int) -> dict[str, Any]:
    """Point the spec back at revision N's build and ask for it to become stable at once."""
    history = (md.get("status") or {}).get("history") or []
    entry = next((h for h in history if h["revision"] == revision), None)
    if entry is None:
        known = ", ".join(str(h["revision"]) for h in history) or "none"
        raise SystemExit(f"revision {revision} is not in the history (known: {known})")
    patch = command_patch("rollback", revision=revision)
    # Its card too (None removes the current build's): the new stable revision records the spec's card, and the
    # retraining gate scores candidates against it.
    model = {"version": entry["modelVersion"], "storageUri": entry["storageUri"], "card": entry.get("card")}
    patch["spec"] = {"model": model}
    return patch


def rollout_command(deployment: str, action: Action, requested_by: str, *, full: bool = False) -> dict[str, Any]:
    """A RolloutCommand object for `deployment`, named after it with a unique suffix."""
    spec: dict[str, Any] = {"deployment": deployment, "action": action, "requestedBy": requested_by}
    if full:
        spec["full"] = True
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": COMMAND_KIND,
        "metadata": {"generateName": f"{deployment}-{action}-"},
        "spec": spec,
    }


class Client:
    """The few API calls the plugin makes, through the official client and the user's kubeconfig."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        from kubernetes import client, config

        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
        self.api = client.CustomObjectsApi(api_client)

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        result = self.api.get_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name)
        return cast(dict[str, Any], result)

    def require(self, namespace: str, name: str) -> None:
        """Refuse a command for a ModelDeployment that does not exist (a typo would be said requested, then
        Rejected later). One who may create RolloutCommands but not read ModelDeployments is let through."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.get(namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                raise SystemExit(f"kubectl esteira: no ModelDeployment {name} in namespace {namespace}") from None
            if exc.status != 403:
                raise

    def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, name, patch)

    def create_command(self, namespace: str, body: dict[str, Any]) -> str:
        created = self.api.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, COMMAND_PLURAL, body)
        return str(cast(dict[str, Any], created)["metadata"]["name"])

    def username(self) -> str:
        """Who the API server says this kubeconfig is (a SelfSubjectReview, Kubernetes 1.28+)."""
        from kubernetes import client

        review = client.AuthenticationV1Api(self.api.api_client).create_self_subject_review(
            client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
        )
        name = review.status.user_info.username if review.status and review.status.user_info else None
        if not name:
            raise SystemExit("the API server did not say who you are: pass --requested-by")
        return str(name)


def _kubectl_flags(defaults: bool) -> argparse.ArgumentParser:
    """kubectl's own flags, which a plugin receives wherever the user wrote them on the line. Only the
    top-level parser sets defaults: a subcommand's default would overwrite a flag given before it."""
    flags = argparse.ArgumentParser(add_help=False)
    unset = None if defaults else argparse.SUPPRESS
    flags.add_argument(
        "-n", "--namespace", default=unset, help="Namespace (default: the kubeconfig context's, or default)."
    )
    flags.add_argument("--kubeconfig", default=unset, help="Path to the kubeconfig file (default: $KUBECONFIG).")
    flags.add_argument("--context", default=unset, help="The kubeconfig context to use.")
    return flags


def parser() -> argparse.ArgumentParser:
    """The plugin's command line; kubectl's flags are accepted before or after the command."""
    top = argparse.ArgumentParser(
        prog="kubectl esteira", description="Control ModelDeployment rollouts.", parents=[_kubectl_flags(True)]
    )
    flags = _kubectl_flags(False)
    commands = top.add_subparsers(dest="command", required=True)
    for name, text in [
        ("status", "Steps, weights and the last analysis with values and thresholds."),
        ("history", "Revisions with their outcome and reason."),
        ("watch", "Follow the rollout live."),
    ]:
        commands.add_parser(name, help=text, parents=[flags]).add_argument("name")
    for name, text in [
        ("pause", "Hold the rollout at its current weight."),
        ("resume", "Continue a paused rollout."),
        ("abort", "Roll back now: all traffic to stable."),
        ("retry", "Try a rolled-back build again."),
        ("promote", "Advance one step, or with --full make the canary stable now."),
    ]:
        action = commands.add_parser(name, help=text, parents=[flags])
        action.add_argument("name")
        action.add_argument(
            "--via",
            choices=["annotation", "command"],
            default="annotation",
            help="annotation: patch the ModelDeployment; command: create a RolloutCommand (records who asked).",
        )
        action.add_argument("--requested-by", help="With --via command: your user name (default: asked of the API).")
        if name == "promote":
            action.add_argument("--full", action="store_true")
    rollback = commands.add_parser("rollback", help="Make an earlier revision's build stable at once.", parents=[flags])
    rollback.add_argument("name")
    rollback.add_argument("--to-revision", type=int, required=True)
    return top


def _default_namespace(kubeconfig: str | None, context: str | None) -> str:
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        if context:
            active = next(c for c in contexts if c["name"] == context)
        return str(active["context"].get("namespace") or "default")
    except (config.ConfigException, StopIteration, KeyError, TypeError):
        return "default"


def _watch(client: Client, namespace: str, name: str, out: Callable[[str], None], interval: float = 2.0) -> int:
    last = ""
    while True:
        text = format_status(client.get(namespace, name))
        if text != last:
            out(f"--- {time.strftime('%H:%M:%S')}\n{text}\n")
            last = text
        time.sleep(interval)


def main(argv: Sequence[str] | None = None, client: Client | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    if getattr(args, "requested_by", None) and args.via != "command":
        cli.error("--requested-by goes with --via command: the annotation records nobody's name")
    namespace = args.namespace or _default_namespace(args.kubeconfig, args.context)
    client = client or Client(args.kubeconfig, args.context)
    name = args.name
    if args.command == "status":
        print(format_status(client.get(namespace, name)))
    elif args.command == "history":
        print(format_history(client.get(namespace, name)))
    elif args.command == "watch":
        try:
            return _watch(client, namespace, name, lambda text: print(text, flush=True))
        except KeyboardInterrupt:
            return 0
    elif args.command == "rollback":
        client.patch(namespace, name, rollback_patch(client.get(namespace, name), args.to_revision))
        print(f"{namespace}/{name}: rollback to revision {args.to_revision} requested")
    elif args.via == "command":
        action = cast(Action, args.command)
        client.require(namespace, name)
        requester = args.requested_by or client.username()
        body = rollout_command(name, action, requester, full=bool(getattr(args, "full", False)))
        created = client.create_command(namespace, body)
        print(f"{namespace}/{name}: {args.command} requested as RolloutCommand {created} by {requester}")
    else:
        action = cast(Action, args.command)
        client.patch(namespace, name, command_patch(action, full=bool(getattr(args, "full", False))))
        print(f"{namespace}/{name}: {args.command} requested")
    return 0


def entrypoint() -> None:
    try:
        raise SystemExit(main())
    except Exception as exc:  # a one-line error beats a traceback for a CLI user
        reason = api_server_message(exc.body, exc.reason) if hasattr(exc, "body") and hasattr(exc, "reason") else exc
        print(f"kubectl esteira: {reason}", file=sys.stderr)
        raise SystemExit(1) from None

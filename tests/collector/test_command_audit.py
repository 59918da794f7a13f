"""Who asked for a command reaches its Event and the audit trail, on both command paths: a RolloutCommand's
requester, and "unknown (annotation)" for the annotation, which names nobody."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from esteira.api.command import RolloutCommandSpec
from esteira.collector.app import Collector, CollectorConfig
from esteira.controller.collector_link import ANNOTATION_REQUESTER, Asked, CollectorLink
from esteira.controller.reconciler import PendingCommand, asked_for
from esteira.state.reconcile import ReconcilePlan
from esteira.vocabulary import COMMAND_ANNOTATION, ENV_COLLECTOR_TOKEN, ENV_COLLECTOR_TOKEN_FILE, Command, Decision
from tests.collector.conftest import TOKEN
from tests.support.net import free_port
from tests.support.specs import spec
from tests.unit.test_reconcile_plan import run

NOW = "2026-01-01T00:00:00Z"


def plan(status: dict[str, Any], command: Command | None) -> ReconcilePlan:
    planned: ReconcilePlan = run(spec(), status, now=NOW, command=command)
    return planned


def with_annotation(command: Command, status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "iris", "annotations": {COMMAND_ANNOTATION: command.encode()}}, "status": status}


def test_annotation_command_is_recorded_once_as_asked_by_nobody_known() -> None:
    first = plan({}, None)
    command = Command(id="c-1", action="promote")
    taken = plan(first.status, command)
    asked = asked_for(with_annotation(command, first.status), None, taken)
    assert asked == Asked("promote", ANNOTATION_REQUESTER, "Ignored")  # no rollout in progress
    assert asked.decision().message == "promote requested by unknown (annotation): Ignored"
    again = plan(taken.status, command)
    assert asked_for(with_annotation(command, taken.status), None, again) is None, "taken already: said once"
    assert asked_for({"metadata": {"name": "iris"}, "status": first.status}, None, first) is None


def test_rolloutcommand_names_its_requester() -> None:
    first = plan({}, None)
    command_spec = RolloutCommandSpec.model_validate({"deployment": "iris", "action": "pause", "requestedBy": "alice"})
    pending = PendingCommand("pause-iris-x", command_spec, command_spec.command("uid-1"))
    taken = plan(first.status, pending.command)
    # An annotation left on the object is not what this reconcile took: the RolloutCommand is.
    md = with_annotation(Command(id="c-9", action="abort"), first.status)
    asked = asked_for(md, pending, taken)
    assert asked is not None and asked.requested_by == "alice" and asked.outcome == "Ignored"
    assert asked.decision().message == "pause requested by alice (RolloutCommand pause-iris-x): Ignored"


async def test_the_audit_trail_says_who_asked(tmp_path: Path) -> None:
    collector = Collector(CollectorConfig(f"sqlite:///{tmp_path / 'c.db'}", token=TOKEN))
    server = TestServer(collector.app(), port=free_port())
    await server.start_server()
    link = CollectorLink(str(server.make_url("/")), TOKEN)
    by_alice = Asked("promote", "alice", "Done", "RolloutCommand promote-iris-x")
    by_annotation = Asked("abort", ANNOTATION_REQUESTER, "Done")
    try:
        link.record("models", "iris", [by_alice.decision(), Decision("Promoted", "revision 2 promoted")], by_alice)
        link.record(
            "models", "iris", [by_annotation.decision(), Decision("RolledBack", "aborted", True)], by_annotation
        )
        deadline = time.monotonic() + 20
        while len(entries := collector.store.audit("models", "iris", 10)) < 4:
            assert time.monotonic() < deadline, entries
            await asyncio.sleep(0.1)
    finally:
        await link.close()
        await server.close()
    who = {(e["reason"], e["message"]): (e["actor"], e["details"]) for e in entries}
    assert who[("CommandReceived", "promote requested by alice (RolloutCommand promote-iris-x): Done")] == (
        "alice",
        {"action": "promote", "requestedBy": "alice", "outcome": "Done", "via": "RolloutCommand promote-iris-x"},
    )
    assert who[("CommandReceived", "abort requested by unknown (annotation): Done")] == (
        ANNOTATION_REQUESTER,
        {"action": "abort", "requestedBy": ANNOTATION_REQUESTER, "outcome": "Done", "via": "annotation"},
    )
    assert who[("Promoted", "revision 2 promoted")][0] == "esteira-operator", "the operator's own decisions"
    assert who[("RolledBack", "aborted")][0] == "esteira-operator"


def test_token_from_a_mounted_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart mounts the collector's token as a file; the file wins over the environment."""
    (tmp_path / "token").write_text("from-the-file\n")
    monkeypatch.setenv(ENV_COLLECTOR_TOKEN, "from-the-environment")
    assert CollectorLink.from_env().token == "from-the-environment"
    monkeypatch.setenv(ENV_COLLECTOR_TOKEN_FILE, str(tmp_path / "token"))
    assert CollectorLink.from_env().token == "from-the-file"

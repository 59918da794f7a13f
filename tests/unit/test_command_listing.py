"""A reconcile lists its namespace's RolloutCommands only when one may be open: a list that found none stands
until a RolloutCommand event (every command created brings one) or five minutes pass."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from esteira.controller import reconciler as reconciler_module
from esteira.controller.reconciler import NO_OPEN_COMMANDS_SECONDS, Reconciler


def command(name: str, deployment: str, phase: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"deployment": deployment, "action": "pause", "requestedBy": "ops"},
        "status": {"phase": phase} if phase else {},
    }


class CommandsAPI:
    """The namespace's RolloutCommands; counts lists, and can run something while one is read."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.lists = 0
        self.during_list: Callable[[], None] | None = None

    async def list_rollout_commands(self, namespace: str) -> list[dict[str, Any]]:
        self.lists += 1
        found = list(self.items)
        if self.during_list is not None:
            self.during_list()
            self.during_list = None
        return found


def pending(reconciler: Reconciler, name: str = "iris") -> str | None:
    found = asyncio.run(reconciler._pending_command("team", name))
    return found.name if found else None


@pytest.fixture
def api() -> CommandsAPI:
    return CommandsAPI()


@pytest.fixture
def reconciler(api: CommandsAPI) -> Reconciler:
    return Reconciler(api, None)  # type: ignore[arg-type]


def test_a_namespace_without_open_commands_is_listed_once(api: CommandsAPI, reconciler: Reconciler) -> None:
    api.items = [command("old", "iris", phase="Done")]
    assert [pending(reconciler), pending(reconciler), pending(reconciler, "other")] == [None, None, None]
    assert api.lists == 1


def test_a_command_event_brings_the_next_list_and_its_command(api: CommandsAPI, reconciler: Reconciler) -> None:
    assert pending(reconciler) is None
    api.items = [command("pause-it", "iris")]
    reconciler.command_event("team")
    assert pending(reconciler) == "pause-it"
    assert pending(reconciler) == "pause-it", "an open command is never remembered: listed every time"
    assert api.lists == 3


def test_an_event_in_another_namespace_changes_nothing_here(api: CommandsAPI, reconciler: Reconciler) -> None:
    assert pending(reconciler) is None
    reconciler.command_event("elsewhere")
    assert pending(reconciler) is None
    assert api.lists == 1


def test_a_command_created_while_the_list_was_read_is_not_missed(api: CommandsAPI, reconciler: Reconciler) -> None:
    def created_meanwhile() -> None:
        api.items = [command("pause-it", "iris")]
        reconciler.command_event("team")

    api.during_list = created_meanwhile
    assert pending(reconciler) is None, "the list was read before the command existed"
    assert pending(reconciler) == "pause-it"
    assert api.lists == 2


def test_an_open_command_of_another_deployment_keeps_the_namespace_listed(
    api: CommandsAPI, reconciler: Reconciler
) -> None:
    api.items = [command("pause-other", "other")]
    assert [pending(reconciler), pending(reconciler)] == [None, None]
    assert api.lists == 2


def test_what_a_list_found_stands_only_so_long(
    api: CommandsAPI, reconciler: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(reconciler_module.time, "monotonic", lambda: now[0])
    assert pending(reconciler) is None
    now[0] += NO_OPEN_COMMANDS_SECONDS - 1
    assert pending(reconciler) is None and api.lists == 1
    now[0] += 2
    api.items = [command("unseen", "iris")]  # its event never reached the operator
    assert pending(reconciler) == "unseen"
    assert api.lists == 2

"""Serving processes and the operator freeze their start-up objects so full collections stop pausing every
request or reconcile."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import pytest

from esteira.controller import __main__ as controller_main
from esteira.controller.config import parse_args
from esteira.packaging.heap import freeze_startup_heap


class Node:
    other: Node | None = None


def test_survivors_are_frozen_and_cyclic_garbage_is_collected_first() -> None:
    first, second = Node(), Node()
    first.other, second.other = second, first
    garbage = weakref.ref(first)
    del first, second
    survivor = Node()
    try:
        frozen = freeze_startup_heap()
        assert garbage() is None, "a reference cycle nobody holds was frozen instead of collected"
        assert frozen == gc.get_freeze_count() > 0
        assert not any(tracked is survivor for tracked in gc.get_objects()), "the survivor is still collected"
    finally:
        gc.unfreeze()
    assert any(tracked is survivor for tracked in gc.get_objects())


def test_the_operator_freezes_its_start_up_heap_before_it_watches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: t}}]\n"
    )
    frozen_when_started: list[int] = []

    async def operator(**_: Any) -> None:
        frozen_when_started.append(gc.get_freeze_count())

    monkeypatch.setattr(controller_main.kopf, "operator", operator)
    monkeypatch.setattr(controller_main.kopf, "configure", lambda **_: None)  # leaves this process's logging be
    config = parse_args(["--kubeconfig", str(kubeconfig), "--metrics-port", "0", "--liveness-port", "0", "-n", "team"])
    try:
        controller_main.run(config)
    finally:
        gc.unfreeze()
    assert frozen_when_started and frozen_when_started[0] > 0

"""Serving processes freeze their start-up objects so full collections stop pausing every request."""

from __future__ import annotations

import gc
import weakref

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

"""The response timeout's watchdog: a batch past the model's timeout halts the batcher (its callers answered on
the loop), the queued inference records are sent, and the process ends with its status."""

from __future__ import annotations

import asyncio
import threading
import time

from model_handlers.watchdog import EXIT_STATUS, Watchdog


class StuckBatcher:
    """A batcher whose batch began ``age`` seconds ago, on a loop that runs in its own thread."""

    def __init__(self, age: float | None) -> None:
        self.running_since = None if age is None else time.perf_counter() - age
        self.loop = asyncio.new_event_loop()
        self.halts: list[tuple[str, bool]] = []  # each halt's reason, and whether it ran on the loop's thread
        self.loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.loop_thread.start()

    def halt(self, reason: str) -> None:
        self.halts.append((reason, threading.current_thread() is self.loop_thread))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_only_a_batch_past_the_timeout_is_overdue() -> None:
    for age, overdue in ((None, False), (1.0, False), (5.0, True)):
        batcher = StuckBatcher(age)
        seconds = Watchdog(batcher, timeout=2.0, flush=lambda: None).overdue()
        assert (seconds is not None) is overdue
        if overdue:
            assert seconds is not None and seconds >= 5.0
        batcher.close()


def test_an_overdue_batch_halts_the_batcher_on_its_loop_then_flushes_and_exits_with_its_status() -> None:
    batcher = StuckBatcher(age=5.0)
    steps: list[str] = []
    exited = threading.Event()

    def exit_with(status: int) -> None:
        steps.append(f"exit {status}")
        exited.set()

    Watchdog(batcher, timeout=2.0, flush=lambda: steps.append("flush"), exit=exit_with, check_seconds=0.01).start()
    assert exited.wait(10)
    assert batcher.halts == [("did not answer a batch within its response timeout (2 s); the server restarts", True)]
    assert steps == ["flush", f"exit {EXIT_STATUS}"]
    batcher.close()


def test_a_loop_held_by_the_batch_itself_does_not_keep_the_process_from_ending() -> None:
    """A batch stuck on the event loop: the halt never runs, and the process ends all the same."""
    batcher = StuckBatcher(age=5.0)
    held = threading.Event()
    batcher.loop.call_soon_threadsafe(held.wait, 30)  # the loop is busy until the test ends
    exited = threading.Event()
    Watchdog(batcher, timeout=2.0, flush=lambda: None, exit=lambda _: exited.set(), check_seconds=0.01).start()
    assert exited.wait(10)
    assert batcher.halts == []
    held.set()
    batcher.close()

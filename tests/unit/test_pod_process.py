"""The tests' pod process: a second start while one runs is refused, so no server is left running unstopped."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.pod_process import PodProcess
from tests.support.torchserve import process_group_alive


class Sleeper(PodProcess):
    what = "the sleeper"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_second_launch_while_running_is_refused_and_stop_leaves_nothing(tmp_path: Path) -> None:
    sleeper = Sleeper(tmp_path, tmp_path, "1.0.0")
    sleeper.launch()
    first = sleeper.pid
    with pytest.raises(RuntimeError, match=rf"the sleeper is already running \(pid {first}\): stop it first"):
        sleeper.launch()
    assert sleeper.pid == first
    sleeper.stop()
    assert not process_group_alive(first)
    sleeper.launch()  # stopped: it may run again
    again = sleeper.pid
    sleeper.stop()
    assert again != first and not process_group_alive(again)

"""A benchmark's working folder goes when its work succeeded and stays, named, when it failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.scratch import scratch


def test_removed_after_success() -> None:
    with scratch("esteira-test-scratch-") as work:
        (work / "operator.log").write_text("fine")
    assert not work.exists()


def failing_run(folders: list[Path]) -> None:
    with scratch("esteira-test-scratch-") as work:
        folders.append(work)
        (work / "operator.log").write_text("what went wrong")
        raise RuntimeError("the run failed")


def test_kept_and_named_after_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    folders: list[Path] = []
    with pytest.raises(RuntimeError, match="the run failed"):
        failing_run(folders)
    (kept,) = folders
    assert (kept / "operator.log").read_text() == "what went wrong"
    assert str(kept) in capsys.readouterr().err
    (kept / "operator.log").unlink()
    kept.rmdir()

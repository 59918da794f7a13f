"""The serving bench says what a served row's handler decided about ``optimize`` at load, from the line it logs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from torch import nn

from benchmarks.report import _optimized
from benchmarks.serving import optimize_verdict
from model_handlers.config import ModelConfig
from model_handlers.optimize import Outcome
from model_handlers.tabular import TabularHandler


def logged_verdict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, outcome: Outcome
) -> Path:
    """A server log holding, among others, the line the handler writes when the check comes to ``outcome``."""
    monkeypatch.setattr("model_handlers.base.optimize_for_serving", lambda model, *_: (model, outcome))
    handler = TabularHandler()
    handler.config, handler.model, handler.dtype = ModelConfig(kind="tabular", n_features=4), nn.Identity(), None
    with caplog.at_level(logging.INFO, logger="model_handlers.base"):
        handler.optimize_model(8)
    log = tmp_path / "server.log"
    log.write_text("2026-12-06 kserve INFO Registering model: iris\n" + caplog.text + "Uvicorn running\n")
    return log


def test_the_verdict_is_read_from_the_handlers_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = logged_verdict(
        tmp_path, caplog, monkeypatch, Outcome(False, "not faster on example inputs: 1 instance: 1 us")
    )
    assert optimize_verdict(log) == "serves as loaded, not optimized (not faster on example inputs: 1 instance: 1 us)"
    rows = {"esteira-kserve-optimized": {"optimize": optimize_verdict(log)}, "esteira-kserve": {}}
    assert _optimized({}, rows) == [
        "",
        "`esteira-kserve-optimized`'s handler at load: the model serves as loaded, not optimized "
        "(not faster on example inputs: 1 instance: 1 us).",
    ]


def test_a_server_that_wrote_no_verdict_has_none(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("Esteira tabular handler ready: model iris\n")
    assert optimize_verdict(log) is None
    assert optimize_verdict(tmp_path / "missing.log") is None
    assert optimize_verdict(None) is None
    assert _optimized({}, {"esteira-kserve": {}}) == []

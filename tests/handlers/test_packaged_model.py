"""What esteira-kserve reads of ``esteira package``'s config.properties: the model, its batching and how many
requests may wait for it (``job_queue_size``, TorchServe's key and default)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from esteira.packaging.config import CONFIG_PATH, JOB_QUEUE_SIZE, RESPONSE_TIMEOUT_SECONDS
from model_handlers.inprocess import packaged_model

SNAPSHOT = {"models": {"iris": {"1.0.0": {"marName": "iris.mar", "batchSize": 8, "responseTimeout": 30}}}}


def _model_dir(root: Path, *lines: str, snapshot: dict[str, Any] = SNAPSHOT) -> Path:
    config = root / CONFIG_PATH
    config.parent.mkdir(parents=True)
    config.write_text("\n".join([*lines, f"model_snapshot={json.dumps(snapshot)}"]) + "\n")
    return root


def test_the_queue_size_and_response_timeout_are_the_ones_torchserve_would_read(tmp_path: Path) -> None:
    packaged = packaged_model(_model_dir(tmp_path / "set", "job_queue_size=7", "default_response_timeout=90"))
    assert (packaged.name, packaged.version, packaged.batch_size) == ("iris", "1.0.0", 8)
    assert (packaged.queue_size, packaged.response_timeout) == (7, 30)  # the model's own timeout wins
    bare = {"models": {"iris": {"1.0.0": {"marName": "iris.mar"}}}}
    server_wide = packaged_model(_model_dir(tmp_path / "server-wide", "default_response_timeout=90", snapshot=bare))
    assert (server_wide.queue_size, server_wide.response_timeout) == (JOB_QUEUE_SIZE, 90)
    unset = packaged_model(_model_dir(tmp_path / "unset", snapshot=bare))
    assert (unset.batch_size, unset.queue_size, unset.response_timeout) == (1, 100, RESPONSE_TIMEOUT_SECONDS)


@pytest.mark.parametrize("value", ["0", "-3", "many"])
@pytest.mark.parametrize("key", ["job_queue_size", "default_response_timeout"])
def test_a_setting_that_is_not_a_positive_integer_is_refused_naming_the_file_and_the_key(
    tmp_path: Path, key: str, value: str
) -> None:
    bare = {"models": {"iris": {"1.0.0": {"marName": "iris.mar"}}}}
    model_dir = _model_dir(tmp_path, f"{key}={value}", snapshot=bare)
    with pytest.raises(RuntimeError) as refused:
        packaged_model(model_dir)
    named = "responseTimeout" if key == "default_response_timeout" else key
    assert str(refused.value) == f"{model_dir / CONFIG_PATH}: {named} must be a positive integer, got {value!r}"

"""What esteira-kserve reads of ``esteira package``'s config.properties: the model, its batching and how long a
batch may take (``responseTimeout``, TorchServe's key and default)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from esteira.packaging.config import CONFIG_PATH, RESPONSE_TIMEOUT_SECONDS
from model_handlers.inprocess import packaged_model

SNAPSHOT = {"models": {"iris": {"1.0.0": {"marName": "iris.mar", "batchSize": 8, "responseTimeout": 30}}}}


def _model_dir(root: Path, *lines: str, snapshot: dict[str, Any] = SNAPSHOT) -> Path:
    config = root / CONFIG_PATH
    config.parent.mkdir(parents=True)
    config.write_text("\n".join([*lines, f"model_snapshot={json.dumps(snapshot)}"]) + "\n")
    return root


def test_the_response_timeout_is_the_one_torchserve_would_read(tmp_path: Path) -> None:
    packaged = packaged_model(_model_dir(tmp_path / "set", "default_response_timeout=90"))
    assert (packaged.name, packaged.version, packaged.batch_size) == ("iris", "1.0.0", 8)
    assert packaged.response_timeout == 30  # the model's own timeout wins
    bare = {"models": {"iris": {"1.0.0": {"marName": "iris.mar"}}}}
    server_wide = packaged_model(_model_dir(tmp_path / "server-wide", "default_response_timeout=90", snapshot=bare))
    assert server_wide.response_timeout == 90
    unset = packaged_model(_model_dir(tmp_path / "unset", snapshot=bare))
    assert (unset.batch_size, unset.response_timeout) == (1, RESPONSE_TIMEOUT_SECONDS) == (1, 120)


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_response_timeout_that_is_not_a_positive_integer_is_refused_naming_the_file_and_the_key(
    tmp_path: Path, value: str
) -> None:
    bare = {"models": {"iris": {"1.0.0": {"marName": "iris.mar"}}}}
    model_dir = _model_dir(tmp_path, f"default_response_timeout={value}", snapshot=bare)
    with pytest.raises(RuntimeError) as refused:
        packaged_model(model_dir)
    message = f"{model_dir / CONFIG_PATH}: responseTimeout must be a positive integer, got {value!r}"
    assert str(refused.value) == message

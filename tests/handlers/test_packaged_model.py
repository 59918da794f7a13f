"""What esteira-kserve reads of ``esteira package``'s config.properties: the model, its batching and how many
requests may wait for it (``job_queue_size``, TorchServe's key and default)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esteira.packaging.config import CONFIG_PATH, JOB_QUEUE_SIZE
from model_handlers.inprocess import packaged_model

SNAPSHOT = {"models": {"iris": {"1.0.0": {"marName": "iris.mar", "batchSize": 8}}}}


def _model_dir(root: Path, *lines: str) -> Path:
    config = root / CONFIG_PATH
    config.parent.mkdir(parents=True)
    config.write_text("\n".join([*lines, f"model_snapshot={json.dumps(SNAPSHOT)}"]) + "\n")
    return root


def test_the_queue_size_is_the_one_torchserve_would_read(tmp_path: Path) -> None:
    packaged = packaged_model(_model_dir(tmp_path / "set", "job_queue_size=7"))
    assert (packaged.name, packaged.version, packaged.batch_size, packaged.queue_size) == ("iris", "1.0.0", 8, 7)
    assert packaged_model(_model_dir(tmp_path / "unset")).queue_size == JOB_QUEUE_SIZE == 100


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_queue_size_that_is_not_a_positive_integer_is_refused_naming_the_file_and_the_key(
    tmp_path: Path, value: str
) -> None:
    model_dir = _model_dir(tmp_path, f"job_queue_size={value}")
    with pytest.raises(RuntimeError) as refused:
        packaged_model(model_dir)
    assert str(refused.value) == f"{model_dir / CONFIG_PATH}: job_queue_size must be a positive integer, got {value!r}"

"""``esteira-model.json``: valid configs, precise errors, identity precedence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model_handlers.config import ConfigError, ModelConfig, load_config, parse_config
from model_handlers.protocol import Identity, InputSpec
from tests.handlers.models import IMAGE_CONFIG, REGRESSION_CONFIG, TABULAR_CONFIG


def test_tabular_config_and_its_input_spec() -> None:
    config = parse_config(TABULAR_CONFIG)
    assert config.features == 4
    assert config.max_body_bytes == 6_553_500
    assert config.input_spec() == InputSpec(
        "tabular",
        n_features=4,
        feature_names=("f0", "f1", "f2", "f3"),
        max_instances=8,
        max_body_bytes=6_553_500,
        output_names=("label", "probabilities"),
    )


def test_tensors_for_model_metadata_come_from_the_config() -> None:
    tabular = parse_config(TABULAR_CONFIG)
    assert tabular.input_tensor().to_json() == {"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}
    classes = len(TABULAR_CONFIG["labels"])
    assert [t.to_json() for t in tabular.output_tensors()] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
    ]
    unlabelled = parse_config({"kind": "tabular", "n_features": 3, "input_name": "features"})
    assert unlabelled.input_tensor().name == "features"
    assert unlabelled.output_tensors()[1].shape == (-1, -1)
    image = parse_config({**IMAGE_CONFIG, "top_k": 50})
    assert image.input_tensor().to_json() == {"name": "input-0", "datatype": "BYTES", "shape": [-1]}
    assert [(t.name, t.shape) for t in image.output_tensors()] == [
        ("labels", (-1, len(IMAGE_CONFIG["labels"]))),
        ("scores", (-1, len(IMAGE_CONFIG["labels"]))),
    ]
    assert [t.shape for t in parse_config(REGRESSION_CONFIG).output_tensors()] == [(-1,)]
    wide = parse_config({**REGRESSION_CONFIG, "output_size": 3})
    assert wide.input_spec().output_names == ("prediction",)
    assert wide.output_tensors()[0].shape == (-1, 3)
    with pytest.raises(ConfigError, match="output_size is for regression models"):
        parse_config({**TABULAR_CONFIG, "output_size": 2})


def test_defaults() -> None:
    config = parse_config({"kind": "tabular", "n_features": 3})
    assert (config.task, config.max_instances, config.half_precision, config.output) == (
        "classification",
        64,
        False,
        "logits",
    )
    assert config.input_spec().feature_names == ()


def test_image_and_regression_configs() -> None:
    image = parse_config(IMAGE_CONFIG)
    assert image.image_size == (8, 8)
    assert image.input_spec().kind == "image"
    assert parse_config(REGRESSION_CONFIG).task == "regression"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({**TABULAR_CONFIG, "kind": "text"}, "kind: Input should be 'tabular' or 'image'"),
        ({"kind": "tabular"}, "a tabular model needs feature_names or n_features"),
        ({"kind": "tabular", "n_features": 3, "feature_names": ["a", "b"]}, "n_features is 3 but there are 2"),
        ({"kind": "tabular", "feature_names": ["a", "a"]}, "feature_names must be unique"),
        ({"kind": "tabular", "feature_names": ["data", "x"]}, "feature names ['data'] clash with request keys"),
        ({"kind": "tabular", "n_features": 0}, "n_features: Input should be greater than or equal to 1"),
        ({"kind": "tabular", "n_features": 2, "labels": ["a", "a"]}, "labels must be unique"),
        ({"kind": "tabular", "n_features": 2, "labels": ["a"]}, "labels: Tuple should have at least 2 items"),
        ({"kind": "tabular", "n_features": 2, "task": "regression", "labels": ["a", "b"]}, "regression"),
        ({"kind": "tabular", "n_features": 2, "max_instance": 3}, "max_instance: Extra inputs are not permitted"),
        ({"kind": "tabular", "n_features": 2, "image_size": [8, 8]}, "image_size is for image models"),
        ({"kind": "image"}, "an image model needs image_size [height, width]"),
        ({"kind": "image", "image_size": [8, 0]}, "image_size values must be positive"),
        ({"kind": "image", "image_size": [8]}, "image_size"),
        ({"kind": "image", "image_size": [8, 8], "mean": [0.5, 0.5]}, "mean has 2 values but channels is 3"),
        ({"kind": "image", "image_size": [8, 8], "channels": 1, "std": [0.0]}, "std values must be positive"),
        ({"kind": "image", "image_size": [8, 8], "channels": 2}, "channels: Input should be 1 or 3"),
        ({"kind": "image", "image_size": [8, 8], "task": "regression"}, "image models are classifiers here"),
        ({"kind": "image", "image_size": [8, 8], "n_features": 3}, "feature_names and n_features are for tabular"),
        ({"kind": "tabular", "n_features": 2, "top_k": 0}, "top_k: Input should be greater than or equal to 1"),
        ([1, 2], "expected a JSON object, got list"),
    ],
)
def test_bad_configs_say_what_is_wrong(raw: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert str(caught.value).startswith("esteira-model.json: ")
    assert expected in str(caught.value)


def test_config_error_is_a_runtime_error() -> None:
    """TorchServe's worker reports a RuntimeError from initialize as a failed load instead of crashing."""
    assert issubclass(ConfigError, RuntimeError)


def test_load_config_from_a_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"esteira-model.json not found in .*: add it to the .mar with --extra-files"):
        load_config(tmp_path)
    (tmp_path / "esteira-model.json").write_text("{")
    with pytest.raises(ConfigError, match=r"esteira-model\.json: malformed JSON: Expecting property name"):
        load_config(tmp_path)
    (tmp_path / "esteira-model.json").write_text(json.dumps(TABULAR_CONFIG))
    assert load_config(tmp_path) == ModelConfig.model_validate(TABULAR_CONFIG)


def test_identity_precedence_environment_then_file_then_manifest() -> None:
    manifest = {"model": {"modelName": "from-mar", "modelVersion": "3.0"}}
    bare = parse_config({"kind": "tabular", "n_features": 2})
    named = parse_config({"kind": "tabular", "n_features": 2, "model_name": "file", "revision": "r-file"})
    assert bare.identity(manifest, env={}) == Identity("from-mar", "3.0", "unknown")
    assert bare.identity(None, env={}) == Identity("model", "1", "unknown")
    assert named.identity(manifest, env={}) == Identity("file", "3.0", "r-file")
    env = {"ESTEIRA_MODEL_NAME": "op", "ESTEIRA_MODEL_VERSION": "9", "ESTEIRA_REVISION": "r-op"}
    assert named.identity(manifest, env=env) == Identity("op", "9", "r-op")

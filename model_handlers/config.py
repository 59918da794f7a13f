"""``esteira-model.json``: what a model expects and answers, shipped inside the ``.mar`` as an extra file.

A bad or missing file is a load failure (:class:`ConfigError`, a ``RuntimeError`` so TorchServe's worker
reports the load as failed instead of crashing). Example for a tabular classifier::

    {"kind": "tabular", "task": "classification", "feature_names": ["a", "b", "c", "d"],
     "labels": ["setosa", "versicolor", "virginica"]}

and for an image classifier::

    {"kind": "image", "image_size": [224, 224], "channels": 3, "mean": [0.485, 0.456, 0.406],
     "std": [0.229, 0.224, 0.225], "labels": ["cat", "dog"], "top_k": 2}

``"optimize": true`` has a TorchScript model rewritten for inference as it loads, where that agrees and pays
(:mod:`model_handlers.optimize`).

The model name, version and revision reported in answers and metric labels come from the environment
(``ESTEIRA_MODEL_NAME``, ``ESTEIRA_MODEL_VERSION``, ``ESTEIRA_REVISION``, set by the operator), then from
this file, then from the archive's manifest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from esteira.vocabulary import MODEL_CONFIG_FILE
from model_handlers.protocol import RESERVED_KEYS, Identity, InputSpec, TensorSpec

CONFIG_FILE = MODEL_CONFIG_FILE
ENV_MODEL_NAME = "ESTEIRA_MODEL_NAME"
ENV_MODEL_VERSION = "ESTEIRA_MODEL_VERSION"
ENV_REVISION = "ESTEIRA_REVISION"


class ConfigError(RuntimeError):
    """The model's config file is missing or wrong; loading the model must fail."""


class ModelConfig(BaseModel):
    """The schema of ``esteira-model.json``; unknown keys are rejected so typos surface at load time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["tabular", "image"]
    task: Literal["classification", "regression"] = "classification"
    input_name: str = Field("input-0", min_length=1, description="the input tensor's name in v2 model metadata")
    output_size: int = Field(1, ge=1, description="regression: values per instance")
    # tabular
    feature_names: tuple[str, ...] | None = Field(None, min_length=1)
    n_features: int | None = Field(None, ge=1)
    # classification
    labels: tuple[str, ...] | None = Field(None, min_length=2)
    top_k: int = Field(5, ge=1, description="image classification: how many labels come back per instance")
    output: Literal["logits", "probabilities"] = "logits"
    # image
    image_size: tuple[int, int] | None = Field(None, description="height, width the model expects")
    channels: Literal[1, 3] = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    max_image_pixels: int = Field(40_000_000, ge=1, description="larger images are refused before decoding")
    max_request_pixels: int = Field(
        40_000_000, ge=1, description="decoded pixels of all images in one request; more is refused before decoding"
    )
    # limits and precision
    max_instances: int = Field(64, ge=1)
    max_body_bytes: int = Field(6_553_500, ge=1, description="TorchServe's default max_request_size; raise both")
    half_precision: bool = Field(False, description="run in float16; only on a GPU")
    optimize: bool = Field(
        False,
        description="TorchScript: rewrite the model for inference at load (torch.jit.optimize_for_inference), "
        "kept only where it agrees with the model and runs faster on example inputs",
    )
    # identity defaults
    model_name: str | None = None
    model_version: str | None = None
    revision: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind == "tabular":
            self._check_tabular()
        else:
            self._check_image()
        if self.task == "regression" and self.labels is not None:
            raise ValueError("labels make no sense for a regression model")
        if self.task != "regression" and self.output_size != 1:
            raise ValueError("output_size is for regression models")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        return self

    def _check_tabular(self) -> None:
        if self.feature_names is None and self.n_features is None:
            raise ValueError("a tabular model needs feature_names or n_features")
        if self.feature_names is not None:
            if self.n_features is not None and self.n_features != len(self.feature_names):
                raise ValueError(
                    f"n_features is {self.n_features} but there are {len(self.feature_names)} feature_names"
                )
            if len(set(self.feature_names)) != len(self.feature_names):
                raise ValueError("feature_names must be unique")
            clashes = sorted(RESERVED_KEYS & set(self.feature_names))
            if clashes:
                raise ValueError(f"feature names {clashes} clash with request keys; rename them")
        if self.image_size is not None:
            raise ValueError("image_size is for image models")

    def _check_image(self) -> None:
        if self.image_size is None:
            raise ValueError("an image model needs image_size [height, width]")
        if min(self.image_size) < 1:
            raise ValueError("image_size values must be positive")
        if self.task != "classification":
            raise ValueError("image models are classifiers here")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) != self.channels:
                raise ValueError(f"{name} has {len(values)} values but channels is {self.channels}")
        if self.std is not None and any(value <= 0 for value in self.std):
            raise ValueError("std values must be positive")
        if self.feature_names is not None or self.n_features is not None:
            raise ValueError("feature_names and n_features are for tabular models")

    @property
    def features(self) -> int:
        """Feature count of a tabular model."""
        return self.n_features or len(self.feature_names or ())

    def input_spec(self) -> InputSpec:
        """What :func:`model_handlers.protocol.parse_request` checks requests against."""
        outputs = tuple(tensor.name for tensor in self.output_tensors())
        if self.kind == "tabular":
            return InputSpec(
                "tabular",
                n_features=self.features,
                feature_names=self.feature_names or (),
                max_instances=self.max_instances,
                max_body_bytes=self.max_body_bytes,
                output_names=outputs,
            )
        return InputSpec(
            "image", max_instances=self.max_instances, max_body_bytes=self.max_body_bytes, output_names=outputs
        )

    def input_tensor(self) -> TensorSpec:
        """The one v2 input, as model metadata describes it (-1: any number of instances)."""
        if self.kind == "tabular":
            return TensorSpec(self.input_name, "FP32", (-1, self.features))
        return TensorSpec(self.input_name, "BYTES", (-1,))

    def output_tensors(self) -> tuple[TensorSpec, ...]:
        """The v2 outputs the handler answers with; a size the config cannot tell (no labels) is -1."""
        if self.task == "regression":
            shape = (-1,) if self.output_size == 1 else (-1, self.output_size)
            return (TensorSpec("prediction", "FP32", shape),)
        classes = len(self.labels) if self.labels is not None else -1
        if self.kind == "image":
            k = min(self.top_k, classes) if classes > 0 else -1
            return TensorSpec("labels", "BYTES", (-1, k)), TensorSpec("scores", "FP32", (-1, k))
        return TensorSpec("label", "BYTES", (-1,)), TensorSpec("probabilities", "FP32", (-1, classes))

    def identity(self, manifest: Mapping[str, Any] | None, env: Mapping[str, str] | None = None) -> Identity:
        """Name, version and revision: environment first, then this file, then the ``.mar`` manifest."""
        env = os.environ if env is None else env
        model = (manifest or {}).get("model", {}) if isinstance(manifest, Mapping) else {}
        name = env.get(ENV_MODEL_NAME) or self.model_name or model.get("modelName") or "model"
        version = env.get(ENV_MODEL_VERSION) or self.model_version or model.get("modelVersion") or "1"
        revision = env.get(ENV_REVISION) or self.revision or "unknown"
        return Identity(str(name), str(version), str(revision))


def parse_config(raw: Any, source: str = CONFIG_FILE) -> ModelConfig:
    """Validate an already-decoded config; ConfigError lists every problem with its field path."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"]) or "(top level)"
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def load_config(model_dir: str | Path) -> ModelConfig:
    """Read ``esteira-model.json`` from the unpacked archive; ConfigError when missing, malformed or invalid."""
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{CONFIG_FILE} not found in {model_dir}: add it to the .mar with --extra-files")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{CONFIG_FILE}: cannot read: {error}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"{CONFIG_FILE}: malformed JSON: {error.msg} at line {error.lineno}") from None
    return parse_config(raw)

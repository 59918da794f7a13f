"""An eager model packaged as ``esteira package --model-file weights.pt --model-code net.py`` packages it: its
class's source in the archive and its weights as a state dict, which the server loads by importing that source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

import model_handlers
from esteira.packaging.archive import PackageInputs, package
from esteira.packaging.config import RESPONSE_TIMEOUT_SECONDS, ModelSpec, ServerSpec
from esteira.vocabulary import MODEL_CONFIG_FILE


def eager_model(source: str, class_name: str) -> torch.nn.Module:
    """An instance of ``class_name`` from ``source``, as the server will build it (its weights then saved)."""
    namespace: dict[str, Any] = {}
    exec(compile(source, "<eager model>", "exec"), namespace)
    model = namespace[class_name]()
    assert isinstance(model, torch.nn.Module)
    return model


def package_eager(
    root: Path,
    name: str,
    source: str,
    model: torch.nn.Module,
    config: dict[str, Any],
    response_timeout_s: int = RESPONSE_TIMEOUT_SECONDS,
    metrics: bool = False,
) -> Path:
    """``model``'s weights and ``source`` (its one class) packaged as model ``name`` version 1.0.0, batches of
    8, into ``root/packaged``; that folder, a storageUri's. ``metrics``: with the handler's metrics declared, so
    TorchServe exports them."""
    files = root / "files"
    files.mkdir(parents=True)
    code = files / f"{name}_net.py"
    code.write_text(source)
    torch.save(model.state_dict(), files / "weights.pt")
    (files / MODEL_CONFIG_FILE).write_text(json.dumps(config))
    inputs = PackageInputs(
        model_file=files / "weights.pt",
        handler=config["kind"],
        model_code=code,
        extra_files=(files / MODEL_CONFIG_FILE,),
        metrics_config=model_handlers.metrics_config() if metrics else None,
    )
    server = ServerSpec() if metrics else ServerSpec(metrics_config=None)
    model_spec = ModelSpec(name, "1.0.0", batch_size=8, max_batch_delay_ms=10, response_timeout_s=response_timeout_s)
    package(model_spec, inputs, root / "packaged", server)
    return root / "packaged"

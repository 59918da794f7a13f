"""Esteira's TorchServe handlers: the code that runs inside the model server pods (needs torch).

``handler_file(kind)`` gives the file to pass to ``torch-model-archiver --handler``; the archive then carries
that file and TorchServe imports it as a top-level module, whose imports resolve to this installed package.
``metrics_config()`` is the TorchServe metrics YAML to name in ``metrics_config=``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

PACKAGE_DIR = Path(__file__).resolve().parent
HANDLER_FILES = {"tabular": "tabular.py", "image": "image.py"}


def handler_file(kind: Literal["tabular", "image"]) -> Path:
    """The handler source for ``torch-model-archiver --handler``."""
    return PACKAGE_DIR / HANDLER_FILES[kind]


def metrics_config() -> Path:
    """``metrics.yaml`` declaring the metrics the handlers emit (and TorchServe's frontend metrics)."""
    return PACKAGE_DIR / "metrics.yaml"

"""Shared fixtures: the demo models, built once per test process (needs torch and scikit-learn)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.prerequisites import require_module


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    """The four demo models under one directory, and what the build reported for each."""
    require_module("torch")
    require_module("sklearn")
    from model_handlers.demo.build import build_all

    out = tmp_path_factory.mktemp("demo")
    return out, build_all(out)

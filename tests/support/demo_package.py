"""A demo model (`make models`' training output under build/demo) packaged as `make models` packages it, with
keys of its ``esteira-model.json`` set otherwise: what a test or a bench row serves that the packaged folders
under build/models do not hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from esteira.packaging.archive import PackageInputs, package
from esteira.packaging.config import ModelSpec
from esteira.vocabulary import MODEL_CONFIG_FILE

DEMO = Path(__file__).resolve().parents[2] / "build" / "demo"
PROFILE_FILE = "reference-profile.json"


def package_demo(build: str, root: Path, **config: Any) -> Path:
    """``build`` (such as ``iris-1.0.0``) packaged into ``root/<build>``, its config's ``config`` keys replaced;
    that folder, a storageUri's."""
    files = root / "files" / build
    files.mkdir(parents=True, exist_ok=True)
    settings = {**json.loads((DEMO / build / MODEL_CONFIG_FILE).read_text()), **config}
    (files / MODEL_CONFIG_FILE).write_text(json.dumps(settings))
    shutil.copyfile(DEMO / build / PROFILE_FILE, files / PROFILE_FILE)
    inputs = PackageInputs(
        model_file=DEMO / build / "model.pt",
        handler=settings["kind"],
        extra_files=(files / MODEL_CONFIG_FILE, files / PROFILE_FILE),
    )
    name, _, version = build.rpartition("-")
    package(ModelSpec(name, version, batch_size=8, max_batch_delay_ms=10), inputs, root / build)
    return root / build

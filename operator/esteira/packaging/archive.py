"""Build a KServe ``storageUri`` for TorchServe: ``config/config.properties`` plus ``model-store/<name>.mar``.

The archive is made by ``torch-model-archiver`` in a subprocess (it lives in the ``serving`` extra, not in the
operator's environment). The handler is either a file that goes into the archive, or a class installed in the
model server's environment (Esteira's ``model_handlers``). TorchServe 0.12's loader would import a dotted
module name, but the archiver only accepts a file or one of TorchServe's own handler names, and the loader
wants exactly one class defined in the module it imports. So an installed handler is named through a
two-line module in the archive that subclasses it: the archive then pins which handler runs, and the code
comes from the image, so a fix to the handlers needs no new archives.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from esteira.drift.profile import PROFILE_FILE, ReferenceProfile
from esteira.packaging.config import (
    CONFIG_PATH,
    METRICS_CONFIG_PATH,
    MODEL_STORE,
    ModelSpec,
    ServerSpec,
    config_properties,
    model_config_yaml,
)
from esteira.packaging.logs import LOG_CONFIG_PATH, log4j2_xml
from esteira.vocabulary import MODEL_CONFIG_FILE

ARCHIVER = "torch-model-archiver"
SHIM_MODULE = "esteira_handler"
MODEL_CONFIG_NAME = "model-config.yaml"
# Short names for Esteira's handlers, installed in the model server image.
HANDLERS = {
    "tabular": "model_handlers.tabular:TabularHandler",
    "image": "model_handlers.image:ImageClassifierHandler",
}
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class PackagingError(Exception):
    """The inputs cannot be packaged, or the archiver failed; the message says which."""


@dataclass(frozen=True)
class HandlerRef:
    """A handler file to archive as it is, or an installed ``module:Class`` to name through a shim."""

    file: Path | None = None
    module: str | None = None
    cls: str | None = None


def resolve_handler(handler: str) -> HandlerRef:
    """``tabular``/``image``, ``package.module:Class``, or a path to a ``.py`` handler file."""
    target = HANDLERS.get(handler, handler)
    if target.endswith(".py"):
        return HandlerRef(file=Path(target))
    module, sep, cls = target.partition(":")
    if not sep or not _DOTTED.fullmatch(module) or not cls.isidentifier():
        known = ", ".join(sorted(HANDLERS))
        raise PackagingError(f"handler {handler!r}: expected {known}, package.module:Class, or a .py file")
    return HandlerRef(module=module, cls=cls)


def handler_shim(module: str, cls: str) -> str:
    """The archived module that names an installed handler class (TorchServe loads its only class)."""
    return (
        f'"""Handler entry point: {module}.{cls}, installed in the model server\'s environment."""\n\n'
        f"from {module} import {cls} as _Handler\n\n\n"
        "class ArchiveHandler(_Handler):\n"
        f'    """TorchServe instantiates the one class defined here; the behaviour is {cls}\'s."""\n'
    )


@dataclass(frozen=True)
class PackageInputs:
    """Files that go into one archive."""

    model_file: Path  # TorchScript, or a state dict when model_code is given
    handler: str
    model_code: Path | None = None  # eager model definition (the archiver's --model-file)
    extra_files: tuple[Path, ...] = ()
    requirements_file: Path | None = None
    metrics_config: Path | None = None  # copied to config/metrics.yaml; None: TorchServe's default metrics


@dataclass(frozen=True)
class PackageResult:
    out: Path
    config: Path
    mar: Path
    manifest: dict[str, Any] = field(default_factory=dict)


def archiver_command(
    archiver: str,
    model: ModelSpec,
    inputs: PackageInputs,
    handler_file: Path,
    config_file: Path,
    export_path: Path,
) -> list[str]:
    """The ``torch-model-archiver`` command line (pure; paths are passed as given)."""
    command = [
        archiver,
        f"--model-name={model.name}",
        f"--version={model.version}",
        f"--serialized-file={inputs.model_file}",
        f"--handler={handler_file}",
        f"--config-file={config_file}",
        f"--export-path={export_path}",
        "--force",
    ]
    if inputs.model_code is not None:
        command.append(f"--model-file={inputs.model_code}")
    if inputs.extra_files:
        command.append("--extra-files=" + ",".join(str(p) for p in inputs.extra_files))
    if inputs.requirements_file is not None:
        command.append(f"--requirements-file={inputs.requirements_file}")
    return command


def find_archiver() -> str:
    """The archiver beside this interpreter (a virtual environment), else on PATH."""
    beside = Path(sys.executable).parent / ARCHIVER
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(ARCHIVER)
    if found is None:
        raise PackagingError(f"{ARCHIVER} not found: install Esteira's serving extra (pip install '.[serving]')")
    return found


def _check_inputs(inputs: PackageInputs, handler: HandlerRef) -> None:
    files = [inputs.model_file, *inputs.extra_files]
    files += [p for p in (inputs.model_code, inputs.requirements_file, inputs.metrics_config, handler.file) if p]
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise PackagingError("not found: " + ", ".join(missing))
    if not inputs.model_file.is_file():  # a folder passed the check above and failed in the archiver's traceback
        raise PackagingError(f"--model-file {inputs.model_file} is not a file")
    if any("," in str(p) for p in inputs.extra_files):
        raise PackagingError("extra file paths may not contain ',' (the archiver splits on it)")
    configs, profiles = [], []
    for path in inputs.extra_files:
        # The archiver copies a folder's items into the archive's root: its esteira-model.json is the handler's.
        for found in (path / MODEL_CONFIG_FILE, path / PROFILE_FILE) if path.is_dir() else (path,):
            if found.name == MODEL_CONFIG_FILE and found.is_file():
                configs.append(found)
            elif found.name == PROFILE_FILE and found.is_file():
                profiles.append(found)
    for config in configs:
        _check_model_config(config, eager=inputs.model_code is not None)
    if configs and profiles:
        _check_profile(profiles[0], configs[0])


def _check_model_config(path: Path, eager: bool) -> None:
    """What Esteira's handler would refuse in ``esteira-model.json`` at load, refused before anything is written,
    and ``optimize`` asked of an eager model, which the handler can only serve as loaded (the rewrite takes
    TorchScript). Where the handlers are not installed (the operator's image), the model server checks the file
    as it loads."""
    if importlib.util.find_spec("model_handlers") is None:
        return
    from model_handlers.config import ConfigError, load_config

    try:
        config = load_config(path.parent)
    except ConfigError as error:
        raise PackagingError(f"{path}: {str(error).removeprefix(MODEL_CONFIG_FILE + ': ')}") from None
    if eager and config.optimize:
        raise PackagingError(
            f"{path}: optimize: the rewrite at load takes a TorchScript model, and this one is a state dict with "
            "--model-code; package the scripted or traced model, or leave optimize out"
        )


def _check_profile(profile: Path, config: Path) -> None:
    """A reference profile the model server could never count against, refused before anything is written: the
    server counts drift only for the model's inputs by name, and left the rest out without a word."""
    if importlib.util.find_spec("model_handlers") is None:
        return
    from model_handlers.config import load_config
    from model_handlers.drift import profile_problems

    try:
        reference = ReferenceProfile.model_validate_json(profile.read_bytes())
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(document)"
        raise PackagingError(f"{profile}: {where}: {first['msg']}") from None
    problems = profile_problems(reference, load_config(config.parent))
    if problems:
        raise PackagingError(f"{profile}: {problems[0]} (in {config})")


def read_manifest(mar: Path) -> dict[str, Any]:
    with zipfile.ZipFile(mar) as archive:
        manifest: dict[str, Any] = json.loads(archive.read("MAR-INF/MANIFEST.json"))
    return manifest


def package(
    model: ModelSpec,
    inputs: PackageInputs,
    out: Path,
    server: ServerSpec | None = None,
    archiver: str | None = None,
) -> PackageResult:
    """Write ``out/config/config.properties`` (and ``metrics.yaml``, ``log4j2.xml``) and ``out/model-store/<name>.mar``."""
    handler = resolve_handler(inputs.handler)
    _check_inputs(inputs, handler)
    server = server or ServerSpec(metrics_config=METRICS_CONFIG_PATH if inputs.metrics_config else None)
    if (server.metrics_config is not None) != (inputs.metrics_config is not None):
        raise PackagingError("a metrics config file is needed exactly when the server config names one")
    archiver = archiver or find_archiver()
    created = not out.exists()
    try:
        return _write_package(model, inputs, out, server, archiver, handler)
    except PackagingError:
        if created:  # a half-written folder would look like a package (a storageUri) and serve nothing
            shutil.rmtree(out, ignore_errors=True)
        raise


def _write_package(
    model: ModelSpec, inputs: PackageInputs, out: Path, server: ServerSpec, archiver: str, handler: HandlerRef
) -> PackageResult:
    store = out / MODEL_STORE
    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="esteira-package-") as tmp:
        work = Path(tmp)
        if handler.file is not None:
            handler_file = handler.file
        else:
            assert handler.module is not None and handler.cls is not None
            handler_file = work / f"{SHIM_MODULE}.py"
            handler_file.write_text(handler_shim(handler.module, handler.cls))
        config_file = work / MODEL_CONFIG_NAME
        config_file.write_text(model_config_yaml(model))
        command = archiver_command(archiver, model, inputs, handler_file, config_file, store)
        # The archiver stages files in $TMPDIR/<model name>: a private TMPDIR keeps parallel builds apart.
        scratch = work / "scratch"
        scratch.mkdir()
        env = {**os.environ, "TMPDIR": str(scratch)}
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise PackagingError(f"{ARCHIVER} failed ({done.returncode}): " + " | ".join(detail))
    mar = store / model.mar_name
    if not mar.is_file():
        raise PackagingError(f"{ARCHIVER} wrote no {mar}")
    config = out / CONFIG_PATH
    config.parent.mkdir(parents=True, exist_ok=True)
    if inputs.metrics_config is not None and server.metrics_config is not None:
        shutil.copyfile(inputs.metrics_config, out / server.metrics_config)
    config.write_text(config_properties([model], server))
    (out / LOG_CONFIG_PATH).write_text(log4j2_xml())
    return PackageResult(out=out, config=config, mar=mar, manifest=read_manifest(mar))


def expand_extra_files(values: Sequence[str]) -> tuple[Path, ...]:
    """Extra files given as repeated or comma-separated arguments."""
    return tuple(Path(part) for value in values for part in value.split(",") if part.strip())

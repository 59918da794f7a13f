"""Reading a ModelDeployment file for a local run: the same schema as in the cluster, local storage only.

Every problem in a file is reported at once, each naming its field (a YAML error its line and column). A
storageUri names a folder on this machine (a path, ``file:///...`` or ``file://localhost/...``); with
``ESTEIRA_LOCAL_ROOT`` set, it must resolve, symlinks followed, to a folder inside that root.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from esteira.api.errors import FieldProblem, InvalidSpec
from esteira.api.spec import ModelDeploymentSpec
from esteira.manifests import load_documents, read_document
from esteira.packaging.config import CONFIG_PATH, parse_properties
from esteira.vocabulary import ENV_LOCAL_ROOT

STORAGE_FIELD = "spec.model.storageUri"


@dataclass(frozen=True)
class LocalManifest:
    """One ModelDeployment read from a file, its storageUri turned into a local file:// URL."""

    name: str
    namespace: str
    spec: ModelDeploymentSpec


def model_dir(storage_uri: str) -> Path:
    """The folder a local storageUri names (file:// URL, host empty or localhost); other schemes need a cluster."""
    parsed = urlparse(storage_uri)
    if parsed.scheme != "file":
        raise ValueError(f"storageUri {storage_uri!r}: a local run needs a folder path or a file:// URL")
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(
            f"storageUri {storage_uri!r}: a file:// URL names this machine (file:///path or file://localhost/path)"
        )
    return Path(unquote(parsed.path))


def contained(folder: Path, root: Path) -> Path:
    """`folder` with symlinks and `..` resolved, if that stays inside `root`; ValueError otherwise."""
    try:
        resolved, boundary = folder.resolve(), root.resolve()
    except RuntimeError as exc:  # a symlink loop
        raise ValueError(f"{folder}: {exc}") from None
    if not resolved.is_relative_to(boundary):
        raise ValueError(f"resolves to {resolved}, outside {boundary} ({ENV_LOCAL_ROOT})")
    return resolved


def storage_problems(storage_uri: str, model_name: Any) -> list[FieldProblem]:
    """Whether the folder exists, stays in the allowed root and serves the model the spec names."""
    try:
        folder = model_dir(storage_uri)
        if os.environ.get(ENV_LOCAL_ROOT):
            folder = contained(folder, Path(os.environ[ENV_LOCAL_ROOT]))
    except ValueError as exc:
        return [FieldProblem(STORAGE_FIELD, str(exc))]
    config = folder / CONFIG_PATH
    if not config.is_file():
        return [FieldProblem(STORAGE_FIELD, f"{folder}: no {CONFIG_PATH} (run esteira package)")]
    served = served_names(config)
    if served and isinstance(model_name, str) and model_name not in served:
        names = ", ".join(repr(name) for name in served)
        return [FieldProblem("spec.model.name", f"the archive at {folder} serves model(s) {names}, not {model_name!r}")]
    return []


def served_names(config: Path) -> list[str]:
    """The model names a packaged folder's config.properties registers (its model_snapshot), if readable."""
    try:
        snapshot = json.loads(parse_properties(config.read_text()).get("model_snapshot") or "{}")
        models = snapshot.get("models") if isinstance(snapshot, dict) else None
    except (OSError, ValueError):
        return []
    return [str(name) for name in models] if isinstance(models, dict) else []


def _local_uri(raw: str, base: Path) -> str:
    """A bare path (relative to the manifest's folder) or a file:// URL becomes the absolute file:// URL of the
    folder it resolves to now (other URLs stay, for the storage check to refuse): the folder checked is the one
    served, and a symlink retargeted later (out of ESTEIRA_LOCAL_ROOT, say) is not followed at the next start."""
    path = base / raw if "://" not in raw else None
    try:
        if path is not None:
            return path.resolve().as_uri()
        if raw.startswith("file:"):
            return model_dir(raw).resolve().as_uri()
    except (ValueError, OSError, RuntimeError):  # a file:// URL naming another host, a symlink loop: checked below
        return path.absolute().as_uri() if path is not None else raw
    return raw


def parse_manifest(text: str, base: Path) -> LocalManifest:
    """Validate the first ModelDeployment document (or the only document); InvalidSpec lists every problem."""
    docs = load_documents(text)
    found = [d for d in docs if d.get("kind") == "ModelDeployment"] or (docs if len(docs) == 1 else [])
    if not found:
        raise InvalidSpec.single("kind", "no ModelDeployment document found")
    doc: dict[str, Any] = dict(found[0])
    spec_raw = doc.get("spec")
    model: dict[str, Any] = {}
    if isinstance(spec_raw, dict) and isinstance(spec_raw.get("model"), dict):
        model = dict(spec_raw["model"])
        if isinstance(model.get("storageUri"), str):
            model["storageUri"] = _local_uri(model["storageUri"], base)
        doc["spec"] = {**spec_raw, "model": model}
    try:
        name, namespace, spec = read_document(doc)
    except InvalidSpec as refused:
        # Every problem at once: the folder too, where the spec's rules left its fields alone.
        named = {problem.path for problem in refused.problems}
        uri = model.get("storageUri")
        more = storage_problems(uri, model.get("name")) if isinstance(uri, str) and STORAGE_FIELD not in named else []
        raise InvalidSpec([*refused.problems, *(p for p in more if p.path not in named)]) from None
    problems = storage_problems(spec.model.storage_uri, spec.model.name)
    if problems:
        raise InvalidSpec(problems)
    return LocalManifest(name=name, namespace=namespace, spec=spec)


def write_whole(path: Path, text: str) -> None:
    """Replace ``path``'s text in one step (written beside it, then renamed), so that `esteira up`, which reads
    the file whenever it changes, never reads it half-written (as a save in place can be read)."""
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(text)
    staged.replace(path)


def load_manifest(path: Path) -> LocalManifest:
    """Read and validate a file (OSError when it cannot be read)."""
    return parse_manifest(path.read_text(), path.resolve().parent)


__all__ = ["InvalidSpec", "LocalManifest", "load_manifest", "model_dir", "parse_manifest", "write_whole"]

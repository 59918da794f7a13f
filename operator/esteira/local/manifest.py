"""Reading a ModelDeployment file for a local run: the same schema as in the cluster, local storage only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from esteira.api.errors import InvalidSpec
from esteira.api.spec import ModelDeploymentSpec


@dataclass(frozen=True)
class LocalManifest:
    """One ModelDeployment read from a file, its storageUri turned into a local file:// URL."""

    name: str
    namespace: str
    spec: ModelDeploymentSpec


def model_dir(storage_uri: str) -> Path:
    """The folder a local storageUri names (file:// URL); other schemes need a cluster."""
    parsed = urlparse(storage_uri)
    if parsed.scheme != "file":
        raise ValueError(f"storageUri {storage_uri!r}: a local run needs a folder path or a file:// URL")
    return Path(unquote(parsed.netloc + parsed.path))


def _local_uri(raw: str, base: Path) -> str:
    """A bare path (relative to the manifest's folder) becomes an absolute file:// URL; URLs stay."""
    if "://" in raw:
        return raw
    return (base / raw).resolve().as_uri()


def parse_manifest(text: str, base: Path) -> LocalManifest:
    """Validate the first ModelDeployment document; raises InvalidSpec or ValueError saying what is wrong."""
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    found = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ModelDeployment"]
    if not found:
        raise ValueError("no ModelDeployment document found")
    doc: dict[str, Any] = found[0]
    metadata = doc.get("metadata") or {}
    spec_raw = dict(doc.get("spec") or {})
    model = dict(spec_raw.get("model") or {})
    if isinstance(model.get("storageUri"), str):
        model["storageUri"] = _local_uri(model["storageUri"], base)
        spec_raw["model"] = model
    spec = ModelDeploymentSpec.parse(spec_raw)
    folder = model_dir(spec.model.storage_uri)
    if not (folder / "config" / "config.properties").is_file():
        raise ValueError(f"storageUri {spec.model.storage_uri}: no config/config.properties (run esteira package)")
    name = str(metadata.get("name") or spec.model.name)
    return LocalManifest(name=name, namespace=str(metadata.get("namespace") or "default"), spec=spec)


def load_manifest(path: Path) -> LocalManifest:
    return parse_manifest(path.read_text(), path.resolve().parent)


__all__ = ["InvalidSpec", "LocalManifest", "load_manifest", "model_dir", "parse_manifest"]

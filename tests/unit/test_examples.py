"""The example ModelDeployments validate against Esteira's CRD, and what they render against KServe's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from esteira.manifests import render_document
from tests.support.schemas import ManifestError, validate_custom_resource
from tests.support.specs import document, spec

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "manifests" / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates_and_renders_valid_kserve(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        validate_custom_resource(doc)
        for obj in render_document(doc, prometheus_url="http://prometheus:9090"):
            validate_custom_resource(obj)


def test_crd_schema_rejects_what_the_model_rejects() -> None:
    """The generated schema is live: a bad enum and a CEL violation both fail validation."""
    with pytest.raises(ManifestError, match=r"spec\.deploymentMode"):
        validate_custom_resource(document(spec(deploymentMode="Serverless")))
    with pytest.raises(ManifestError, match=r"rollout\.steps must end at 100"):
        validate_custom_resource(document(spec(rollout={"steps": [10, 50]})))

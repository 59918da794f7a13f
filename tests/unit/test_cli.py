"""`esteira render` and `esteira crd`, run as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from esteira.cli import main
from tests.unit.specs import document, spec

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "manifests" / "examples").glob("*.yaml"))


def test_render_writes_inference_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(document(spec())))
    assert main(["render", str(path)]) == 0
    (isvc,) = list(yaml.safe_load_all(capsys.readouterr().out))
    assert isvc["kind"] == "InferenceService"
    assert isvc["metadata"] == {**isvc["metadata"], "name": "iris", "namespace": "models"}


def test_render_reports_each_problem_with_file_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document(spec(autoscaling={"metric": "rps", "minReplicas": 0}))))
    assert main(["render", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}: spec.autoscaling.metric: rps scaling needs Knative: use deploymentMode Knative, or scale on "
        "cpu, memory or gpu-utilization in Standard mode",
        f"{path}: spec.autoscaling.minReplicas: Standard mode keeps at least one replica (the HPA raises 0 to 1): "
        "use deploymentMode Knative with metric concurrency or rps to scale to zero",
    ]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({**document(spec()), "kind": "Deployment"}, "kind: must be ModelDeployment"),
        ({**document(spec()), "apiVersion": "v1"}, "apiVersion: must be serving.esteira.io/v1alpha1"),
        (document(spec(), name="x" * 50), "metadata.name: must be a DNS label of at most 45 characters"),
    ],
)
def test_render_checks_identity(tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: dict, message: str) -> None:
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["render", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_render_rejects_broken_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "md.yaml"
    path.write_text("spec: [unclosed")
    assert main(["render", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


def test_console_script_prints_the_crd() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "esteira.cli", "crd"], check=True, capture_output=True, text=True
    ).stdout
    crd = yaml.safe_load(out)
    assert crd["kind"] == "CustomResourceDefinition"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_render(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(path), "--prometheus-url", "http://prometheus:9090"]) == 0
    assert "InferenceService" in capsys.readouterr().out

"""`esteira render` and `esteira crd`, run as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from esteira.cli import main
from tests.support.specs import document, spec

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
        f"{path}: spec.autoscaling.minReplicas: Standard mode keeps at least one replica (the HPA raises 0 to 1): "
        "use deploymentMode Knative with metric concurrency or rps to scale to zero",
        f"{path}: spec.autoscaling.metric: concurrency and rps scaling need Knative: use deploymentMode Knative, or "
        "scale on cpu, memory or gpu-utilization in Standard mode",
    ]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({**document(spec()), "kind": "Deployment"}, "kind: must be ModelDeployment"),
        ({**document(spec()), "apiVersion": "v1"}, "apiVersion: must be serving.esteira.io/v1alpha1"),
        (document(spec(), name="x" * 46), "metadata.name: must start with a letter"),
        (document(spec(), name="9lives"), "at most 45 characters (it names the InferenceService"),
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


def _render_docs(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict]:
    assert main(["render", *argv]) == 0
    return list(yaml.safe_load_all(capsys.readouterr().out))


def test_render_prints_every_object_the_gateway_router_applies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(document(spec(rollout={"router": "GatewayAPI"}))))
    kinds = [(d["kind"], d["metadata"]["name"]) for d in _render_docs(capsys, str(path))]
    assert kinds == [("InferenceService", "iris-rev-1"), ("HTTPRoute", "iris")]

    docs = _render_docs(
        capsys, str(path), "--canary-weight", "25", "--stable-version", "0.9.0", "--stable-storage-uri", "s3://m/0.9"
    )
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("InferenceService", "iris-rev-1"),
        ("InferenceService", "iris-rev-2"),
        ("HTTPRoute", "iris"),
    ]
    assert docs[0]["spec"]["predictor"]["model"]["storageUri"] == "s3://m/0.9"
    split = docs[2]["spec"]["rules"][-1]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in split] == [("iris-rev-1-predictor", 75), ("iris-rev-2-predictor", 25)]


def test_render_shows_a_kserve_canary_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(document(spec())))
    (isvc,) = _render_docs(capsys, str(path), "--canary-weight", "10", "--stable-version", "0.9.0")
    (canary,) = isvc["spec"]["canary"]
    assert (canary["trafficPercent"], canary["predictor"]["name"]) == (10, "rev-2")
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == canary["predictor"]["model"]["storageUri"]


def test_render_refuses_a_weight_that_is_not_a_percentage(tmp_path: Path) -> None:
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(document(spec())))
    with pytest.raises(SystemExit):
        main(["render", str(path), "--canary-weight", "101"])


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

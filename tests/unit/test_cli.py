"""`esteira render` and `esteira crd`, run as a user runs them."""

from __future__ import annotations

import json
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
    assert docs[2]["spec"]["hostnames"] == ["iris-models.example.com"]
    route = _render_docs(capsys, str(path), "--ingress-domain", "ml.example.org")[-1]
    assert route["spec"]["hostnames"] == ["iris-models.ml.example.org"]  # as the operator given the same flag


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


# --- every mistake named once, clearly, with nothing left behind ---------------------------------------------

IRIS = REPO / "build" / "models" / "iris-1.0.0"


def _local_doc(folder: Path = IRIS, name: str = "iris", **top: object) -> str:
    doc = {
        "apiVersion": "serving.esteira.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris"},
        "spec": {"model": {"name": name, "version": "1.0.0", "storageUri": str(folder)}},
        **top,
    }
    return yaml.safe_dump(doc)


def _packaged(tmp_path: Path, model: str = "iris") -> Path:
    """A folder shaped like `esteira package` output (config only), registering `model`."""
    folder = tmp_path / "pkg"
    (folder / "config").mkdir(parents=True, exist_ok=True)
    snapshot = json.dumps({"name": "startup.cfg", "models": {model: {"1.0": {"marName": f"{model}.mar"}}}})
    (folder / "config" / "config.properties").write_text(f"model_snapshot={snapshot}\n")
    return folder


def test_broken_yaml_names_file_line_and_column_in_render_and_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "md.yaml"
    path.write_text("apiVersion: serving.esteira.io/v1alpha1\nkind: ModelDeployment\nspec: [unclosed\n")
    for command in (["render", str(path)], ["up", "-f", str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{path}: line 4, column 1: invalid YAML"), err
        assert "Traceback" not in err


def test_a_missing_file_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.yaml"
    for command in (["render", str(missing)], ["up", "-f", str(missing)]):
        assert main(command) == 2
        assert capsys.readouterr().err == f"{missing}: cannot read the file: No such file or directory\n"


def test_every_mistake_is_reported_at_once_and_a_typo_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = {"apiVersion": "v1", "kind": "ModelDeployment", "metadata": {"name": "9lives"}, "spc": {}}
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(doc))
    for command in (["render", str(path)], ["up", "-f", str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{path}: spc: unknown top-level field (did you mean 'spec'?)" in err
        assert f"{path}: apiVersion: must be serving.esteira.io/v1alpha1" in err
        assert f"{path}: metadata.name:" in err
        assert f"{path}: spec.model:" in err


def test_a_model_name_the_archive_does_not_serve_fails_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "md.yaml"
    folder = _packaged(tmp_path, "iris")
    path.write_text(_local_doc(folder, name="flower"))
    assert main(["up", "-f", str(path)]) == 2
    assert (
        f"{path}: spec.model.name: the archive at {folder} serves model(s) 'iris', not 'flower'"
        in capsys.readouterr().err
    )


def test_a_failed_up_leaves_no_temporary_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    path = tmp_path / "md.yaml"
    path.write_text(_local_doc(_packaged(tmp_path), name="flower"))
    assert main(["up", "-f", str(path)]) == 2
    path.write_text("kind: [")
    assert main(["up", "-f", str(path)]) == 2
    capsys.readouterr()
    assert not list(scratch.iterdir())


def test_storage_uri_forms_and_containment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from esteira.api.errors import InvalidSpec
    from esteira.local.manifest import model_dir, parse_manifest

    folder = _packaged(tmp_path)
    assert model_dir(f"file://localhost{folder}") == folder
    assert model_dir(folder.as_uri()) == folder
    with pytest.raises(ValueError, match="names this machine"):
        model_dir(f"file://elsewhere{folder}")
    root = tmp_path / "allowed"
    root.mkdir()
    (root / "link").symlink_to(folder)
    monkeypatch.setenv("ESTEIRA_LOCAL_ROOT", str(root))
    for uri in ("link", "../pkg", str(root / ".." / "pkg")):
        with pytest.raises(InvalidSpec, match=r"spec.model.storageUri: resolves to .*, outside .*ESTEIRA_LOCAL_ROOT"):
            parse_manifest(_local_doc(Path(uri)).replace(str(Path(uri)), uri), root)
    monkeypatch.setenv("ESTEIRA_LOCAL_ROOT", str(tmp_path))
    assert parse_manifest(_local_doc(folder), tmp_path).spec.model.name == "iris"


def test_status_with_nothing_running_says_how_to_point_elsewhere(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SystemExit) as exited:
        main(["status", "--url", f"http://127.0.0.1:{port}"])
    message = str(exited.value.code)
    assert f"no local runtime answers at http://127.0.0.1:{port}" in message
    assert "--url" in message and "ESTEIRA_LOCAL_URL" in message


def test_output_into_a_closed_pipe_ends_quietly() -> None:
    """`esteira ... | head`: the reader is gone before the writer writes; the writer exits without a traceback."""
    reader = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE)
    reader.wait(30)
    assert reader.stdin is not None
    printer = subprocess.run(
        [sys.executable, "-m", "esteira.cli", "crd"], stdout=reader.stdin, stderr=subprocess.PIPE, text=True, timeout=60
    )
    reader.stdin.close()
    assert printer.returncode == 0
    assert "BrokenPipeError" not in printer.stderr and "Traceback" not in printer.stderr, printer.stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["status", "--url", "http://127.0.0.1:abc"], "'http://127.0.0.1:abc' is not a router URL"),
        (["status", "--url", "localhost"], "'localhost' is not a router URL"),
        (["pause", "--url", "http://127.0.0.1:99999"], "'http://127.0.0.1:99999' is not a router URL"),
        (["up", "-f", "md.yaml", "--port", "-1"], "'-1' is not a port (1-65535)"),
        (["up", "-f", "md.yaml", "--port", "70000"], "'70000' is not a port (1-65535)"),
    ],
)
def test_a_url_or_port_that_cannot_be_is_one_line_naming_the_argument(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """They ended in a traceback, or (port 70000) a router listening elsewhere than it said."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_render_logs_to_the_collector_it_is_told_of(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A spec logging to Esteira's collector without a URL renders as the operator with that collector would."""
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(document(spec(logging={"mode": "all"}))))
    assert main(["render", str(path)]) == 2
    assert "esteira render --collector-url" in capsys.readouterr().err
    (isvc,) = _render_docs(capsys, str(path), "--collector-url", "http://esteira-collector.esteira-system.svc:8080")
    env = {e["name"]: e.get("value") for e in isvc["spec"]["predictor"]["model"]["env"]}
    assert env["ESTEIRA_LOG_URL"] == "http://esteira-collector.esteira-system.svc:8080/v1/records"


def test_a_runtime_that_answers_too_late_is_not_said_to_be_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    """It may still carry the command out: told none ran, a person sent promote again, and it moved two steps."""
    import socket

    from esteira.local import cli as local_cli

    monkeypatch.setattr(local_cli, "CALL_TIMEOUT_SECONDS", 0.3)
    with socket.socket() as listening:  # accepts, and never answers
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        url = f"http://127.0.0.1:{listening.getsockname()[1]}"
        with pytest.raises(SystemExit) as exited:
            local_cli.call(url, "/control/promote", {})
    message = str(exited.value.code)
    assert "did not answer within 0.3s" in message and "esteira status" in message
    assert "no local runtime answers" not in message

"""`esteira package`: handler resolution, the archiver command, and real archives (torch-model-archiver)."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from esteira.packaging.archive import (
    HANDLERS,
    HandlerRef,
    PackageInputs,
    PackagingError,
    archiver_command,
    expand_extra_files,
    handler_shim,
    package,
    resolve_handler,
)
from esteira.packaging.cli import default_metrics_config
from esteira.packaging.config import ModelSpec, ServerSpec, parse_properties
from esteira.packaging.logs import log4j2_xml
from tests.packaging.support import package_cli
from tests.support.prerequisites import require_module

REPO = Path(__file__).resolve().parents[2]


# --- pure parts -----------------------------------------------------------------------------------


def test_resolve_handler_forms() -> None:
    assert resolve_handler("tabular") == HandlerRef(module="model_handlers.tabular", cls="TabularHandler")
    assert resolve_handler("image") == HandlerRef(module="model_handlers.image", cls="ImageClassifierHandler")
    assert resolve_handler("acme.serving.handlers:Fraud") == HandlerRef(module="acme.serving.handlers", cls="Fraud")
    assert resolve_handler("handlers/custom.py") == HandlerRef(file=Path("handlers/custom.py"))


@pytest.mark.parametrize("bad", ["image_classifier", "acme.handlers", "acme..x:Cls", "acme.x:not-a-class", ":Cls"])
def test_resolve_handler_rejects(bad: str) -> None:
    with pytest.raises(PackagingError, match="handler"):
        resolve_handler(bad)


def test_archiver_command() -> None:
    inputs = PackageInputs(
        model_file=Path("m/model.pt"),
        handler="tabular",
        extra_files=(Path("m/esteira-model.json"), Path("m/ref.json")),
        requirements_file=Path("req.txt"),
    )
    command = archiver_command(
        "tma", ModelSpec("iris", "1.0.0"), inputs, Path("w/esteira_handler.py"), Path("w/mc.yaml"), Path("out/ms")
    )
    assert command == [
        "tma",
        "--model-name=iris",
        "--version=1.0.0",
        "--serialized-file=m/model.pt",
        "--handler=w/esteira_handler.py",
        "--config-file=w/mc.yaml",
        "--export-path=out/ms",
        "--force",
        "--extra-files=m/esteira-model.json,m/ref.json",
        "--requirements-file=req.txt",
    ]
    eager = archiver_command(
        "tma",
        ModelSpec("iris", "1"),
        PackageInputs(Path("w.pt"), "tabular", model_code=Path("net.py")),
        Path("h.py"),
        Path("c.yaml"),
        Path("o"),
    )
    assert "--model-file=net.py" in eager
    assert not any(part.startswith("--extra-files") for part in eager)


def test_expand_extra_files() -> None:
    assert expand_extra_files(["a.json,b.json", "c", ""]) == (Path("a.json"), Path("b.json"), Path("c"))


def test_handler_shim_is_what_torchserve_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shim goes through TorchServe 0.12's own loader: one class in the module, the installed handler's."""
    loader_module = require_module("ts.model_loader")
    package_dir = tmp_path / "site" / "acme_handlers"
    package_dir.mkdir(parents=True)
    (package_dir / "__init__.py").write_text("")
    (package_dir / "fraud.py").write_text(
        "class Helper:\n    pass\n\n\n"
        "class FraudHandler:\n"
        "    def initialize(self, context):\n        self.context = context\n"
        "    def handle(self, data, context):\n        return ['fraud'] * len(data)\n"
    )
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    (archive_dir / "esteira_handler.py").write_text(handler_shim("acme_handlers.fraud", "FraudHandler"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(archive_dir))  # TorchServe puts the unpacked archive on sys.path
    monkeypatch.delitem(sys.modules, "esteira_handler", raising=False)
    loader = loader_module.TsModelLoader()
    module, function = loader._load_handler_file("esteira_handler.py")
    assert function is None
    handle, initialize = loader._get_class_entry_point(module)
    initialize("ctx")
    assert handle([{}, {}], "ctx") == ["fraud", "fraud"]
    assert importlib.import_module("acme_handlers.fraud").FraudHandler in type(handle.__self__).__mro__


# --- real archives --------------------------------------------------------------------------------


def _demo_inputs(out: Path, key: str) -> list[str]:
    directory = out / key
    files = [str(directory / name) for name in ("esteira-model.json", "reference-profile.json")]
    return ["--model-file", str(directory / "model.pt"), "--extra-files", *files]


def _mar_files(mar: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(mar) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.mark.slow
def test_package_iris_with_installed_handler(demo_models: tuple[Path, list[Any]], tmp_path: Path) -> None:
    out = tmp_path / "iris-1.0.0"
    argv = ["--name", "iris", "--version", "1.0.0", "--handler", "tabular", *_demo_inputs(demo_models[0], "iris-1.0.0")]
    argv += ["--batch-size", "8", "--max-batch-delay-ms", "10", "--workers", "2", "--out", str(out)]
    assert package_cli(argv) == 0

    files = _mar_files(out / "model-store" / "iris.mar")
    manifest = json.loads(files["MAR-INF/MANIFEST.json"])
    assert manifest["runtime"] == "python"
    assert manifest["model"] == {
        "modelName": "iris",
        "modelVersion": "1.0.0",
        "serializedFile": "model.pt",
        "handler": "esteira_handler.py",
        "configFile": "model-config.yaml",
    }
    assert set(files) == {
        "MAR-INF/MANIFEST.json",
        "model.pt",
        "esteira_handler.py",
        "model-config.yaml",
        "esteira-model.json",
        "reference-profile.json",
        "model-card.json",
    }
    assert b"from model_handlers.tabular import TabularHandler" in files["esteira_handler.py"]
    assert yaml.safe_load(files["model-config.yaml"]) == {
        "minWorkers": 2,
        "maxWorkers": 2,
        "batchSize": 8,
        "maxBatchDelay": 10,
        "responseTimeout": 120,
        "startupTimeout": 120,
        "maxRetryTimeoutInSec": 60,
    }
    assert files["model.pt"] == (demo_models[0] / "iris-1.0.0" / "model.pt").read_bytes()

    props = parse_properties((out / "config" / "config.properties").read_text())
    entry = json.loads(props["model_snapshot"])["models"]["iris"]["1.0.0"]
    assert (entry["marName"], entry["batchSize"], entry["maxBatchDelay"], entry["minWorkers"]) == ("iris.mar", 8, 10, 2)
    assert props["model_store"] == "/mnt/models/model-store"
    assert (out / "config" / "log4j2.xml").read_text() == log4j2_xml()
    metrics = default_metrics_config()
    if metrics is None:
        assert "metrics_config" not in props
    else:
        assert props["metrics_config"] == "/mnt/models/config/metrics.yaml"
        assert (out / "config" / "metrics.yaml").read_bytes() == metrics.read_bytes()


@pytest.mark.slow
def test_package_with_handler_file_and_no_metrics(demo_models: tuple[Path, list[Any]], tmp_path: Path) -> None:
    handler = tmp_path / "my_handler.py"
    handler.write_text("class MyHandler:\n    pass\n")
    out = tmp_path / "digits"
    argv = ["--name", "digits", "--version", "1.1.0", "--handler", str(handler), "--no-metrics-config"]
    argv += [*_demo_inputs(demo_models[0], "digits-1.1.0"), "--out", str(out)]
    assert package_cli(argv) == 0
    files = _mar_files(out / "model-store" / "digits.mar")
    assert json.loads(files["MAR-INF/MANIFEST.json"])["model"]["handler"] == "my_handler.py"
    assert files["my_handler.py"] == handler.read_bytes()
    assert "esteira_handler.py" not in files
    assert "metrics_config" not in parse_properties((out / "config" / "config.properties").read_text())


@pytest.mark.slow
def test_package_writes_the_model_card(
    demo_models: tuple[Path, list[Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ESTEIRA_RETRAIN_RUN", "4")  # packaged inside retraining run 4's Job
    data = tmp_path / "train.csv"
    data.write_text("a,b,label\n1,2,0\n3,4,1\n5,6,1\n")
    out = tmp_path / "iris-1.2.0"
    argv = ["--name", "iris", "--version", "1.2.0", "--handler", "tabular", *_demo_inputs(demo_models[0], "iris-1.0.0")]
    argv += ["--parent-version", "1.0.0", "--training-data", str(data), "--validation-metric", "accuracy"]
    argv += ["--validation-score", "0.97", "--owner", "ml-team", "--out", str(out)]
    argv += ["--validation-baseline-version", "1.0.0", "--validation-baseline-score", "0.91"]
    assert package_cli(argv) == 0
    card = json.loads(_mar_files(out / "model-store" / "iris.mar")["model-card.json"])
    assert card["parentVersion"] == "1.0.0" and card["owner"] == "ml-team" and card["retrainingRun"] == 4
    baseline = {"version": "1.0.0", "score": 0.91}
    assert card["validation"] == {"metric": "accuracy", "score": 0.97, "better": "higher", "baseline": baseline}
    assert card["trainingData"]["size"] == 3
    assert card["trainingData"]["fingerprint"] == "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()
    assert json.loads((out / "model-card.json").read_text()) == card
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed[printed.index("card:") :])["card"] == card  # ready for spec.model.card


def test_package_refuses_half_a_validation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--name", "iris", "--version", "1", "--handler", "tabular", "--model-file", str(tmp_path / "m.pt")]
    staged = set(Path(tempfile.gettempdir()).glob("esteira-card-*"))
    assert package_cli([*argv, "--validation-score", "0.9", "--out", str(tmp_path / "out")]) == 2
    assert "--validation-metric and --validation-score go together" in capsys.readouterr().err
    assert set(Path(tempfile.gettempdir()).glob("esteira-card-*")) == staged  # nothing left behind


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--validation-baseline-version", "1.0.0"], "--validation-baseline-version and --validation-baseline-score"),
        (["--validation-baseline-score", "0.9"], "--validation-baseline-version and --validation-baseline-score"),
        (
            ["--validation-baseline-version", "1.0.0", "--validation-baseline-score", "0.9"],
            "a validation baseline needs --validation-metric and --validation-score",
        ),
    ],
)
def test_package_refuses_a_baseline_without_its_other_half(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--name", "iris", "--version", "1", "--handler", "tabular", "--model-file", str(tmp_path / "m.pt")]
    assert package_cli([*argv, *extra, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_package_reports_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--name", "iris", "--version", "1", "--handler", "tabular", "--model-file", str(tmp_path / "nope.pt")]
    assert package_cli([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "out" / "config").exists()


def test_package_reports_bad_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    argv = ["--name", "iris", "--version", "1", "--handler", "tabular", "--model-file", str(model), "--batch-size", "0"]
    assert package_cli([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "batch" in capsys.readouterr().err


def test_package_reports_archiver_failure(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    failing = tmp_path / "failing-archiver"
    failing.write_text("#!/bin/sh\necho 'boom: bad archive' >&2\nexit 3\n")
    failing.chmod(0o755)
    inputs = PackageInputs(model_file=model, handler="tabular")
    with pytest.raises(PackagingError, match=r"failed \(3\).*boom"):
        package(ModelSpec("iris", "1"), inputs, tmp_path / "out", ServerSpec(metrics_config=None), str(failing))
    assert not (tmp_path / "out").exists()  # a half-written folder would pass for a package (a storageUri)
    kept = tmp_path / "kept"
    (kept / "notes.txt").parent.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(PackagingError):
        package(ModelSpec("iris", "1"), inputs, kept, ServerSpec(metrics_config=None), str(failing))
    assert (kept / "notes.txt").read_text() == "mine"  # a folder that was there before is left as it was


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--validation-metric", "accuracy", "--validation-score", "nan"], "'nan' is not a finite number"),
        (["--validation-metric", "accuracy", "--validation-score=inf"], "'inf' is not a finite number"),
        (["--max-workers", "0"], "'0' is not a whole number of at least 1"),
        (["--training-data", "nosuch.csv"], "--training-data nosuch.csv: not found"),
    ],
)
def test_package_refuses_what_no_card_or_server_can_take(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """nan and inf were written into a card no cluster stores (exit 0); --max-workers 0 became --workers;
    a missing CSV was said to be no CSV."""
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    argv = ["--name", "iris", "--version", "1", "--handler", "tabular", "--model-file", str(model)]
    try:
        code = package_cli([*argv, *extra, "--out", str(tmp_path / "out")])
    except SystemExit as exited:  # argparse's own refusal
        code = int(str(exited.code))
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_package_refuses_a_model_file_that_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--name", "iris", "--version", "1", "--handler", "tabular", "--model-file", str(tmp_path)]
    assert package_cli([*argv, "--out", str(tmp_path / "out")]) == 2
    assert f"--model-file {tmp_path} is not a file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


FAKE_ARCHIVER = """#!{python}
import json, os, sys, zipfile
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
tmp = os.environ["TMPDIR"]
with open(os.environ["RECORD"], "a") as record:
    record.write(json.dumps({{"tmpdir": tmp, "empty": os.path.isdir(tmp) and not os.listdir(tmp)}}) + "\\n")
manifest = {{"runtime": "python", "model": {{"modelName": args["model-name"], "modelVersion": args["version"]}}}}
with zipfile.ZipFile(os.path.join(args["export-path"], args["model-name"] + ".mar"), "w") as mar:
    mar.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
"""


def test_each_archiver_run_gets_a_private_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The archiver stages files in $TMPDIR/<model name> and deletes that first: two builds of one model
    sharing a TMPDIR (make -j, parallel tests) would destroy each other's staging."""
    archiver = tmp_path / "fake-archiver"
    archiver.write_text(FAKE_ARCHIVER.format(python=sys.executable))
    archiver.chmod(0o755)
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("RECORD", str(record))
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    for version in ("1.0.0", "1.1.0"):
        result = package(
            ModelSpec("iris", version),
            PackageInputs(model_file=model, handler="tabular"),
            tmp_path / version,
            ServerSpec(metrics_config=None),
            str(archiver),
        )
        assert result.manifest["model"]["modelVersion"] == version
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(runs) == 2
    assert runs[0]["tmpdir"] != runs[1]["tmpdir"]
    assert all(run["empty"] for run in runs)
    assert all(Path(run["tmpdir"]) != Path(tempfile.gettempdir()) for run in runs)
    assert not any(Path(run["tmpdir"]).exists() for run in runs)  # cleaned up afterwards


def test_handler_aliases_point_at_the_handlers_contract() -> None:
    assert HANDLERS == {
        "tabular": "model_handlers.tabular:TabularHandler",
        "image": "model_handlers.image:ImageClassifierHandler",
    }
    for target in HANDLERS.values():
        module, _, cls = target.partition(":")
        path = REPO / (module.replace(".", "/") + ".py")
        if path.exists():  # once the handlers are written, the class must be there
            assert f"class {cls}" in path.read_text()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kind": "tabular", "n_features": 4, "optimise": True}, "optimise: Extra inputs are not permitted"),
        ({"kind": "tabular"}, "(top level): a tabular model needs feature_names or n_features"),
        ("not json", "malformed JSON"),
    ],
    ids=["typo", "incomplete", "malformed"],
)
def test_package_refuses_a_model_config_the_handler_would_refuse(
    config: object, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"x")
    files = tmp_path / "files"
    files.mkdir()
    written = files / "esteira-model.json"
    written.write_text(config if isinstance(config, str) else json.dumps(config))
    argv = ["--name", "iris", "--version", "1", "--handler", "tabular", "--model-file", str(model)]
    assert package_cli([*argv, "--extra-files", str(written), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert f"{written}: " in error and message in error, error
    assert not (tmp_path / "out").exists()
    # A folder's items go into the archive's root (the archiver copies them there): its config is checked too.
    assert package_cli([*argv, "--extra-files", str(files), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert f"{written}: " in error and message in error, error
    assert not (tmp_path / "out").exists()


def test_package_refuses_optimize_for_an_eager_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The handler rewrites TorchScript only: on a state dict with its model code, ``optimize`` would do nothing."""
    for name in ("model.pt", "net.py"):
        (tmp_path / name).write_bytes(b"x")
    files = tmp_path / "files"
    files.mkdir()
    written = files / "esteira-model.json"
    written.write_text(json.dumps({"kind": "tabular", "n_features": 4, "optimize": True}))
    argv = ["--name", "iris", "--version", "1", "--handler", "tabular", "--model-file", str(tmp_path / "model.pt")]
    argv += ["--model-code", str(tmp_path / "net.py"), "--extra-files", str(written), "--out", str(tmp_path / "out")]
    assert package_cli(argv) == 2
    error = capsys.readouterr().err
    assert f"{written}: optimize: the rewrite at load takes a TorchScript model" in error, error
    assert not (tmp_path / "out").exists()

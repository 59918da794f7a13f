"""`kubectl esteira` takes kubectl's flags anywhere on the line, as kubectl passes them to a plugin untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from esteira.kubectl import main, parser


class RecordingClient:
    """Stands in for the API: remembers which namespace and name each call used."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append(("get", namespace, name))
        return {"metadata": {"namespace": namespace, "name": name}, "status": {"phase": "Ready"}}

    def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(("patch", namespace, name))


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "iris", "-n", "models"],
        ["-n", "models", "status", "iris"],
        ["status", "-n", "models", "iris"],
        ["status", "iris", "--namespace", "models"],
        ["status", "iris", "--namespace=models"],
        ["status", "iris", "-nmodels"],
    ],
)
def test_namespace_flag_anywhere(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    assert (args.command, args.name, args.namespace) == ("status", "iris", "models")


def test_every_kubectl_flag_after_the_command() -> None:
    args = parser().parse_args(
        ["rollback", "iris", "--to-revision", "3", "--context", "prod", "--kubeconfig", "/k", "-n", "models"]
    )
    assert (args.to_revision, args.context, args.kubeconfig, args.namespace) == (3, "prod", "/k", "models")


def test_flags_before_the_command_survive_the_subcommand() -> None:
    args = parser().parse_args(["--context", "prod", "--kubeconfig", "/k", "promote", "iris", "--full"])
    assert (args.context, args.kubeconfig, args.namespace, args.full) == ("prod", "/k", None, True)


def test_the_later_namespace_wins() -> None:
    assert parser().parse_args(["-n", "a", "history", "iris", "-n", "b"]).namespace == "b"


def test_unknown_flag_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["status", "iris", "--namespaces", "models"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --namespaces models" in capsys.readouterr().err


def test_readme_form_reaches_the_api_in_that_namespace(capsys: pytest.CaptureFixture[str]) -> None:
    client = RecordingClient()
    assert main(["status", "iris", "-n", "models"], client=client) == 0
    assert client.calls == [("get", "models", "iris")]
    assert capsys.readouterr().out.startswith("models/iris  phase: Ready")
    assert main(["pause", "iris", "--namespace", "team-a"], client=client) == 0
    assert client.calls[-1] == ("patch", "team-a", "iris")


def _kubeconfig(path: Path) -> Path:
    contexts = [("dev", "dev-models"), ("prod", "prod-models"), ("bare", None)]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [
                    {"name": name, "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})}}
                    for name, ns in contexts
                ],
                "current-context": "dev",
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("flags", "namespace"),
    [
        ([], "dev-models"),  # the current context's namespace
        (["--context", "prod"], "prod-models"),
        (["--context", "bare"], "default"),
        (["--context", "prod", "-n", "models"], "models"),  # an explicit namespace beats the context's
    ],
)
def test_namespace_defaults_to_the_contexts(tmp_path: Path, flags: list[str], namespace: str) -> None:
    client = RecordingClient()
    kubeconfig = _kubeconfig(tmp_path / "kubeconfig")
    assert main(["history", "iris", "--kubeconfig", str(kubeconfig), *flags], client=client) == 0
    assert client.calls == [("get", namespace, "iris")]


def test_rollback_restores_the_revisions_card_with_its_build() -> None:
    """The new stable revision records the spec's card, and the retraining gate scores against it: the current
    build's card kept under the old build scored candidates against the wrong model."""
    from esteira.kubectl import rollback_patch

    card = {"validation": {"metric": "accuracy", "score": 0.99}}
    history = [
        {"revision": 1, "modelVersion": "1.0.0", "storageUri": "s3://m/1.0.0", "card": card},
        {"revision": 2, "modelVersion": "1.1.0", "storageUri": "s3://m/1.1.0"},
    ]
    md = {"status": {"history": history}}
    assert rollback_patch(md, 1)["spec"] == {"model": {"version": "1.0.0", "storageUri": "s3://m/1.0.0", "card": card}}
    assert rollback_patch(md, 2)["spec"]["model"]["card"] is None  # a merge patch's null: the current card goes


def test_an_api_server_refusal_is_said_with_its_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The HTTP reason alone ("Not Found") named neither the object nor the namespace."""
    import json

    from kubernetes.client.exceptions import ApiException

    import esteira.kubectl as kubectl

    class Refusing(RecordingClient):
        def get(self, namespace: str, name: str) -> dict[str, Any]:
            error = ApiException(status=404, reason="Not Found")
            error.body = json.dumps({"kind": "Status", "message": f'modeldeployments "{name}" not found'})
            raise error

    monkeypatch.setattr(kubectl, "main", lambda: main(["status", "iris", "-n", "models"], client=Refusing()))
    with pytest.raises(SystemExit) as exited:
        kubectl.entrypoint()
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip() == 'kubectl esteira: modeldeployments "iris" not found'


def test_requested_by_without_a_rollout_command_is_refused_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    client = RecordingClient()
    with pytest.raises(SystemExit):
        main(["pause", "iris", "-n", "models", "--requested-by", "alice"], client=client)  # type: ignore[arg-type]
    assert "--requested-by goes with --via command" in capsys.readouterr().err
    assert client.calls == [], "nothing was written"

"""Prometheus credentials: where they come from, that they are sent, and that no error repeats them."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp.web
import pytest

from esteira.api.spec import ModelDeploymentSpec
from esteira.controller.reconciler import CredentialsUnavailable, Reconciler
from esteira.controller.retry import ApiError
from esteira.evidence.prometheus import PrometheusAuth, PrometheusClient, redact_url
from esteira.rollout.evidence import MetricsUnavailable
from esteira.vocabulary import LABEL_PROMETHEUS_AUTH
from tests.support.prerequisites import require_tool
from tests.support.prometheus_stub import serving, vector
from tests.support.specs import spec


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://admin:secret@prom:9090/x", "http://***@prom:9090/x"),
        ("https://token@prom.example", "https://***@prom.example"),
        ("http://prom:9090", "http://prom:9090"),
        ("http://a%40b:p%3Aw@[::1]:9090", "http://***@[::1]:9090"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_auth_from_a_mapping_or_a_directory(tmp_path: Path) -> None:
    assert PrometheusAuth.from_mapping({"token": " t0k \n"}).headers() == {"Authorization": "Bearer t0k"}
    basic = PrometheusAuth.from_mapping({"username": "u", "password": "p"})
    assert basic.headers() == {"Authorization": "Basic dTpw"}
    assert PrometheusAuth.from_mapping({}).headers() == {}
    with pytest.raises(ValueError, match="either 'token' or 'username'"):
        PrometheusAuth.from_mapping({"token": "t", "username": "u", "password": "p"})
    with pytest.raises(ValueError, match="both 'username' and 'password'"):
        PrometheusAuth.from_mapping({"username": "u"})
    (tmp_path / "token").write_text("from-file\n")
    assert PrometheusAuth.from_directory(tmp_path).token == "from-file"


async def _query(client: PrometheusClient) -> list[dict[str, Any]]:
    async with client.session() as session:
        return await client.query(session, "up")


def test_url_credentials_become_basic_auth_and_never_reach_an_error() -> None:
    seen: list[str | None] = []

    async def handler(request: aiohttp.web.Request) -> aiohttp.web.Response:
        seen.append(request.headers.get("Authorization"))
        return aiohttp.web.json_response({"status": "error", "error": "boom"}, status=503)

    async def scenario() -> str:
        async with serving(handler) as template:
            client = PrometheusClient(template.format("admin:s3cret@"), attempts=2)
            with pytest.raises(MetricsUnavailable) as caught:
                await _query(client)
            return str(caught.value)

    message = asyncio.run(scenario())
    assert seen == ["Basic YWRtaW46czNjcmV0"] * 2  # admin:s3cret, sent as a header
    assert "s3cret" not in message and "admin" not in message
    assert "http://***@127.0.0.1:" in message and "HTTP 503" in message


def test_a_bearer_token_is_sent_and_scrubbed_from_what_the_server_echoes() -> None:
    async def handler(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response(
            {"status": "error", "error": f"bad {request.headers['Authorization']}"}, status=400
        )

    async def scenario() -> str:
        async with serving(handler) as template:
            client = PrometheusClient(template.format(""), attempts=1, auth=PrometheusAuth(token="tok-123"))
            with pytest.raises(MetricsUnavailable) as caught:
                await _query(client)
            return str(caught.value)

    message = asyncio.run(scenario())
    assert "tok-123" not in message and "Bearer ***" in message


def test_tls_with_the_secret_s_ca(tmp_path: Path) -> None:
    openssl = require_tool("openssl", "install OpenSSL (apt-get install openssl)")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def handler(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return vector(1.0)

    async def scenario() -> tuple[list[dict[str, Any]], str]:
        async with serving(handler, server_tls) as template:
            trusted = PrometheusClient(template.format(""), auth=PrometheusAuth(ca_pem=cert.read_text()))
            untrusted = PrometheusClient(template.format(""), attempts=1)
            with pytest.raises(MetricsUnavailable) as caught:
                await _query(untrusted)
            return await _query(trusted), str(caught.value)

    result, refused = asyncio.run(scenario())
    assert [float(series["value"][1]) for series in result] == [1.0]
    assert "certificate" in refused.lower()


class SecretsAPI:
    """Only what the reconciler asks when it looks for credentials."""

    def __init__(self, secrets: dict[str, tuple[dict[str, str], dict[str, str]]]) -> None:
        self.secrets = secrets

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], dict[str, str]]:
        if name not in self.secrets:
            raise ApiError(404, "not found")
        return self.secrets[name]


def _auth_for(monitoring: dict[str, Any], secrets: dict[str, Any], auth_dir: Path | None = None) -> Any:
    reconciler = Reconciler(SecretsAPI(secrets), "http://default-prom:9090", auth_dir)  # type: ignore[arg-type]
    md_spec = ModelDeploymentSpec.parse(spec(monitoring=monitoring))
    return asyncio.run(reconciler._prometheus_auth("team", md_spec))


def test_the_spec_s_secret_is_used_only_when_labelled() -> None:
    ref = {"prometheusAuth": {"secretRef": {"name": "prom"}}}
    labelled = {"prom": ({LABEL_PROMETHEUS_AUTH: "true"}, {"token": "t"})}
    assert _auth_for(ref, labelled) == PrometheusAuth(token="t")
    with pytest.raises(CredentialsUnavailable, match=f"lacks the label {LABEL_PROMETHEUS_AUTH}"):
        _auth_for(ref, {"prom": ({}, {"token": "t"})})
    with pytest.raises(CredentialsUnavailable, match="Secret prom: not found"):
        _auth_for(ref, {})
    with pytest.raises(CredentialsUnavailable, match="both 'username' and 'password'"):
        _auth_for(ref, {"prom": ({LABEL_PROMETHEUS_AUTH: "true"}, {"username": "u"})})


def test_the_operator_s_credentials_go_only_to_its_own_url(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("operator-token")
    assert _auth_for({}, {}, tmp_path) == PrometheusAuth(token="operator-token")
    assert _auth_for({"prometheusUrl": "http://elsewhere:9090"}, {}, tmp_path) is None
    assert _auth_for({}, {}, None) is None


def test_a_fault_while_gathering_evidence_holds_the_analysis_instead_of_stopping_the_reconcile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Raised out of the reconcile, it kept commands (abort) from being carried out, reconcile after reconcile."""
    from esteira.api.status import CanaryRecord, ModelDeploymentStatus, RevisionRecord
    from esteira.evidence.prometheus import PrometheusProvider

    async def faulty(*_: Any) -> None:
        raise TypeError("'int' object is not subscriptable")

    monkeypatch.setattr(PrometheusProvider, "collect", faulty)
    reconciler = Reconciler(SecretsAPI({}), "http://default-prom:9090", None)  # type: ignore[arg-type]
    md_spec = ModelDeploymentSpec.parse(spec())
    since = "2026-01-01T00:00:00Z"
    stable = RevisionRecord(revision=1, model_version="1.0.0", storage_uri="s3://m/1", since=since)
    canary = CanaryRecord(
        revision=2, model_version="1.0.1", storage_uri="s3://m/2", since=since, weight=10, step_started_at=since
    )
    status = ModelDeploymentStatus(stable=stable, canary=canary)
    md = {"metadata": {"namespace": "team", "name": "iris"}}
    evidence, error = asyncio.run(reconciler._evidence(md, (md_spec, status), "2026-01-01T01:00:00Z"))
    assert evidence is None and error == "gathering the evidence failed: TypeError"


def test_an_error_names_a_prometheus_url_without_credentials() -> None:
    """Scrubbed whole as a secret, every error read "Prometheus at ***": which Prometheus failed was not said."""

    async def handler(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"status": "error", "error": "boom"}, status=503)

    async def scenario() -> tuple[str, str]:
        async with serving(handler) as template:
            with pytest.raises(MetricsUnavailable) as caught:
                await _query(PrometheusClient(template.format(""), attempts=1))
            return template.format(""), str(caught.value)

    url, message = asyncio.run(scenario())
    assert f"Prometheus at {url.rstrip('/')}: HTTP 503" in message, message


def test_stable_accuracy_is_read_for_accuracy_below_at_most_once_a_minute() -> None:
    """retraining.triggers.accuracyBelow's figures: stable's labelled predictions over accuracyWindow."""
    from esteira.api.status import ModelDeploymentStatus, RevisionRecord

    asked: list[str] = []

    async def answer(request: aiohttp.web.Request) -> aiohttp.web.Response:
        asked.append(request.query["query"])
        return vector(120.0)

    stable = RevisionRecord(revision=4, model_version="1.0.0", storage_uri="s3://m/1", since="2026-01-01T00:00:00Z")
    retraining = {"triggers": {"accuracyBelow": 0.9, "accuracyWindow": "30m"}, "command": ["train"]}
    md = {"metadata": {"namespace": "team", "name": "iris"}}

    async def scenario() -> list[Any]:
        async with serving(answer) as template:
            reconciler = Reconciler(SecretsAPI({}), template.format(""), None)  # type: ignore[arg-type]
            wanted = (ModelDeploymentSpec.parse(spec(retraining=retraining)), ModelDeploymentStatus(stable=stable))
            unasked = (ModelDeploymentSpec.parse(spec()), ModelDeploymentStatus(stable=stable))
            return [
                await reconciler._stable_accuracy(md, unasked),
                await reconciler._stable_accuracy(md, wanted),
                await reconciler._stable_accuracy(md, wanted),  # within the minute: not read again, it stands
            ]

    nothing, tally, standing = asyncio.run(scenario())
    assert nothing is None and standing == tally
    assert tally is not None and tally.labelled == 120
    assert len(asked) == 4 and all('revision="4"' in query and "[1800s]" in query for query in asked), asked

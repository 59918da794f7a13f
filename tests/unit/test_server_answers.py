"""The front's count of TorchServe's own error answers, and how it joins TorchServe's exposition."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from esteira.packaging.server_answers import ServerAnswers, made_by_server, wanted, with_samples
from model_handlers.protocol import Identity

IDENTITY = Identity("iris", "1.0.0", "3")
TS_ONLY = (
    "# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: Count\n"
    "# TYPE ts_inference_requests_total counter\n"
    'ts_inference_requests_total{model_name="iris",model_version="default",hostname="vm",} 2.0\n'
)


@pytest.mark.parametrize(
    ("status", "body", "server"),
    [
        (503, b'{"code": 503, "type": "ServiceUnavailableException", "message": "no worker"}', True),
        (500, b'{"code": 500, "type": "InternalServerException", "message": "Worker died."}', True),
        (502, b"<html>bad gateway</html>", True),
        (503, b"", True),
        (503, b"[1, 2]", True),
        (400, b'{"error": "instances[0]: expected 4 features, got 3"}', False),
        (500, b'{"error": "the model failed"}', False),
        (200, b'{"predictions": []}', False),
    ],
)
def test_an_error_is_torchserve_s_unless_its_body_is_the_handler_s(status: int, body: bytes, server: bool) -> None:
    assert made_by_server(status, body) is server


def requests_total(exposition: str) -> dict[tuple[str, str], float]:
    """(answered_by, outcome) -> value, parsed as Prometheus' text format parser reads it."""
    families = {family.name: family for family in text_string_to_metric_families(exposition)}
    family = families["esteira_requests"]  # the parser names a counter family without its _total
    assert family.type == "counter"
    return {(s.labels.get("answered_by", "handler"), s.labels["outcome"]): s.value for s in family.samples}


def test_counts_start_at_zero_and_count_errors_by_class() -> None:
    answers = ServerAnswers(IDENTITY, 'pod-"a"')
    assert requests_total(with_samples(TS_ONLY, answers.samples())) == {
        ("server", "client_error"): 0,
        ("server", "server_error"): 0,
    }
    for status in (503, 500, 502, 404, 200):
        answers.record(status)
    exposition = with_samples(TS_ONLY, answers.samples())
    assert requests_total(exposition) == {("server", "client_error"): 1, ("server", "server_error"): 3}
    families = {family.name: family for family in text_string_to_metric_families(exposition)}
    sample = families["esteira_requests"].samples[0]
    assert sample.labels | {"outcome": ""} == {
        "ModelName": "iris",
        "Revision": "3",
        "Hostname": 'pod-"a"',
        "answered_by": "server",
        "outcome": "",
    }
    assert families["ts_inference_requests"].samples[0].value == 2  # TorchServe's own series kept


def test_samples_join_the_family_where_torchserve_declared_it() -> None:
    declared = (
        TS_ONLY
        + "# HELP esteira_requests_total counts\n# TYPE esteira_requests_total counter\n"
        + TS_ONLY.replace("ts_inference_requests_total", "ts_queue_total")
    )
    exposition = with_samples(declared, ServerAnswers(IDENTITY, "vm").samples())
    lines = exposition.splitlines()
    at = lines.index("# TYPE esteira_requests_total counter")
    assert lines[at + 1].startswith("esteira_requests_total{") and lines[at + 2].startswith("esteira_requests_total{")
    assert exposition.count("# TYPE esteira_requests_total") == 1
    assert len(requests_total(exposition)) == 2


def test_a_scrape_filtered_to_other_families_gets_none() -> None:
    assert wanted("")
    assert wanted("name[]=esteira_requests_total&name[]=ts_queue_latency_microseconds")
    assert not wanted("name[]=ts_queue_latency_microseconds")

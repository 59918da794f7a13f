"""What the pod's front adds to TorchServe's metrics: its count of TorchServe's own error answers and its request
durations, joined into TorchServe's exposition as Prometheus' own parser must read it."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from esteira.packaging.front_metrics import (
    RequestDurations,
    ServerAnswers,
    made_by_server,
    model_labels,
    wanted,
    with_front_metrics,
)
from model_handlers.protocol import Identity

LABELS = model_labels(Identity("iris", "1.0.0", "3"), 'pod-"a"')
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


def families(exposition: str) -> dict[str, object]:
    """Families by name as Prometheus' text format parser reads them (a counter's name without its _total)."""
    return {family.name: family for family in text_string_to_metric_families(exposition)}


def requests_total(exposition: str) -> dict[tuple[str, str], float]:
    """(answered_by, outcome) -> value."""
    family = families(exposition)["esteira_requests"]
    assert family.type == "counter"  # type: ignore[attr-defined]
    samples = family.samples  # type: ignore[attr-defined]
    return {(s.labels.get("answered_by", "handler"), s.labels["outcome"]): s.value for s in samples}


def test_error_counts_start_at_zero_and_count_by_class_with_the_handler_s_labels() -> None:
    answers, durations = ServerAnswers(LABELS), RequestDurations(LABELS)
    assert requests_total(with_front_metrics(TS_ONLY, "", answers, durations)) == {
        ("server", "client_error"): 0,
        ("server", "server_error"): 0,
    }
    for status in (503, 500, 502, 404, 200):
        answers.record(status)
    exposition = with_front_metrics(TS_ONLY, "", answers, durations)
    assert requests_total(exposition) == {("server", "client_error"): 1, ("server", "server_error"): 3}
    sample = families(exposition)["esteira_requests"].samples[0]  # type: ignore[attr-defined]
    assert {k: v for k, v in sample.labels.items() if k != "outcome"} == {
        "ModelName": "iris",
        "Revision": "3",
        "Hostname": 'pod-"a"',
        "answered_by": "server",
    }
    assert families(exposition)["ts_inference_requests"].samples[0].value == 2  # type: ignore[attr-defined]


def test_error_counts_join_the_family_where_torchserve_declared_it() -> None:
    declared = (
        TS_ONLY
        + "# HELP esteira_requests_total counts\n# TYPE esteira_requests_total counter\n"
        + TS_ONLY.replace("ts_inference_requests_total", "ts_queue_total")
    )
    exposition = with_front_metrics(declared, "", ServerAnswers(LABELS), RequestDurations(LABELS))
    lines = exposition.splitlines()
    at = lines.index("# TYPE esteira_requests_total counter")
    assert lines[at + 1].startswith("esteira_requests_total{") and lines[at + 2].startswith("esteira_requests_total{")
    assert exposition.count("# TYPE esteira_requests_total") == 1
    assert len(requests_total(exposition)) == 2


def test_durations_are_a_histogram_prometheus_reads_back() -> None:
    durations = RequestDurations(LABELS, bounds=(0.001, 0.01, 0.1))
    for seconds in (0.0004, 0.001, 0.002, 0.05, 0.3, 0.3):
        durations.observe(seconds)
    exposition = with_front_metrics(TS_ONLY, "", ServerAnswers(LABELS), durations)
    family = families(exposition)["esteira_server_request_duration_seconds"]
    assert family.type == "histogram"  # type: ignore[attr-defined]
    by_name: dict[str, float] = {}
    for sample in family.samples:  # type: ignore[attr-defined]
        assert sample.labels["Revision"] == "3"
        by_name[sample.name + sample.labels.get("le", "")] = sample.value
    assert by_name == pytest.approx(
        {
            "esteira_server_request_duration_seconds_bucket0.001": 2,  # a bound's own value is inside it
            "esteira_server_request_duration_seconds_bucket0.01": 3,
            "esteira_server_request_duration_seconds_bucket0.1": 4,
            "esteira_server_request_duration_seconds_bucket+Inf": 6,
            "esteira_server_request_duration_seconds_count": 6,
            "esteira_server_request_duration_seconds_sum": 0.6534,
        }
    )


def test_a_scrape_filtered_by_name_gets_only_what_it_names() -> None:
    assert wanted("", "esteira_requests_total")
    assert wanted("name[]=esteira_requests_total&name[]=ts_queue_latency_microseconds", "esteira_requests_total")
    assert not wanted("name[]=ts_queue_latency_microseconds", "esteira_requests_total")
    only = with_front_metrics(
        TS_ONLY, "name[]=ts_inference_requests_total", ServerAnswers(LABELS), RequestDurations(LABELS)
    )
    assert only == TS_ONLY


@pytest.mark.parametrize("revision", ['rev"1', "rev\\1"])
def test_a_free_form_revision_or_name_is_quoted_as_the_text_format_wants(revision: str) -> None:
    """A quote or a trailing backslash in a revision (esteira-model.json's, or the environment's) broke the
    front's lines, and a scrape that cannot be parsed loses the whole target."""
    labels = model_labels(Identity('iris"x', "1", revision), "host")
    text = with_front_metrics("", "", ServerAnswers(labels), RequestDurations(labels), abandoned=0)
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    assert samples and {(s.labels["ModelName"], s.labels["Revision"]) for s in samples} == {('iris"x', revision)}

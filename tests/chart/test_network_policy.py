"""The operator's NetworkPolicy: metrics only from the monitoring namespace, egress only where the operator
talks (API server, DNS, Prometheus), and each way of widening it; and the Prometheus credentials mount."""

from __future__ import annotations

from typing import Any

from esteira.controller.config import parse_args
from tests.chart.helm import render


def policy(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return render(values or {}).one("NetworkPolicy")["spec"]


def namespaces_of(peers: list[dict[str, Any]]) -> list[str]:
    return [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers]


def test_by_default_metrics_only_from_the_monitoring_namespace() -> None:
    spec = policy()
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert namespaces_of(rule["from"]) == ["monitoring"]


def test_by_default_egress_only_to_the_api_server_dns_and_prometheus() -> None:
    api, dns, prometheus = policy()["egress"]
    assert "to" not in api and {p["port"] for p in api["ports"]} == {443, 6443}
    assert namespaces_of(dns["to"]) == ["kube-system"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert namespaces_of(prometheus["to"]) == ["monitoring"]
    assert prometheus["ports"] == [{"port": 9090, "protocol": "TCP"}]


def test_widening_and_narrowing() -> None:
    extra_rule = {"to": [{"ipBlock": {"cidr": "203.0.113.7/32"}}], "ports": [{"port": 443, "protocol": "TCP"}]}
    spec = policy(
        {
            "networkPolicy": {
                "metricsNamespaces": ["observability"],
                "metricsFrom": [{"namespaceSelector": {}}],
                "egress": {
                    "apiServerCIDRs": ["10.0.0.1/32"],
                    "apiServerPorts": [6443],
                    "prometheusNamespaces": [],
                    "extra": [extra_rule],
                },
            }
        }
    )
    (rule,) = spec["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}},
        {"namespaceSelector": {}},
    ]
    api, _dns, extra = spec["egress"]
    assert api == {"ports": [{"port": 6443, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}
    assert extra == extra_rule


def test_no_scrapers_means_no_ingress_and_egress_can_be_left_open() -> None:
    spec = policy({"networkPolicy": {"metricsNamespaces": [], "egress": {"enabled": False}}})
    assert spec["ingress"] == []
    assert spec["policyTypes"] == ["Ingress"] and "egress" not in spec


def test_no_policy_when_disabled() -> None:
    assert not render({"networkPolicy": {"enabled": False}}).of_kind("NetworkPolicy")


def test_prometheus_credentials_are_mounted_not_granted() -> None:
    """The operator's own Prometheus credentials come from a mounted Secret, read by the flag it is given."""
    rendered = render({"operator": {"prometheusUrl": "https://prom.example:9090", "prometheusAuthSecret": "prom"}})
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = parse_args(container["args"])
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "prometheus-auth"]
    assert config.prometheus_auth_dir is not None and str(config.prometheus_auth_dir) == mount["mountPath"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == "prometheus-auth"]
    assert volume["secret"]["secretName"] == "prom"
    plain = render({}).one("Deployment")["spec"]["template"]["spec"]
    assert all(v["name"] != "prometheus-auth" for v in plain["volumes"])
    assert parse_args(plain["containers"][0]["args"]).prometheus_auth_dir is None

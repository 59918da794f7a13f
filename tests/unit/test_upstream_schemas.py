"""The offline manifest checks (tests/support/schemas.py) accept what the API server accepts and reject
what it rejects, with messages that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.schemas import (
    UPSTREAM_CRDS_ENV,
    CelError,
    ManifestError,
    cel_rules,
    evaluate_cel_rule,
    find_crd,
    to_json_schema,
    upstream_crds_dir,
    upstream_crds_path,
    validate_custom_resource,
    validate_kubernetes,
    validate_manifest,
    validate_manifests,
)


@pytest.fixture
def upstream() -> Path:
    return upstream_crds_dir()


def _errors(obj: dict[str, Any], check=validate_manifest) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        check(obj)
    return caught.value.errors


def inference_service(**predictor: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "mnist",
            "namespace": "models",
            "annotations": {"serving.kserve.io/deploymentMode": "Standard"},
        },
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "model": {
                    "modelFormat": {"name": "pytorch"},
                    "protocolVersion": "v2",
                    "storageUri": "s3://models/mnist",
                    "resources": {"limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": 1}},
                },
                **predictor,
            }
        },
    }


class TestInferenceService:
    def test_minimal_valid(self, upstream: Path) -> None:
        validate_manifest(inference_service(scaleMetric="cpu", scaleTarget=70))

    def test_scale_metric_gpu_rejected(self, upstream: Path) -> None:
        errors = _errors(inference_service(scaleMetric="gpu"))
        assert len(errors) == 1
        assert errors[0].startswith("spec.predictor.scaleMetric: 'gpu' is not one of")

    def test_misspelt_field_rejected(self, upstream: Path) -> None:
        isvc = inference_service()
        isvc["spec"]["predictor"]["model"]["storageURI"] = "s3://models/mnist"
        assert _errors(isvc) == [
            "spec.predictor.model: Additional properties are not allowed ('storageURI' was unexpected)"
        ]

    def test_quantities_take_integers_and_strings_only(self, upstream: Path) -> None:
        isvc = inference_service()
        isvc["spec"]["predictor"]["model"]["resources"]["limits"] = {"cpu": 2, "memory": "1Gi"}
        validate_manifest(isvc)
        isvc["spec"]["predictor"]["model"]["resources"]["limits"]["cpu"] = [2]
        assert [e.split(":")[0] for e in _errors(isvc)] == ["spec.predictor.model.resources.limits.cpu"]

    def test_null_rejected_where_not_nullable(self, upstream: Path) -> None:
        errors = _errors(inference_service(canaryTrafficPercent=None))
        assert errors == ["spec.predictor.canaryTrafficPercent: None is not of type 'integer'"]

    def test_every_error_listed(self, upstream: Path) -> None:
        isvc = inference_service(scaleMetric="gpu", minReplicas="one")
        isvc["metadata"]["name"] = "1-mnist"
        fields = sorted(e.split(":")[0] for e in _errors(isvc))
        assert fields == ["metadata.name", "spec.predictor.minReplicas", "spec.predictor.scaleMetric"]

    def test_stock_torchserve_runtime_validates(self, upstream: Path) -> None:
        runtime = yaml.safe_load((upstream / "kserve-v0.20.0" / "kserve-torchserve.yaml").read_text())
        validate_manifest(runtime)


class TestHttpRouteCel:
    def route(self) -> dict[str, Any]:
        return {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "mnist", "namespace": "models"},
            "spec": {
                "parentRefs": [{"name": "gateway", "namespace": "gateways"}],
                "rules": [
                    {
                        "backendRefs": [
                            {"name": "mnist-predictor", "port": 80, "weight": 90},
                            {"name": "mnist-canary-predictor", "port": 80, "weight": 10},
                        ]
                    }
                ],
            },
        }

    def test_weighted_route_validates(self, upstream: Path) -> None:
        validate_manifest(self.route())

    def test_cel_rule_rejects_service_backend_without_port(self, upstream: Path) -> None:
        route = self.route()
        del route["spec"]["rules"][0]["backendRefs"][1]["port"]
        # group and kind come from schema defaults ("" and "Service"), as on the API server.
        assert _errors(route) == ["spec.rules[0].backendRefs[1]: Must have port for Service reference"]

    def test_cel_rules_listed_with_paths(self, upstream: Path) -> None:
        rules = cel_rules(find_crd("gateway.networking.k8s.io/v1", "HTTPRoute"))
        paths = {r.path for r in rules if r.version == "v1" and r.message == "Must have port for Service reference"}
        assert ".spec.rules[*].backendRefs[*]" in paths


class TestKubernetesBuiltins:
    def deployment(self) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "esteira-operator", "labels": {"app.kubernetes.io/name": "esteira"}},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app": "esteira"}},
                "template": {
                    "metadata": {"labels": {"app": "esteira"}},
                    "spec": {"containers": [{"name": "operator", "image": "esteira/operator:dev"}]},
                },
            },
        }

    def test_valid_deployment(self) -> None:
        validate_kubernetes(self.deployment())
        validate_manifest(self.deployment())

    def test_misspelt_field_fails_only_when_strict(self) -> None:
        dep = self.deployment()
        dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
        validate_kubernetes(dep, strict=False)
        (error,) = _errors(dep, validate_kubernetes)
        assert error.startswith("spec.template.spec.containers[0]: Additional properties are not allowed")
        assert "'imagePullPolcy' was unexpected" in error

    def test_wrong_type_names_the_field(self) -> None:
        dep = self.deployment()
        dep["spec"]["replicas"] = "1"
        (error,) = _errors(dep)
        assert error.startswith("spec.replicas: '1' is not of type 'integer'")
        assert error.endswith("(Kubernetes 1.37)")

    def test_names_follow_the_kinds_rules(self) -> None:
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "mnist.v2"}, "spec": {}}
        assert _errors(service)[0].startswith("metadata.name: 'mnist.v2' must be a DNS-1035 label")
        config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mnist.v2"}}
        validate_manifest(config)
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole"}
        validate_manifest({**role, "metadata": {"name": "esteira:operator"}})
        assert _errors({**role, "metadata": {"name": "esteira/operator"}})[0].startswith("metadata.name")

    def test_label_values_checked(self) -> None:
        config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"v": "1.0+cu121"}}}
        assert _errors(config)[0].startswith("metadata.labels[v]: '1.0+cu121' must be 63 characters or less")

    def test_validate_manifests_reports_each_bad_document(self) -> None:
        good, bad = self.deployment(), self.deployment()
        bad["metadata"]["name"] = "Bad_Name"
        with pytest.raises(ManifestError) as caught:
            validate_manifests([good, None, bad])
        assert len(caught.value.errors) == 1
        assert "'Bad_Name'" in caught.value.errors[0]


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.example.com}
spec:
  group: test.example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            x-kubernetes-validations:
            - rule: self.minReplicas <= self.maxReplicas
              message: minReplicas must not exceed maxReplicas
              fieldPath: .minReplicas
            properties:
              minReplicas: {type: integer, default: 1}
              maxReplicas: {type: integer}
              port: {x-kubernetes-int-or-string: true}
              owner: {type: string, nullable: true}
              extra: {type: object, x-kubernetes-preserve-unknown-fields: true, properties: {a: {type: string}}}
              tags: {type: array, items: {type: string}, x-kubernetes-list-type: set}
              ports:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [port, protocol]
                items:
                  type: object
                  required: [port]
                  properties:
                    port: {type: integer}
                    protocol: {type: string, default: TCP}
"""


class TestCrdConversion:
    @pytest.fixture(autouse=True)
    def crds(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp_path / "widgets.yaml").write_text(CRD)
        monkeypatch.setenv(UPSTREAM_CRDS_ENV, str(tmp_path))

    def widget(self, **spec: Any) -> dict[str, Any]:
        body = {"maxReplicas": 2, **spec}
        return {"apiVersion": "test.example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": body}

    def test_int_or_string(self) -> None:
        assert to_json_schema({"x-kubernetes-int-or-string": True}) == {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
        }
        validate_custom_resource(self.widget(port=8080))
        validate_custom_resource(self.widget(port="http"))
        assert _errors(self.widget(port=1.5), validate_custom_resource)[0].startswith("spec.port:")

    def test_nullable(self) -> None:
        validate_custom_resource(self.widget(owner=None))
        assert _errors(self.widget(maxReplicas=None), validate_custom_resource)[0].startswith("spec.maxReplicas:")

    def test_unknown_fields_kept_only_where_preserved(self) -> None:
        validate_custom_resource(self.widget(extra={"a": "x", "anything": 1}))
        assert _errors(self.widget(unknown=1), validate_custom_resource) == [
            "spec: Additional properties are not allowed ('unknown' was unexpected)"
        ]

    def test_list_keys_unique(self) -> None:
        validate_custom_resource(self.widget(tags=["a", "b"], ports=[{"port": 80}, {"port": 80, "protocol": "UDP"}]))
        assert _errors(self.widget(tags=["a", "a"]), validate_custom_resource)[0].startswith("spec.tags:")
        # protocol defaults to TCP, so these two entries share a key.
        errors = _errors(self.widget(ports=[{"port": 80}, {"port": 80, "protocol": "TCP"}]), validate_custom_resource)
        assert errors == ["spec.ports[1]: duplicate entry (port=80, protocol='TCP'); first at [0]"]

    def test_cel_rule_sees_defaults(self) -> None:
        validate_custom_resource(self.widget(maxReplicas=1))
        errors = _errors(self.widget(maxReplicas=0), validate_custom_resource)
        assert errors == ["spec.minReplicas: minReplicas must not exceed maxReplicas"]

    def test_cel_rules_listed(self) -> None:
        (rule,) = cel_rules(find_crd("test.example.com/v1", "Widget"))
        assert (rule.version, rule.path, rule.field_path) == ("v1", ".spec", ".minReplicas")

    def test_unknown_kind(self) -> None:
        obj = {"apiVersion": "test.example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
        assert "no CRD serves it" in _errors(obj)[0]


def test_missing_upstream_folder_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(UPSTREAM_CRDS_ENV, str(tmp_path / "absent"))
    with pytest.raises(pytest.skip.Exception, match=f"missing prerequisite: .*absent.*{UPSTREAM_CRDS_ENV}"):
        upstream_crds_dir()


def test_upstream_crds_found_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$ESTEIRA_UPSTREAM_CRDS, else ../shared/crds beside the repository, else .tools/crds."""
    repo = tmp_path / "repo"
    monkeypatch.setattr("tests.support.schemas.REPO_ROOT", repo)
    monkeypatch.delenv(UPSTREAM_CRDS_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="make crds-upstream"):
        upstream_crds_dir()
    (repo / ".tools" / "crds").mkdir(parents=True)
    assert upstream_crds_dir() == repo / ".tools" / "crds"
    (tmp_path / "shared" / "crds").mkdir(parents=True)
    assert upstream_crds_dir() == tmp_path / "shared" / "crds"
    monkeypatch.setenv(UPSTREAM_CRDS_ENV, str(tmp_path / "elsewhere"))
    assert upstream_crds_path() == tmp_path / "elsewhere"


STEPS_INCREASING = "self.steps.isSorted() && self.steps.all(s, self.steps.exists_one(t, t == s))"


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        ("self.minReplicas <= self.maxReplicas", {"minReplicas": 1, "maxReplicas": 3}, True),
        ("self.minReplicas <= self.maxReplicas", {"minReplicas": 4, "maxReplicas": 3}, False),
        ("!has(self.x) || self.x > 0", {}, True),
        ("!has(self.x) || self.x > 0", {"x": 0}, False),
        ("self.steps.all(s, s > 0)", {"steps": [10, 50]}, True),
        ("self.steps.all(s, s > 0)", {"steps": [10, 0]}, False),
        ("size(self.steps) == 0 || self.steps[size(self.steps) - 1] == 100", {"steps": []}, True),
        ("size(self.steps) == 0 || self.steps[size(self.steps) - 1] == 100", {"steps": [10, 100]}, True),
        ("size(self.steps) == 0 || self.steps[size(self.steps) - 1] == 100", {"steps": [10, 50]}, False),
        (STEPS_INCREASING, {"steps": [10, 50, 100]}, True),
        (STEPS_INCREASING, {"steps": [10, 50, 50]}, False),
        (STEPS_INCREASING, {"steps": [50, 10]}, False),
        ("size(self.steps) < 2 || self.steps[0] < self.steps[1]", {"steps": [5, 1]}, False),
        ("self.items.map(i, i.weight).sum() <= 100", {"items": [{"weight": 60}, {"weight": 40}]}, True),
        ("self.items.map(i, i.weight).sum() <= 100", {"items": [{"weight": 60}, {"weight": 50}]}, False),
        ("self.name.matches('^[a-z][-a-z0-9]*$')", {"name": "mnist-v2"}, True),
        ("self.name.matches('^[a-z][-a-z0-9]*$')", {"name": "2mnist"}, False),
    ],
)
def test_cel_rule(rule: str, value: dict[str, Any], expected: bool) -> None:
    assert evaluate_cel_rule(rule, value) is expected


def test_cel_transition_rule() -> None:
    assert evaluate_cel_rule("self == oldSelf", "Standard", old_self="Standard") is True
    assert evaluate_cel_rule("self == oldSelf", "Knative", old_self="Standard") is False


def test_cel_uses_schema_for_names_numbers_and_defaults() -> None:
    schema = {
        "type": "object",
        "properties": {
            "namespace": {"type": "string"},
            "ratio": {"type": "number"},
            "group": {"type": "string", "default": ""},
        },
    }
    value = {"namespace": "models", "ratio": 1}
    assert evaluate_cel_rule("self.__namespace__ == 'models'", value, schema=schema) is True
    assert evaluate_cel_rule("self.ratio > 0.5 && size(self.group) == 0", value, schema=schema) is True
    with pytest.raises(CelError):  # without the schema, 1 is an int and celpy does not compare int with double
        evaluate_cel_rule("self.ratio > 0.5", value)


@pytest.mark.parametrize(
    "rule",
    [
        "self.steps.all(i, v, i == 0 || self.steps[i - 1] < v)",  # two-variable comprehension
        "self.?x.orValue(1) > 0",  # optionals
        "self.steps",  # not a bool
    ],
)
def test_cel_forms_outside_the_subset_raise(rule: str) -> None:
    with pytest.raises(CelError):
        evaluate_cel_rule(rule, {"steps": [1, 2]})


def test_manifest_error_is_readable() -> None:
    error = ManifestError("apps/v1 Deployment 'x'", ["spec.replicas: bad", "metadata.name: bad"])
    assert str(error) == "apps/v1 Deployment 'x' is invalid:\n  - spec.replicas: bad\n  - metadata.name: bad"
    assert isinstance(error, AssertionError)  # pytest reports it as a failed check

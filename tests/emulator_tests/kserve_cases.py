"""InferenceServices that KServe v0.20.0 accepts and refuses, one pair per admission rule.

Each case changes a valid InferenceService two ways: ``good`` still passes, ``bad`` breaks exactly one
rule and must be refused with ``message``, KServe's own text. The pure-function tests and the HTTP
tests run the same table.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.emulator.kserve import admission, components

Obj = dict[str, Any]
MODE = "serving.kserve.io/deploymentMode"
CLASS = "serving.kserve.io/autoscalerClass"
CANARY_MODEL = {"name": "kserve-container", "modelFormat": {"name": "pytorch"}, "storageUri": "s3://models/m/2"}
EXACTLY_ONE = (
    "exactly one of [Name, SKLearn, XGBoost, Tensorflow, PyTorch, Triton, ONNX, HuggingFace, PMML, LightGBM, "
    "Paddle, Model, StorageUris, StorageContainerName, WorkerSpec, PodSpec] must be specified in PredictorSpec"
)


def isvc(name: str = "m1", mode: str = "Standard", **predictor: Any) -> Obj:
    """A valid InferenceService as Esteira renders it: an unnamed stable predictor with a model."""
    model = {"modelFormat": {"name": "pytorch"}, "storageUri": "s3://models/m/1", "protocolVersion": "v1"}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": {MODE: mode}},
        "spec": {"predictor": {"model": model, **predictor}},
    }


def canary(name: str = "rev-2", percent: int = 10, **predictor: Any) -> Obj:
    return {"trafficPercent": percent, "predictor": {"name": name, "model": dict(CANARY_MODEL), **predictor}}


@dataclass(frozen=True)
class Case:
    id: str
    good: Callable[[Obj], None]
    bad: Callable[[Obj], None]
    message: str

    def build(self, change: Callable[[Obj], None]) -> Obj:
        obj = isvc()
        change(obj)
        return obj


def pred(obj: Obj) -> Obj:
    predictor: Obj = obj["spec"]["predictor"]
    return predictor


def model(obj: Obj) -> Obj:
    found: Obj = pred(obj)["model"]
    return found


def annotate(**values: str) -> Callable[[Obj], None]:
    return lambda obj: obj["metadata"]["annotations"].update(values)


def set_predictor(**values: Any) -> Callable[[Obj], None]:
    return lambda obj: pred(obj).update(copy.deepcopy(values))


def set_model(**values: Any) -> Callable[[Obj], None]:
    return lambda obj: model(obj).update(copy.deepcopy(values))


def both(*changes: Callable[[Obj], None]) -> Callable[[Obj], None]:
    def run(obj: Obj) -> None:
        for change in changes:
            change(obj)

    return run


def canaries(*arms: Obj) -> Callable[[Obj], None]:
    return lambda obj: obj["spec"].update(canary=copy.deepcopy(list(arms)))


def rename(name: str) -> Callable[[Obj], None]:
    return lambda obj: obj["metadata"].update(name=name)


def knative(obj: Obj) -> None:
    obj["metadata"]["annotations"][MODE] = "Knative"


def nothing(obj: Obj) -> None:
    return None


HPA = annotate(**{CLASS: "hpa"})
KEDA = annotate(**{CLASS: "keda"})
QUERY = {"backend": "prometheus", "serverAddress": "http://p:9090", "query": "sum(rate(x[1m]))"}


def external(**target: Any) -> Obj:
    return {"autoScaling": {"metrics": [{"type": "External", "external": {"metric": QUERY, "target": target}}]}}


CASES = [
    Case("name", rename("lives9"), rename("9lives"), admission.INVALID_NAME % ("9lives", admission.ISVC_NAME_FORMAT)),
    Case("autoscaler-class", HPA, annotate(**{CLASS: "kpa"}), "[kpa] is not a supported autoscaler class type"),
    Case(
        "blocked-env",
        set_model(env=[{"name": "ESTEIRA_REVISION", "value": "1"}]),
        set_model(env=[{"name": "PYTHONPATH", "value": "/x"}]),
        'the InferenceService "m1" is invalid: setting PYTHONPATH in container "" is not allowed for security reasons',
    ),
    Case(
        "stable-model-name",
        set_predictor(name="stable"),
        set_model(name="kserve-container"),
        components.NAME_NOT_ALLOWED,
    ),
    Case(
        "exactly-one",
        set_predictor(containers=[{"name": "sidecar", "image": "x"}]),
        set_predictor(containers=[{"name": "kserve-container", "image": "x"}]),
        EXACTLY_ONE,
    ),
    Case(
        "storage-uri-and-uris",
        both(set_model(storageUri=None), set_predictor(storageUris=[{"uri": "s3://a", "mountPath": "/mnt/a"}])),
        set_predictor(storageUris=[{"uri": "s3://a", "mountPath": "/mnt/a"}]),
        components.STORAGE_URI_AND_URIS,
    ),
    Case(
        "storage-uris-common-parent",
        both(
            set_model(storageUri=None),
            set_predictor(
                storageUris=[{"uri": "s3://a", "mountPath": "/mnt/a"}, {"uri": "s3://b", "mountPath": "/mnt/b"}]
            ),
        ),
        both(
            set_model(storageUri=None),
            set_predictor(storageUris=[{"uri": "s3://a", "mountPath": "/a"}, {"uri": "s3://b", "mountPath": "/b"}]),
        ),
        "storage paths must have a common parent directory. Current paths: [/a /b] have no common parent beyond root",
    ),
    Case(
        "collocated-transformer-storage",
        set_predictor(containers=[{"name": "transformer-container", "image": "t"}]),
        set_predictor(
            containers=[
                {"name": "transformer-container", "image": "t", "env": [{"name": "STORAGE_URI", "value": "s3://x"}]}
            ]
        ),
        components.STORAGE_URI_IN_TRANSFORMER,
    ),
    Case(
        "replicas",
        set_predictor(minReplicas=2, maxReplicas=2),
        set_predictor(minReplicas=3, maxReplicas=2),
        components.MIN_REPLICAS_ABOVE_MAX,
    ),
    Case("min-replicas", set_predictor(minReplicas=0), set_predictor(minReplicas=-1), components.MIN_REPLICAS_NEGATIVE),
    Case("max-replicas", set_predictor(maxReplicas=0), set_predictor(maxReplicas=-1), components.MAX_REPLICAS_NEGATIVE),
    Case(
        "container-concurrency",
        set_predictor(containerConcurrency=0),
        set_predictor(containerConcurrency=-1),
        components.PARALLELISM_NEGATIVE,
    ),
    Case(
        "logger-mode",
        set_predictor(logger={"mode": "request"}),
        set_predictor(logger={"mode": "everything"}),
        components.INVALID_LOGGER_TYPE,
    ),
    Case(
        "logger-storage",
        set_predictor(logger={"mode": "all", "storage": {"path": "/l", "parameters": {"type": "s3"}, "key": "k"}}),
        set_predictor(logger={"mode": "all", "storage": {"path": "/l"}}),
        components.INVALID_LOGGER_STORAGE,
    ),
    Case(
        "hpa-metric",
        both(HPA, set_predictor(scaleMetric="memory")),
        both(HPA, set_predictor(scaleMetric="rps")),
        "[rps] is not a supported metric",
    ),
    Case(
        "hpa-target",
        both(HPA, set_predictor(scaleMetric="cpu", scaleTarget=100)),
        both(HPA, set_predictor(scaleMetric="cpu", scaleTarget=101)),
        "the target utilization percentage should be a [1-100] integer",
    ),
    Case(
        "hpa-metric-source",
        both(
            HPA,
            set_predictor(
                autoScaling={
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
                        }
                    ]
                }
            ),
        ),
        both(HPA, set_predictor(**external(type="Value", value="5"))),
        "invalid HPA metric source type with value [External],valid metric source types are Resource",
    ),
    Case(
        "keda-scale-metric",
        both(KEDA, set_predictor(**external(type="Value", value="5"))),
        both(KEDA, set_predictor(scaleMetric="cpu")),
        "ScaleMetric is not supported for KEDA",
    ),
    Case(
        "keda-target-value",
        both(KEDA, set_predictor(**external(type="Value", value="5"))),
        both(KEDA, set_predictor(**external(type="Value"))),
        "the target threshold value should not be empty",
    ),
    Case(
        "keda-utilization",
        both(
            KEDA,
            set_predictor(
                autoScaling={
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                        }
                    ]
                }
            ),
        ),
        both(
            KEDA,
            set_predictor(
                autoScaling={
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}}]
                }
            ),
        ),
        "the AverageUtilization type should be set",
    ),
    Case(
        "kpa-metric",
        both(knative, set_predictor(scaleMetric="rps", scaleTarget=5)),
        both(knative, set_predictor(scaleMetric="cpu")),
        "[cpu] is not a supported metric",
    ),
    Case(
        "kpa-rps-target",
        both(knative, set_predictor(scaleMetric="rps", scaleTarget=1)),
        both(knative, set_predictor(scaleMetric="rps", scaleTarget=0)),
        "the target for rps should be greater than 1",
    ),
    Case(
        "kpa-deployment-strategy",
        set_predictor(deploymentStrategy={"type": "Recreate"}),
        both(knative, set_predictor(deploymentStrategy={"type": "Recreate"})),
        "customizing deploymentStrategy is only supported for raw deployment mode",
    ),
    Case(
        "custom-protocol",
        both(
            set_model(storageUri=None),
            lambda o: pred(o).pop("model"),
            set_predictor(
                containers=[{"name": "kserve-container", "image": "x", "env": [{"name": "PROTOCOL", "value": "v2"}]}]
            ),
        ),
        both(
            lambda o: pred(o).pop("model"),
            set_predictor(
                containers=[{"name": "kserve-container", "image": "x", "env": [{"name": "PROTOCOL", "value": "v3"}]}]
            ),
        ),
        "invalid protocol v1, v2. Must be one of [v3]",
    ),
    Case(
        "multinode-storage",
        both(annotate(**{CLASS: "none"}), set_model(storageUri="pvc://models/m"), set_predictor(workerSpec={})),
        both(annotate(**{CLASS: "none"}), set_predictor(workerSpec={})),
        "the InferenceService \"m1\" is invalid: Multinode only supports 'pvc' and 'oci' Storage Protocol(s3)",
    ),
    Case(
        "confidential",
        set_model(confidential={"enabled": True, "resourceId": "kbs:///repo/key/1"}),
        set_model(confidential={"enabled": True, "resourceId": "vault://x"}),
        'spec.predictor.confidential.resourceId: Invalid value: "vault://x": must be in the format kbs:///<repo>/<type>/<tag>',
    ),
    Case(
        "canary-mode",
        canaries(canary()),
        both(knative, canaries(canary())),
        "canary is only supported in Standard deployment mode",
    ),
    Case("canary-name", canaries(canary("rev-2")), canaries(canary("")), "canary[0] predictor.name is required"),
    Case(
        "canary-duplicate",
        canaries(canary("rev-2", 5), canary("rev-3", 5)),
        canaries(canary("rev-2", 5), canary("rev-2", 5)),
        'canary predictor.name "rev-2" is duplicated',
    ),
    Case(
        "canary-vs-stable-name",
        both(set_predictor(name="rev-1"), canaries(canary("rev-2"))),
        both(set_predictor(name="rev-1"), canaries(canary("rev-1"))),
        'canary predictor.name "rev-1" conflicts with stable predictor name',
    ),
    Case(
        "canary-percent",
        canaries(canary(percent=100)),
        canaries(canary(percent=101)),
        'canary "rev-2" trafficPercent must be between 0 and 100, got 101',
    ),
    Case(
        "canary-sum",
        canaries(canary("a", 50), canary("b", 50)),
        canaries(canary("a", 60), canary("b", 50)),
        "sum of canary trafficPercent values (110) must be <= 100",
    ),
    Case(
        "canary-max-replicas",
        canaries(canary(minReplicas=1)),
        canaries(canary(maxReplicas=2)),
        'canary "rev-2" must not set maxReplicas (canary uses fixed replicas)',
    ),
    Case(
        "canary-scale-target",
        canaries(canary()),
        canaries(canary(scaleTarget=50)),
        'canary "rev-2" must not set scaleTarget (canary uses fixed replicas)',
    ),
    Case(
        "canary-scale-metric",
        canaries(canary()),
        canaries(canary(scaleMetric="cpu")),
        'canary "rev-2" must not set scaleMetric (canary uses fixed replicas)',
    ),
    Case(
        "canary-autoscaling",
        canaries(canary()),
        canaries(canary(autoScaling={"metrics": []})),
        'canary "rev-2" must not set autoScaling (canary uses fixed replicas)',
    ),
    Case(
        "canary-worker-spec",
        canaries(canary()),
        canaries(canary(workerSpec={})),
        'canary "rev-2" must not set workerSpec (multi-node is not yet supported for canary)',
    ),
    Case(
        "canary-min-replicas",
        both(set_predictor(minReplicas=2), canaries(canary(minReplicas=2))),
        both(set_predictor(minReplicas=2), canaries(canary(minReplicas=3))),
        'canary "rev-2" minReplicas (3) must not exceed stable predictor minReplicas (2)',
    ),
    Case(
        "canary-exactly-one",
        canaries(canary()),
        canaries({"trafficPercent": 10, "predictor": {"name": "rev-2"}}),
        f'canary "rev-2" predictor: {EXACTLY_ONE}',
    ),
    Case(
        "canary-replicas",
        canaries(canary(minReplicas=0)),
        canaries(canary(minReplicas=-1)),
        f'canary "rev-2" predictor: {components.MIN_REPLICAS_NEGATIVE}',
    ),
]

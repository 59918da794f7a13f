"""The handlers in-process, with a real ``ts.context.Context``: batching, isolation, envelopes, loading, metrics.

These run in a second each; the same behaviour through a real TorchServe is in test_torchserve.py.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.metrics.metric_type_enum import MetricTypes

import model_handlers
from esteira.vocabulary import series_label
from model_handlers.base import EsteiraHandler, ModelLoadError, detect_envelope
from model_handlers.config import ConfigError, load_config
from model_handlers.image import ImageClassifierHandler
from model_handlers.metrics import (
    DEFINITIONS,
    REQUESTS_TOTAL,
    HandlerMetrics,
    metric_line,
    write_metrics,
)
from model_handlers.protocol import Identity
from model_handlers.tabular import TabularHandler
from tests.handlers import models
from tests.handlers.conftest import ContextFactory, ModelDir, json_headers, make_model_dir
from tests.support.waiting import eventually

METRICS_LOGGER = "ts.metrics.caching_metric"
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


class Recording(nn.Module):
    """Wraps a model to record each forward pass's batch size, and to misbehave on marked rows."""

    def __init__(self, inner: nn.Module, fail_on: float | None = None, nan_on: float | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[int] = []
        self.fail_on = fail_on
        self.nan_on = nan_on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(int(x.shape[0]))
        if self.fail_on is not None and bool((x == self.fail_on).any()):
            raise RuntimeError("poisoned input")
        out: torch.Tensor = self.inner(x)
        if self.nan_on is not None:
            out[x[:, 0] == self.nan_on] = float("nan")
        return out


def load(cls: type[EsteiraHandler], model_dir: ModelDir, make_context: ContextFactory, **kwargs: Any) -> EsteiraHandler:
    handler = cls()
    handler.initialize(make_context(model_dir, **kwargs))
    return handler


def call(
    handler: EsteiraHandler,
    make_context: ContextFactory,
    model_dir: ModelDir,
    rows: list[Any],
    headers: list[dict[str, Any]] | None = None,
) -> tuple[list[Any], list[int], Any]:
    context = make_context(model_dir, headers=headers or json_headers(len(rows)))
    answers = handler.handle(rows, context)
    statuses = [context.get_response_status(idx)[0] for idx in range(len(rows))]
    return answers, statuses, context


def metric_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Each ``[METRICS]`` line written (one log record carries all the lines of one write)."""
    return [line for r in caplog.records if r.name == METRICS_LOGGER for line in r.getMessage().splitlines()]


@pytest.fixture
def tabular(model_dirs: dict[str, ModelDir], make_context: ContextFactory) -> EsteiraHandler:
    return load(TabularHandler, model_dirs["tabular"], make_context)


def test_initialize_on_cpu_reads_the_config(tabular: EsteiraHandler) -> None:
    assert tabular.device == torch.device("cpu")
    assert tabular.labels == models.TABULAR_LABELS
    assert tabular.identity.name == "tabular"
    assert tabular.initialized


def test_batch_shares_one_forward_pass_and_isolates_the_bad_request(
    tabular: EsteiraHandler, make_context: ContextFactory, model_dirs: dict[str, ModelDir]
) -> None:
    recording = Recording(tabular.model)
    tabular.model = recording
    rows = [
        {"body": {"data": [[1, 2, 3, 4], [0, 0, 0, 1]]}},
        {"body": bytearray(b"{bad")},
        {"body": {"instances": [{"f0": 4, "f1": 3, "f2": 2, "f3": 1}]}},
        {
            "body": {
                "id": "q",
                "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [9, 0, 0, 0, 0, 9, 0, 0]}],
            }
        },
        {"body": {"data": [1, 2, 3]}},
    ]
    answers, statuses, context = call(tabular, make_context, model_dirs["tabular"], rows)
    assert statuses == [200, 400, 200, 200, 400]
    assert recording.calls == [5]  # 2 + 1 + 2 instances of the good requests, one pass
    bodies = [json.loads(answer) for answer in answers]
    assert [b["label"] for b in bodies[0]] == [models.expected_tabular([1, 2, 3, 4])[0], "alpha"]
    assert bodies[0][0]["probabilities"]["gamma"] == pytest.approx(models.expected_tabular([1, 2, 3, 4])[1][2])
    assert bodies[1] == {
        "error": "malformed JSON: Expecting property name enclosed in double quotes at line 1 column 2"
    }
    assert context.get_response_status(1)[1].startswith("malformed JSON")
    assert bodies[2]["predictions"][0]["label"] == models.expected_tabular([4, 3, 2, 1])[0]
    assert bodies[3]["id"] == "q"
    assert bodies[3]["outputs"][0]["data"] == ["alpha", "beta"]
    assert bodies[4] == {"error": "data: wrong shape: expected 4 features, got 3"}
    assert context.get_response_content_type(0) == "application/json"


def test_a_failing_forward_pass_is_retried_per_request(
    tabular: EsteiraHandler, make_context: ContextFactory, model_dirs: dict[str, ModelDir]
) -> None:
    recording = Recording(tabular.model, fail_on=13.0)
    tabular.model = recording
    rows = [{"body": [1, 2, 3, 4]}, {"body": [13, 0, 0, 0]}, {"body": [0, 1, 0, 0]}]
    answers, statuses, _ = call(tabular, make_context, model_dirs["tabular"], rows)
    assert statuses == [200, 500, 200]
    assert recording.calls == [3, 1, 1, 1]
    assert json.loads(answers[1]) == {"error": "inference failed"}
    assert json.loads(answers[2])["label"] == "beta"


def test_out_of_gpu_memory_is_507_for_that_request(
    tabular: EsteiraHandler, make_context: ContextFactory, model_dirs: dict[str, ModelDir]
) -> None:
    class OutOfMemory(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    tabular.model = OutOfMemory()
    answers, statuses, _ = call(tabular, make_context, model_dirs["tabular"], [{"body": [1, 2, 3, 4]}])
    assert statuses == [507]
    assert json.loads(answers[0]) == {"error": "out of GPU memory"}


def test_non_finite_outputs_fail_only_their_request(
    tabular: EsteiraHandler, make_context: ContextFactory, model_dirs: dict[str, ModelDir]
) -> None:
    tabular.model = Recording(tabular.model, nan_on=7.0)
    answers, statuses, _ = call(
        tabular, make_context, model_dirs["tabular"], [{"body": [7, 0, 0, 0]}, {"body": [1, 0, 0, 0]}]
    )
    assert statuses == [500, 200]
    assert json.loads(answers[0]) == {"error": "the model produced non-finite outputs"}
    # the answer is strict JSON: no NaN sneaks through
    assert "NaN" not in answers[1]


def test_postprocessing_that_fails_on_the_batch_is_retried_request_by_request(
    tabular: EsteiraHandler,
    make_context: ContextFactory,
    model_dirs: dict[str, ModelDir],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    whole = type(tabular).postprocess_outputs
    sizes: list[int] = []

    def only_one_row_at_a_time(outputs: torch.Tensor) -> Any:
        sizes.append(int(outputs.shape[0]))
        if outputs.shape[0] > 1:
            raise ValueError("cannot take a batch")
        return whole(tabular, outputs)

    monkeypatch.setattr(tabular, "postprocess_outputs", only_one_row_at_a_time)
    features = [[9.0, 0.0, 0.0, 0.0], [0.0, 5.0, 0.0, 0.0]]
    answers, statuses, _ = call(tabular, make_context, model_dirs["tabular"], [{"body": row} for row in features])
    assert statuses == [200, 200]
    assert sizes == [2, 1, 1]
    assert [json.loads(answer)["label"] for answer in answers] == [models.expected_tabular(row)[0] for row in features]


def test_outputs_that_overflow_on_extreme_inputs_are_the_callers_fault(
    tabular: EsteiraHandler, make_context: ContextFactory, model_dirs: dict[str, ModelDir]
) -> None:
    """Finite float32 inputs near 3.4e38 overflow the model: a 4xx for that request, so they count against no
    revision; the same non-finite output from ordinary inputs stays a 500 (the model is broken)."""
    tabular.model = Recording(tabular.model, nan_on=7.0)
    rows = [{"body": [3.0e38, 0, 0, 3.0e38]}, {"body": [7, 0, 0, 0]}, {"body": [1, 0, 0, 0]}]
    answers, statuses, _ = call(tabular, make_context, model_dirs["tabular"], rows)
    assert statuses == [422, 500, 200]
    assert "overflow for this input" in json.loads(answers[0])["error"]


def test_in_half_precision_an_input_past_float16_is_the_callers_fault(
    tabular: EsteiraHandler, make_context: ContextFactory, model_dirs: dict[str, ModelDir]
) -> None:
    """A model served in float16 (as on CUDA with half precision) overflows at 65504: an input of 70000 was a
    500 counted against the revision, though far below float32's threshold."""
    tabular.model, tabular.dtype = tabular.model.half(), torch.float16
    rows = [{"body": [70000.0, 2, 3, 4]}, {"body": [1, 2, 3, 4]}]
    answers, statuses, _ = call(tabular, make_context, model_dirs["tabular"], rows)
    assert statuses == [422, 200]
    assert "send values below 65504" in json.loads(answers[0])["error"]


def test_a_bug_inside_handle_answers_every_request_with_500(
    tabular: EsteiraHandler,
    make_context: ContextFactory,
    model_dirs: dict[str, ModelDir],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(_: Any) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(tabular, "_infer", broken)
    answers, statuses, _ = call(tabular, make_context, model_dirs["tabular"], [{"body": [1, 2, 3, 4]}] * 2)
    assert statuses == [500, 500]
    assert [json.loads(a) for a in answers] == [{"error": "internal error in the model handler"}] * 2


def test_regression_answers_numbers(model_dirs: dict[str, ModelDir], make_context: ContextFactory) -> None:
    handler = load(TabularHandler, model_dirs["regression"], make_context)
    answers, statuses, _ = call(
        handler,
        make_context,
        model_dirs["regression"],
        [{"body": [1, 1, 1, 1]}, {"body": {"instances": [[0, 0, 0, 1]]}}],
    )
    assert statuses == [200, 200]
    assert json.loads(answers[0]) == pytest.approx(models.expected_regression([1, 1, 1, 1]))
    assert json.loads(answers[1]) == {"predictions": [pytest.approx(4.5)]}


# --- envelopes ---------------------------------------------------------------------------------------------


def test_detect_envelope(make_context: ContextFactory, model_dirs: dict[str, ModelDir]) -> None:
    context = make_context(model_dirs["tabular"], headers=json_headers(2))
    assert detect_envelope([{"body": {}}, {"body": b""}], context) is None
    assert detect_envelope([[1, 2, 3, 4]], context) == "kserve"
    assert detect_envelope([{"b64": "x"}, {"b64": "y"}], context) == "kserve"
    assert detect_envelope(None, context) == "kserve"
    context.input_names = ["x"]
    assert detect_envelope([{"name": "x", "datatype": "FP32", "shape": [4], "data": [1]}], context) == "kservev2"
    assert detect_envelope([{"body": {}}, {"body": {}}], context) is None  # a stale attribute is not enough
    assert detect_envelope([{"body": 1}], object()) is None  # no TorchServe context at all


def test_kserve_envelope_answers_instances(
    tabular: EsteiraHandler, make_context: ContextFactory, model_dirs: dict[str, ModelDir]
) -> None:
    context = make_context(model_dirs["tabular"], headers=json_headers(1))
    answer = tabular.handle([[1, 2, 3, 4], [9, 0, 0, 0]], context)
    assert [item["label"] for item in answer] == [models.expected_tabular([1, 2, 3, 4])[0], "alpha"]
    assert context.get_response_status(0)[0] == 200
    missing = tabular.handle(None, context)
    assert missing == [{"error": "missing field 'instances'"}]
    assert context.get_response_status(0) == (400, "missing field 'instances'")


def test_kservev2_envelope_answers_one_tensor(
    tabular: EsteiraHandler, make_context: ContextFactory, model_dirs: dict[str, ModelDir]
) -> None:
    context = make_context(model_dirs["tabular"], headers=json_headers(1))
    context.input_names = ["x"]
    data = [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [[1, 2, 3, 4]]}]
    answer = tabular.handle(data, context)
    assert answer == [[pytest.approx(models.expected_tabular([1, 2, 3, 4])[1])]]


def test_envelope_with_a_batch_logs_why_it_fails(
    tabular: EsteiraHandler,
    make_context: ContextFactory,
    model_dirs: dict[str, ModelDir],
    caplog: pytest.LogCaptureFixture,
) -> None:
    context = make_context(model_dirs["tabular"], headers=json_headers(3))
    with caplog.at_level(logging.ERROR, logger="model_handlers.base"):
        tabular.handle([[1, 2, 3, 4]], context)
    assert "service_envelope=kserve hands the handler only the first of the 3 requests" in caplog.text


# --- loading -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("garbage", ModelLoadError, "cannot load the model from 'model.pt': RuntimeError: PytorchStreamReader"),
        ("bad_config", ConfigError, "esteira-model.json: kind: Input should be 'tabular' or 'image'"),
        ("no_config", ConfigError, "esteira-model.json not found in"),
        ("wrong_labels", ModelLoadError, "the model outputs 3 classes but esteira-model.json lists 2 labels"),
    ],
)
def test_load_failures_are_runtime_errors_with_reasons(
    name: str, error: type[Exception], message: str, model_dirs: dict[str, ModelDir], make_context: ContextFactory
) -> None:
    with pytest.raises(error) as caught:
        load(TabularHandler, model_dirs[name], make_context)
    assert isinstance(caught.value, RuntimeError)  # what TorchServe's worker turns into a failed load
    assert message in str(caught.value)


def test_a_model_that_does_not_fit_the_config_fails_to_load(tmp_path: Any, make_context: ContextFactory) -> None:
    image_model_as_tabular = make_model_dir(tmp_path, "mismatch", models.image_classifier(), models.TABULAR_CONFIG)
    with pytest.raises(ModelLoadError, match="the model fails on an example input shaped like the config"):
        load(TabularHandler, image_model_as_tabular, make_context)
    regression_as_classifier = make_model_dir(
        tmp_path, "one-output", models.regressor(), {"kind": "tabular", "n_features": 4}
    )
    with pytest.raises(ModelLoadError, match=r"a classifier must output \[N, classes\] with 2\+ classes, got \[1, 1\]"):
        load(TabularHandler, regression_as_classifier, make_context)


def test_half_precision_is_ignored_on_cpu(
    tmp_path: Any, make_context: ContextFactory, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = make_model_dir(
        tmp_path, "half", models.tabular_classifier(), {**models.TABULAR_CONFIG, "half_precision": True}
    )
    with caplog.at_level(logging.WARNING, logger="model_handlers.base"):
        handler = load(TabularHandler, model_dir, make_context)
    assert handler.dtype == torch.float32
    assert "half_precision is set in esteira-model.json but the model runs on cpu: ignored" in caplog.text


# --- metrics -----------------------------------------------------------------------------------------------


def test_metrics_are_emitted_with_model_and_revision(
    model_dirs: dict[str, ModelDir],
    make_context: ContextFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("ESTEIRA_REVISION", "rev-42")
    with caplog.at_level(logging.INFO, logger=METRICS_LOGGER):
        handler = load(TabularHandler, model_dirs["tabular"], make_context)
    published = "\n".join(line for line in metric_lines(caplog) if "Revision:rev-42" in line)
    for outcome in ("ok", "client_error", "server_error"):  # at zero from load: increase() sees the first error
        assert f"esteira_requests_total.Count:0|#ModelName:tabular,Revision:rev-42,outcome:{outcome}|" in published
    for label in ("alpha", "beta", "gamma"):  # and each class: increase() sees its first predictions
        assert f"esteira_predictions_total.Count:0|#ModelName:tabular,Revision:rev-42,class:{label}|" in published
    rows = [{"body": [[1, 2, 3, 4], [9, 0, 0, 0]]}, {"body": b"[1,"}, {"body": [0, 5, 0, 0]}]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=METRICS_LOGGER):
        call(handler, make_context, model_dirs["tabular"], rows)
    lines = [line for line in metric_lines(caplog) if "Revision:rev-42" in line]  # others may write late counts
    text = "\n".join(lines)
    assert "[METRICS]esteira_requests_total.Count:2|#ModelName:tabular,Revision:rev-42,outcome:ok|#type:COUNTER" in text
    assert "esteira_requests_total.Count:1|#ModelName:tabular,Revision:rev-42,outcome:client_error|" in text
    assert "esteira_batch_size.Count:3|#ModelName:tabular,Revision:rev-42|#type:HISTOGRAM" in text
    assert "esteira_predictions_total.Count:1|#ModelName:tabular,Revision:rev-42,class:gamma|" in text
    assert "esteira_predictions_total.Count:1|#ModelName:tabular,Revision:rev-42,class:alpha|" in text
    assert "esteira_predictions_total.Count:1|#ModelName:tabular,Revision:rev-42,class:beta|" in text
    # One line per metric and label set per batch: the frontend parses each line again.
    assert text.count("esteira_request_duration_seconds.Seconds:") == 1
    assert len(lines) == len(set(lines)) == 7  # duration, batch size, 2 outcomes, 3 classes


def test_metrics_of_batches_in_quick_succession_are_written_together(
    model_dirs: dict[str, ModelDir],
    make_context: ContextFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("ESTEIRA_REVISION", "rev-43")
    handler = load(TabularHandler, model_dirs["tabular"], make_context)
    handler.metric_buffer.interval = 2.0  # far longer than three in-process calls take
    rows = [{"body": [9, 0, 0, 0]}, {"body": [0, 5, 0, 0]}]

    def written() -> list[str]:
        return [line for line in metric_lines(caplog) if "Revision:rev-43" in line]

    def records() -> list[str]:
        return [
            r.getMessage() for r in caplog.records if r.name == METRICS_LOGGER and "Revision:rev-43" in r.getMessage()
        ]

    ok = "esteira_requests_total.Count:{}|#ModelName:tabular,Revision:rev-43,outcome:ok|"
    caplog.clear()  # the counters published at zero when the model loaded
    with caplog.at_level(logging.INFO, logger=METRICS_LOGGER):
        for _ in range(3):
            call(handler, make_context, model_dirs["tabular"], rows)
        assert any(ok.format(2) in line for line in written())  # the first batch after a quiet spell: at once
        assert len(records()) == 1  # the next two wait for the interval
        eventually(lambda: any(ok.format(4) in line for line in written()), 10, "the next two batches' sum")
    assert len(records()) == 2  # one record for the first batch, one for the two after it
    histograms = [line for line in written() if "#type:HISTOGRAM" in line]
    assert len(histograms) == 6  # duration and batch size of every batch, each its own observation
    assert sum("esteira_batch_size.Count:2|" in line for line in histograms) == 3
    counters = [line for line in written() if "esteira_requests_total" in line]
    assert len(counters) == 2  # summed: one line for the first batch, one for the two after it


def test_metrics_never_break_inference() -> None:
    class Exploding:
        def get_metric(self, *_: Any) -> Any:
            raise KeyError("nope")

        def add_metric_to_cache(self, *_: Any) -> Any:
            raise RuntimeError("still nope")

    recorder = HandlerMetrics(Identity("m", "1", "r"))
    recorder.record_batch(Exploding(), seconds=0.1, statuses=[200], predicted=["a"], batch_size=1)
    recorder.record_batch(None, seconds=0.1, statuses=[200], predicted=["a"], batch_size=1)


@pytest.mark.parametrize(
    ("name", "kind", "value", "labels"),
    [
        ("esteira_request_duration_seconds", MetricTypes.HISTOGRAM, 0.0125, ["iris", "7"]),
        ("esteira_requests_total", MetricTypes.COUNTER, 3, ["iris", "7", "ok"]),
        ("esteira_drift_reference", MetricTypes.GAUGE, 0, ["iris", "7", "petal_width_(cm)", "+Inf"]),
    ],
)
def test_metric_lines_are_the_lines_torchserve_writes(
    name: str, kind: MetricTypes, value: float, labels: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Esteira writes a handler call's metric lines in one record; each must read as TorchServe's own."""
    cache = MetricsCacheYamlImpl(config_file_path=str(model_handlers.metrics_config()))
    cache.initialize_cache()
    metric = cache.get_metric(name, kind)
    with caplog.at_level(logging.INFO, logger=METRICS_LOGGER):
        metric.add_or_update(value, labels)
    (written,) = metric_lines(caplog)
    stamp = f"{socket.gethostname()},{int(time.time())}"
    assert metric_line(metric, value, labels, stamp).rsplit(",", 1)[0] == written.rsplit(",", 1)[0]  # to the second


def test_a_metric_the_cache_refuses_costs_no_other_metric_its_update() -> None:
    written: list[tuple[str, float]] = []

    class Series:
        def __init__(self, name: str) -> None:
            self.name = name

        def add_or_update(self, value: float, labels: list[str]) -> None:
            written.append((self.name, value))

    class PartialCache:  # like a cache that knows only the handler's own metrics
        def get_metric(self, name: str, _: Any) -> Series:
            if name == "unknown":
                raise KeyError(name)
            return Series(name)

    definition = DEFINITIONS[REQUESTS_TOTAL]
    updates = [("first", definition, 1.0, ("m", "r", "ok")), ("unknown", definition, 2.0, ("m", "r", "ok"))]
    with pytest.raises(AttributeError):  # no add_metric_to_cache to declare it with
        write_metrics(PartialCache(), [*updates, ("last", definition, 3.0, ("m", "r", "ok"))])
    assert written == [("first", 1.0), ("last", 3.0)]


def test_label_values_survive_the_metric_log_format() -> None:
    assert series_label("a,b:c|d#e f") == "a_b_c_d_e_f"
    assert series_label("") == "_"


# --- images ------------------------------------------------------------------------------------------------


def test_image_handler_decodes_every_encoding(model_dirs: dict[str, ModelDir], make_context: ContextFactory) -> None:
    handler = load(ImageClassifierHandler, model_dirs["image"], make_context)
    rows = [
        {"body": bytearray(models.png("bright"))},
        {"data": bytearray(models.png("checker", size=32, mode="RGB"))},  # multipart, larger, RGB
        {"body": {"instances": [{"b64": models.b64(models.png("dark"))}, models.b64(models.png("checker"))]}},
        {"body": bytearray(b"definitely not an image")},
        {"body": {"instances": [models.b64(b"GIF89a broken")]}},
    ]
    context = make_context(model_dirs["image"], headers=[{"body": {}, "data": {}}] * len(rows))
    answers = handler.handle(rows, context)
    statuses = [context.get_response_status(idx)[0] for idx in range(len(rows))]
    assert statuses == [200, 200, 200, 400, 400]
    bodies = [json.loads(answer) for answer in answers]
    assert bodies[0]["label"] == "bright"
    assert [item["label"] for item in bodies[0]["top_k"]] == ["bright", "checker"]
    assert bodies[1]["label"] == "checker"
    assert [p["label"] for p in bodies[2]["predictions"]] == ["dark", "checker"]
    assert bodies[3] == {"error": "instance 0: undecodable image: not a format Pillow recognises"}
    assert bodies[4]["error"].startswith("instance 0: undecodable image")


def _reference_pixels(data: bytes, config: Any) -> torch.Tensor:
    """An image as the model should see it, one image at a time: converted, resized, scaled, normalised."""
    height, width = config.image_size
    with Image.open(io.BytesIO(data)) as image:
        fitted = image.convert("L" if config.channels == 1 else "RGB").resize(
            (width, height), Image.Resampling.BILINEAR
        )
    tensor = torch.from_numpy(np.asarray(fitted, dtype=np.float32) / 255.0)
    tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    if config.mean is not None:
        tensor = tensor - torch.tensor(config.mean).view(-1, 1, 1)
    if config.std is not None:
        tensor = tensor / torch.tensor(config.std).view(-1, 1, 1)
    return tensor


@pytest.mark.parametrize("channels", [1, 3])
def test_the_model_sees_each_image_converted_resized_scaled_and_normalised(tmp_path: Any, channels: int) -> None:
    """Pixels are scaled and normalised once per batch, and an image already in the model's mode and size skips
    Pillow's convert and resize: the model's input is exactly what converting each image in full gives."""
    normalised = {"mean": [0.5] * channels, "std": [0.25] * channels}
    models.write_config(tmp_path, {**models.IMAGE_CONFIG, "channels": channels, **normalised})
    handler = ImageClassifierHandler()
    handler.config = load_config(str(tmp_path))
    noise = np.random.default_rng(7)
    images = []
    for mode, (width, height) in [("L", (8, 8)), ("RGB", (8, 8)), ("RGBA", (5, 11)), ("P", (32, 32)), ("LA", (8, 3))]:
        pixels = noise.integers(0, 256, (height, width, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").convert(mode).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    requests = [handler.preprocess_instances(images[:2]), handler.preprocess_instances(images[2:3]),
                handler.preprocess_instances(images[3:])]  # fmt: skip
    batch = handler.prepare_batch(torch.cat(requests))
    expected = torch.stack([_reference_pixels(image, handler.config) for image in images])
    assert batch.dtype == torch.float32 and torch.equal(batch, expected)


def test_oversized_images_are_refused_before_decoding(tmp_path: Any, make_context: ContextFactory) -> None:
    model_dir = make_model_dir(
        tmp_path, "small", models.image_classifier(), {**models.IMAGE_CONFIG, "max_image_pixels": 100}
    )
    handler = load(ImageClassifierHandler, model_dir, make_context)
    octet = [{"body": {"content-type": "application/octet-stream"}, "Content-Type": "application/octet-stream"}]
    rows = [{"body": bytearray(models.png("dark", size=16))}]
    answers, statuses, _ = call(handler, make_context, model_dir, rows, headers=octet)
    assert statuses == [400]
    assert json.loads(answers[0]) == {
        "error": "instance 0: image has 256 pixels; the limit is 100 per image (max_image_pixels)"
    }


def test_decoded_pixels_are_limited_per_request(tmp_path: Any, make_context: ContextFactory) -> None:
    """Small files that decode to large images: each passes the per-image limit, together they are refused."""
    config = {**models.IMAGE_CONFIG, "max_image_pixels": 300, "max_request_pixels": 600}
    model_dir = make_model_dir(tmp_path, "budget", models.image_classifier(), config)
    handler = load(ImageClassifierHandler, model_dir, make_context)
    image = models.b64(models.png("dark", size=16))  # 256 pixels
    rows = [{"body": {"instances": [image, image]}}, {"body": {"instances": [image, image, image]}}]
    answers, statuses, _ = call(handler, make_context, model_dir, rows)
    assert statuses == [200, 400]
    message = json.loads(answers[1])["error"]
    assert message.startswith("instance 2: this request's images decode to more than 600 pixels in all")
    assert "per request (max_request_pixels)" in message


# --- GPU ---------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the GPU path runs only where one exists")
@pytest.mark.parametrize("optimize", [False, True], ids=["as-loaded", "optimize"])
def test_gpu_handler_runs_on_cuda_in_half_precision(
    optimize: bool, tmp_path: Any, make_context: ContextFactory, caplog: pytest.LogCaptureFixture
) -> None:
    config = {**models.TABULAR_CONFIG, "half_precision": True, "optimize": optimize}
    model_dir = make_model_dir(tmp_path, "gpu", models.tabular_classifier(), config)
    with caplog.at_level(logging.INFO, logger="model_handlers.base"):
        handler = load(TabularHandler, model_dir, make_context, gpu_id=0)
    assert handler.device == torch.device("cuda:0")
    assert handler.dtype == torch.float16
    verdicts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("optimize is set")]
    if optimize:  # the rewrite ran on the device and agreed in float16; which form is faster is the device's
        assert len(verdicts) == 1 and "faster on example inputs: 1 instance: " in verdicts[0], verdicts
    else:
        assert verdicts == []
    answers, statuses, _ = call(handler, make_context, model_dir, [{"body": [[1, 2, 3, 4], [9, 0, 0, 0]]}])
    assert statuses == [200]
    body = json.loads(answers[0])
    assert [item["label"] for item in body] == [models.expected_tabular([1, 2, 3, 4])[0], "alpha"]
    expected = models.expected_tabular([1, 2, 3, 4])[1]
    assert list(body[0]["probabilities"].values()) == pytest.approx(expected, abs=2e-3)


# --- property ----------------------------------------------------------------------------------------------

row_bodies = st.one_of(
    st.binary(max_size=120).map(bytearray),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(-1e30, 1e30) | st.text(max_size=10),
        lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5),
        max_leaves=20,
    ),
    st.sampled_from([models.b64(models.png("dark")), {"instances": [{"b64": models.b64(models.png("bright"))}]}]),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(row_bodies, min_size=1, max_size=4), image=st.booleans())
def test_handle_answers_every_request_with_200_or_400(
    bodies: list[Any], image: bool, model_dirs: dict[str, ModelDir], make_context: ContextFactory
) -> None:
    """Whatever a batch holds, each request gets its own 200 or 400 and the handler never raises."""
    name, cls = ("image", ImageClassifierHandler) if image else ("tabular", TabularHandler)
    handler = _HANDLERS.get(name) or _HANDLERS.setdefault(name, load(cls, model_dirs[name], make_context))
    rows = [{"body": body} for body in bodies]
    answers, statuses, _ = call(handler, make_context, model_dirs[name], rows)
    assert len(answers) == len(rows)
    assert set(statuses) <= {200, 400}
    for answer, status in zip(answers, statuses, strict=True):
        decoded = json.loads(answer)
        assert (status == 400) == (isinstance(decoded, dict) and set(decoded) == {"error"})


_HANDLERS: dict[str, EsteiraHandler] = {}


def test_a_body_over_the_model_s_limit_is_a_413_as_in_esteira_kserve(
    tmp_path: Path, make_context: ContextFactory
) -> None:
    """esteira-kserve refuses a body over ``max_body_bytes`` with a 413 before the handler; TorchServe, whose own
    limit is larger, hands it to the handler, which answers the same status and words."""
    model_dir = make_model_dir(
        tmp_path, "small", models.tabular_classifier(), {**models.TABULAR_CONFIG, "max_body_bytes": 64}
    )
    handler = load(TabularHandler, model_dir, make_context)
    body = json.dumps({"instances": [[0.1, 0.2, 0.3, 0.4]] * 4}).encode()
    answers, statuses, _ = call(handler, make_context, model_dir, [{"body": body}, {"body": b"[[1, 2, 3, 4]]"}])
    assert statuses == [413, 200]
    assert json.loads(answers[0]) == {"error": f"the request body of {len(body)} bytes exceeded the limit of 64 bytes"}

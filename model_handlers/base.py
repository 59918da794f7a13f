"""``EsteiraHandler``: the TorchServe handler contract done once, for every Esteira model kind.

Why a custom ``handle``: TorchServe's ``BaseHandler.handle`` treats a batch as one unit, so one bad request
fails its neighbours and errors turn into 503s. Here each request of the batch is parsed on its own, a bad one
gets its own 400 (``context.set_response_status(400, message, idx)`` and ``{"error": ...}``), and the
instances of all good requests go through ONE forward pass (that is what TorchServe's dynamic batching is
for) before being split back per caller. Requests the pod's front joined into one TorchServe request
(:mod:`model_handlers.joined`) are taken apart and answered the same way, each on its own. Nothing a client
sends can make ``handle`` raise, so the worker never dies from input. Subclasses only turn instances into a
tensor and output rows into predictions.

Loading fails loudly: a missing or invalid ``esteira-model.json``, an unreadable serialized model, or a model
whose output does not fit the config raises a ``RuntimeError`` subclass from ``initialize``; TorchServe's
worker reports it as a failed load, the model never gets a READY worker, and with ``maxRetryTimeoutInSec``
set in the archive's model config ``/ping`` turns Unhealthy once retries run out.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import torch
from ts.context import RequestProcessor
from ts.torch_handler.base_handler import BaseHandler

from esteira.packaging.heap import freeze_startup_heap
from esteira.vocabulary import ENV_JOINED_REQUESTS
from model_handlers import jsontext
from model_handlers.config import CONFIG_FILE, ConfigError, ModelConfig, load_config
from model_handlers.drift import DriftCounter
from model_handlers.inference_log import Exchange, InferenceLog
from model_handlers.joined import (
    JOINED_CONTENT_TYPE,
    JOINED_HEADER,
    UNREADABLE,
    FramingError,
    joined_answers,
    joined_count,
    joined_requests,
)
from model_handlers.messages import Answer
from model_handlers.metrics import HandlerMetrics, MetricBuffer
from model_handlers.optimize import Outcome, example_inputs, optimize_for_serving
from model_handlers.protocol import (
    BINARY_HEADER,
    BadRequest,
    Identity,
    InputSpec,
    Instance,
    ParsedRequest,
    Prediction,
    Protocol,
    encode_binary,
    envelope_v2_payload,
    error_body,
    extract_body,
    format_response,
    parse_envelope_v1,
    parse_envelope_v2,
    parse_request,
    reason_phrase,
)
from model_handlers.threads import intra_op_threads

logger = logging.getLogger(__name__)

__all__ = ["ConfigError", "EsteiraHandler", "ModelLoadError", "detect_envelope"]

Envelope = Literal["kserve", "kservev2"]
# One request's instances as a handler read them: a tensor, or what its batch_inputs joins into one.
RequestInputs = torch.Tensor | Sequence[Instance]
# Inputs this large overflow float32 arithmetic in any layer with weights above ~1e8, whatever the model.
EXTREME_INPUT = 1e30
# Outputs of at most this many values are finished in Python (finiteness, softmax, top-k): a torch operator
# costs a few microseconds to dispatch whatever its size, more on a core whose caches the request's other work
# has just filled, and a small model's batch pays several. 256 values: a batch of 8 with 32 classes.
PYTHON_FINISH_VALUES = 256
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"


class ModelLoadError(RuntimeError):
    """The model cannot serve: TorchServe must mark the load failed (a RuntimeError is reported, not crashed)."""


@dataclass
class _Slot:
    """One request of a batch on its way through the handler."""

    headers: Mapping[str, Any] = field(default_factory=dict)  # lower-case names
    body: Any = None
    json_text: bool = False  # the body is JSON text that parsed (the inference log takes it as it came)
    parsed: ParsedRequest | None = None
    inputs: RequestInputs | None = None  # None once the request failed or was answered
    predictions: list[Prediction] = field(default_factory=list)
    status: int = 200
    message: str = ""

    def fail(self, status: int, message: str) -> None:
        self.status, self.message, self.inputs = status, message, None

    def exchange(self, answer: str | bytes) -> Exchange:
        body_id = self.parsed.request_id if self.parsed is not None else None
        return Exchange(self.headers, self.body, self.json_text, body_id, self.status, self.predictions, answer)


def detect_envelope(data: Any, context: Any) -> Envelope | None:
    """Which TorchServe request envelope (``service_envelope``) reshaped ``data`` before it reached us, if any.

    Without an envelope every entry is a dict whose keys are request parameters, each of which has a
    content-type entry in that request's headers. The ``kserve`` envelope passes the first request's
    instances instead (None when it had none); ``kservev2`` passes input dicts and sets
    ``context.input_names``.
    """
    if data is None:
        return "kserve"
    processors = getattr(context, "request_processor", None)
    if processors is None or not isinstance(data, list):
        return None
    names = getattr(context, "input_names", None)
    if isinstance(names, list) and all(isinstance(item, Mapping) and "datatype" in item for item in data):
        return "kservev2"
    if len(processors) == len(data) and all(_native_row(row, processors[idx]) for idx, row in enumerate(data)):
        return None
    return "kserve"


def _native_row(row: Any, processor: Any) -> bool:
    if not isinstance(row, Mapping):
        return False
    return all(isinstance(processor.get_request_property(key), Mapping) for key in row)


class EsteiraHandler(BaseHandler, abc.ABC):  # type: ignore[misc]
    """Base of Esteira's handlers; subclasses implement :meth:`preprocess_instances` and :meth:`postprocess_outputs`."""

    config: ModelConfig
    identity: Identity
    spec: InputSpec
    labels: tuple[str, ...] = ()
    model: Any

    def __init__(self) -> None:
        super().__init__()
        self.dtype = torch.float32
        self.recorder: HandlerMetrics | None = None
        self.inference_log: InferenceLog | None = None
        self.drift: DriftCounter | None = None
        self._envelope_warned = False

    # --- subclass API ----------------------------------------------------------------------------------

    @abc.abstractmethod
    def preprocess_instances(self, instances: Sequence[Instance]) -> RequestInputs:
        """One request's instances checked and read (BadRequest if they cannot be), as :meth:`batch_inputs`
        takes them: the work that can fail for one request is done here, so it fails that request alone."""

    def batch_inputs(self, inputs: Sequence[RequestInputs]) -> torch.Tensor:
        """Requests' inputs, as :meth:`preprocess_instances` read them, in one tensor of shape [instances, ...]
        on the CPU, in order. Tensors by default; a handler whose requests are cheaper joined before they become
        a tensor (the tabular one's rows of numbers) joins them so."""
        tensors = cast(Sequence[torch.Tensor], inputs)
        return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors))

    def prepare_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """The requests' tensors put together, made what the model takes: work that is the same for every
        instance is done here once per batch (the image handler scales and normalises pixels here, into a new
        tensor: drift counting may hold the decoded pixels until its next pass)."""
        return batch

    @abc.abstractmethod
    def postprocess_outputs(self, outputs: torch.Tensor) -> list[Prediction]:
        """One prediction per row of ``outputs`` (float32, CPU)."""

    @abc.abstractmethod
    def example_input(self) -> torch.Tensor:
        """A one-instance input for the load-time check that model and config agree."""

    # --- loading ---------------------------------------------------------------------------------------

    def initialize(self, context: Any) -> None:
        properties = context.system_properties
        model_dir = properties.get("model_dir")
        self.config = load_config(model_dir)  # ConfigError is already a RuntimeError with a precise message
        torch.set_num_threads(intra_op_threads(os.environ))  # one CPU stays with the server in front
        serialized = (context.manifest or {}).get("model", {}).get("serializedFile")
        if getattr(context, "model_yaml_config", None) is None:
            context.model_yaml_config = {}  # BaseHandler expects a dict (TorchServe passes {} without a config)
        try:
            super().initialize(context)
        except Exception as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ModelLoadError(
                f"cannot load the model from {serialized!r}: {type(error).__name__}: {first_line}"
            ) from error
        if self.config.half_precision:
            if self.device is not None and self.device.type == "cuda":
                self.model = self.model.half()
                self.dtype = torch.float16
            else:
                logger.warning(
                    "half_precision is set in %s but the model runs on %s: ignored", CONFIG_FILE, self.device
                )
        self.model.eval()
        self.identity = self.config.identity(context.manifest)
        self.spec = self.config.input_spec()
        self.labels = self._check_model()
        if self.config.optimize:
            # The front joins up to ESTEIRA_JOINED_REQUESTS requests for a TorchServe that serves them unbatched.
            batch = max(int(properties.get("batch_size") or 1), int(os.environ.get(ENV_JOINED_REQUESTS) or 1))
            self.optimize_model(batch)
        # Metrics are written at most once a second (TorchServe's every write is a log line its frontend parses);
        # a cache that can run code when scraped (esteira-kserve's registry) has the buffer flushed then too.
        cache = getattr(context, "metrics", None)
        self.metric_buffer = MetricBuffer()
        on_collect = getattr(cache, "on_collect", None)
        if callable(on_collect):
            on_collect(self.metric_buffer.flush)
        self.recorder = HandlerMetrics(self.identity, self.metric_buffer)
        self.recorder.publish(cache, self.labels)
        self.inference_log = InferenceLog.from_env(self.identity)
        self.drift = DriftCounter.load(model_dir, self.config, self.identity)
        if self.drift is not None:
            self.drift.publish(cache)
        self.initialized = True
        frozen = freeze_startup_heap()  # the model is this process's only one: what it loaded lives as long
        logger.info(
            "Esteira %s handler ready: model %s version %s revision %s on %s (%d start-up objects frozen)",
            self.config.kind,
            self.identity.name,
            self.identity.version,
            self.identity.revision,
            self.device,
            frozen,
        )

    def _check_model(self) -> tuple[str, ...]:
        """Run one example through the model; its output must fit the config (else the load fails)."""
        try:
            output = self.forward(self.example_input())
        except Exception as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ModelLoadError(f"the model fails on an example input shaped like the config: {first_line}") from error
        if self.config.task == "regression":
            if output.dim() not in (1, 2) or output.shape[0] != 1:
                raise ModelLoadError(f"a regression model must output [N] or [N, k], got {list(output.shape)}")
            width = 1 if output.dim() == 1 else int(output.shape[1])
            if width != self.config.output_size:
                raise ModelLoadError(
                    f"the model outputs {width} value(s) per instance but {CONFIG_FILE} says output_size "
                    f"{self.config.output_size}"
                )
            return ()
        if output.dim() != 2 or output.shape[1] < 2:
            raise ModelLoadError(f"a classifier must output [N, classes] with 2+ classes, got {list(output.shape)}")
        classes = int(output.shape[1])
        if self.config.labels is None:
            return tuple(str(index) for index in range(classes))
        if len(self.config.labels) != classes:
            raise ModelLoadError(
                f"the model outputs {classes} classes but {CONFIG_FILE} lists {len(self.config.labels)} labels"
            )
        return self.config.labels

    def optimize_model(self, batch_size: int) -> Outcome:
        """The model rewritten for inference where that agrees and pays (:mod:`model_handlers.optimize`), on
        example inputs of one instance and of ``batch_size``; what came of it is logged and returned."""
        inputs = example_inputs(self.example_input(), batch_size)
        self.model, outcome = optimize_for_serving(self.model, self.run_model, inputs, self.dtype)
        verdict = "serves optimized for inference" if outcome.kept else "serves as loaded, not optimized"
        logger.info("optimize is set in %s: the model %s (%s)", CONFIG_FILE, verdict, outcome.reason)
        return outcome

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """The model on ``batch``: moved to the device, run without autograd, returned as float32 on the CPU."""
        return self.run_model(self.model, batch)

    def run_model(self, model: Any, batch: torch.Tensor) -> torch.Tensor:
        """``model`` on ``batch`` as :meth:`forward` runs the served one."""
        if batch.device != self.device or batch.dtype != self.dtype:
            batch = batch.to(self.device, self.dtype)
        with torch.inference_mode():
            output = model(batch)
        if isinstance(output, tuple | list):
            output = output[0]
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"the model returned {type(output).__name__}, not a tensor")
        return output.float().cpu()  # both return the tensor itself when it is already float32 on the CPU

    # --- serving ---------------------------------------------------------------------------------------

    def handle(self, data: Any, context: Any) -> list[Any]:
        """Answer every request of the TorchServe batch, the requests joined in one included; never raises."""
        processors = getattr(context, "request_processor", None)
        # Joined requests come one entry a request (a service envelope's instances do not).
        if isinstance(data, list) and processors is not None and len(processors) == len(data):
            counts = [_joined(context, idx) for idx in range(len(data))]
            if any(count is not None for count in counts):
                return self._handle_joined(data, context, counts)
        return self._handle(data, context)

    def _handle_joined(self, data: list[Any], context: Any, counts: list[int | FramingError | None]) -> list[Any]:
        """The batch with its joined requests taken apart (:mod:`model_handlers.joined`): each joined request is
        answered as the requests of a batch are, in one pass with the batch's other requests, and its answers
        joined in its own answer. The context holds the requests taken apart while they are answered, then the
        batch's own again, as TorchServe reads each request's status and headers from it."""
        processors, ids = context.request_processor, context.request_ids
        rows: list[Any] = []
        inner_processors: list[Any] = []
        inner_ids: dict[int, str] = {}
        taken_apart: list[range | str] = []  # per request of the batch: its rows below, or why it cannot be read
        for idx, (row, count) in enumerate(zip(data, counts, strict=True)):
            start = len(rows)
            if count is None:  # a request of its own: answered on the batch's own processor
                rows.append(row)
                inner_processors.append(processors[idx])
                inner_ids[start] = ids.get(idx)
                taken_apart.append(range(start, start + 1))
                continue
            try:
                if isinstance(count, FramingError):
                    raise count
                requests = joined_requests(_joined_body(row), count)
            except FramingError as error:
                taken_apart.append(f"{UNREADABLE}: {error}")
                continue
            for part, (headers, body) in enumerate(requests):
                rows.append({"body": body})
                inner_processors.append(processor_for(headers))
                inner_ids[start + part] = f"{ids.get(idx)}-{part}"
            taken_apart.append(range(start, len(rows)))
        context.request_processor, context.request_ids = inner_processors, inner_ids
        try:
            results = self._handle(rows, context) if rows else []
        finally:
            context.request_processor, context.request_ids = processors, ids
        answers: list[Any] = []
        for idx, (count, span) in enumerate(zip(counts, taken_apart, strict=True)):
            if isinstance(span, str):
                context.set_response_content_type(idx, JSON_CONTENT_TYPE)
                context.set_response_status(400, reason_phrase(span), idx)
                answers.append(jsontext.dumps(error_body(span)))
            elif count is None:
                answers.append(results[span.start])
            else:
                replies = (answer_from(inner_processors[at], results[at]) for at in span)
                answers.append(joined_answers((reply.status, reply.headers, reply.body) for reply in replies))
                context.set_response_content_type(idx, JOINED_CONTENT_TYPE)
                context.set_response_header(idx, JOINED_HEADER, str(len(span)))
                context.set_response_status(200, "OK", idx)
        return answers

    def _handle(self, data: Any, context: Any) -> list[Any]:
        """Answer every request of the TorchServe batch; never raises."""
        started = time.perf_counter()
        self.context = context
        try:
            envelope = detect_envelope(data, context)
            rows: list[Any] = [data] if envelope else list(data or [])
            slots = [self._read(idx, row, context, envelope) for idx, row in enumerate(rows)]
            inputs = self._inputs(slots)
            read = [slot for slot in slots if slot.inputs is not None]  # whose instances ``inputs`` holds
            counting = getattr(context, "metrics", None) is not None  # nowhere to write: nothing to count
            counted = (
                self.drift.snapshot(inputs, self.config) if self.drift and inputs is not None and counting else None
            )
            self._infer(slots, None if inputs is None else self.prepare_batch(inputs))
            if counted is not None:
                self._count_inputs(context, counted, read)
            answers = [self._answer(idx, slot, context, envelope) for idx, slot in enumerate(slots)]
        except Exception:  # a bug here must not take the batch (or the worker) down silently
            logger.exception("Esteira handler failed on a batch")
            envelope = None
            slots, answers = self._internal_error(data, context)
        self._record(context, slots, time.perf_counter() - started)
        if self.inference_log is not None and not envelope and isinstance(data, list):
            self.inference_log.observe(
                context, [slot.exchange(answer) for slot, answer in zip(slots, answers, strict=True)]
            )
        if envelope:
            self._warn_envelope(envelope, context)
            return list(answers[0])  # the envelope wraps the one answer it can carry
        return answers

    def _inputs(self, slots: list[_Slot]) -> torch.Tensor | None:
        """Every good request's instances in one tensor, in order, as they were read (None when no request is
        good); :meth:`prepare_batch` makes it what the model takes."""
        inputs = [slot.inputs for slot in slots if slot.inputs is not None]
        return self.batch_inputs(inputs) if inputs else None

    def _count_inputs(self, context: Any, counted: np.ndarray | torch.Tensor, read: list[_Slot]) -> None:
        """Drift and data-quality counts (``model_handlers.drift``) of the inputs, as read, of the requests in
        ``read`` that were answered: a tabular model's features, as it takes them; an image model's decoded
        pixels, before scaling. One refused after it was read (a non-finite output, a failed forward pass) is
        not counted, as one refused before is not."""
        assert self.drift is not None
        keep: list[int] = []
        at = 0
        for slot in read:
            size = len(slot.parsed.instances) if slot.parsed is not None else 0
            if slot.status == 200:
                keep.extend(range(at, at + size))
            at += size
        positions = None if len(keep) == at else keep
        self.drift.observe(getattr(context, "metrics", None), counted, positions, self.config, self.metric_buffer)

    def _internal_error(self, data: Any, context: Any) -> tuple[list[_Slot], list[Any]]:
        """A 500 for every request of the batch, touching the context as little as possible."""
        rows = data if isinstance(data, list) else [data]
        slots = [
            _Slot(body=_body_or_none(row), status=500, message="internal error in the model handler") for row in rows
        ]
        for idx in range(len(slots)):
            try:
                context.set_response_status(500, "internal error in the model handler", idx)
            except Exception:  # no usable context: TorchServe still gets a list of the right length
                logger.debug("could not set the status of request %d", idx)
        return slots, [jsontext.dumps(error_body(slot.message)) for slot in slots]

    def _read(self, idx: int, row: Any, context: Any, envelope: Envelope | None) -> _Slot:
        slot = _Slot()
        try:
            if envelope == "kserve":
                slot.parsed = parse_envelope_v1(row, self.spec)
            elif envelope == "kservev2":
                slot.parsed = parse_envelope_v2(row, self.spec)
            else:
                slot.headers = _request_headers(context, idx)
                content_type, size, binary = _content_headers(slot.headers)
                slot.body = extract_body(row, content_type)
                slot.parsed = parse_request(
                    slot.body, self.spec, content_type=content_type, body_size=size, binary_header=binary
                )
                slot.json_text = (
                    binary is None
                    and slot.parsed.protocol is not Protocol.RAW
                    and isinstance(slot.body, bytes | bytearray | str)
                )
            slot.inputs = self.preprocess_instances(slot.parsed.instances)
        except BadRequest as error:
            slot.fail(error.status, error.message)
        except Exception as error:  # reported as this request's server error
            logger.exception("reading request %d failed", idx)
            slot.fail(500, f"internal error while reading the request: {type(error).__name__}")
        return slot

    def _infer(self, slots: list[_Slot], batch: torch.Tensor | None) -> None:
        """One forward pass over ``batch``, every good request's instances; on failure, one pass per request to
        isolate it."""
        good = [slot for slot in slots if slot.inputs is not None]
        if not good or batch is None:
            return
        try:
            outputs = self.forward(batch)
        except Exception as error:  # fall back to per-request passes below
            logger.exception("batched forward pass over %d requests failed", len(good))
            if len(good) == 1:
                self._fail_inference(good[0], error)
                return
            for slot in good:
                self._infer_one(slot)
            return
        self._finish_batch(good, outputs)

    def _finish_batch(self, good: list[_Slot], outputs: torch.Tensor) -> None:
        """Predictions for the whole batch at once; per request (to isolate a failure) only when the batch's
        outputs are not all finite or postprocessing fails."""
        counts = [len(slot.parsed.instances) if slot.parsed else 0 for slot in good]
        predictions: list[Prediction] | None = None
        if all_finite(outputs):
            try:
                predictions = self.postprocess_outputs(outputs)
            except Exception:
                logger.exception("postprocessing the batch failed; retrying request by request")
        start = 0
        for slot, count in zip(good, counts, strict=True):
            if predictions is None:
                self._finish(slot, outputs[start : start + count])
            else:
                slot.predictions, slot.inputs = predictions[start : start + count], None
            start += count

    def _infer_one(self, slot: _Slot) -> None:
        try:
            assert slot.inputs is not None
            self._finish(slot, self.forward(self.prepare_batch(self.batch_inputs([slot.inputs]))))
        except Exception as error:
            logger.exception("forward pass failed for one request")
            self._fail_inference(slot, error)

    @staticmethod
    def _fail_inference(slot: _Slot, error: Exception) -> None:
        if isinstance(error, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
            slot.fail(507, "out of GPU memory")
        else:
            slot.fail(500, "inference failed")

    def _finish(self, slot: _Slot, rows: torch.Tensor) -> None:
        if not bool(torch.isfinite(rows).all()):
            self._fail_non_finite(slot)
            return
        try:
            slot.predictions = self.postprocess_outputs(rows)
        except Exception:
            logger.exception("postprocessing failed")
            slot.fail(500, "postprocessing failed")
        slot.inputs = None

    def _fail_non_finite(self, slot: _Slot) -> None:
        """Non-finite outputs from inputs near float32's limit are the input's doing (422, so a client cannot
        make a revision look broken); from ordinary inputs they are the model's (500)."""
        read = self.batch_inputs([slot.inputs]) if slot.inputs is not None else None
        largest = float(read.abs().max()) if read is not None and read.numel() else 0.0
        # A model served in half precision overflows at 65504: an input past its dtype's range is the input's too.
        extreme = (
            min(EXTREME_INPUT, float(torch.finfo(self.dtype).max)) if self.dtype.is_floating_point else EXTREME_INPUT
        )
        if largest >= extreme:
            slot.fail(
                422,
                f"the model's outputs overflow for this input (a value of magnitude {largest:.3g}); "
                f"send values below {extreme:g}",
            )
        else:
            slot.fail(500, "the model produced non-finite outputs")

    def _answer(self, idx: int, slot: _Slot, context: Any, envelope: Envelope | None) -> Any:
        with_context = getattr(context, "request_processor", None) is not None
        if with_context:
            context.set_response_content_type(idx, JSON_CONTENT_TYPE)
        if slot.status != 200 or slot.parsed is None:
            if with_context:
                context.set_response_status(slot.status, reason_phrase(slot.message), idx)
            body: Any = error_body(slot.message)
            return [body] if envelope else jsontext.dumps(body)
        if with_context:
            context.set_response_status(200, "OK", idx)
        if envelope == "kserve":
            return [prediction.to_json(self.labels) for prediction in slot.predictions]
        if envelope == "kservev2":
            return envelope_v2_payload(slot.predictions)
        request_id = context.get_request_id(idx) if with_context else None
        body = format_response(slot.parsed, slot.predictions, self.labels, self.identity, fallback_id=request_id)
        if slot.parsed.binary_outputs and with_context:
            payload, header_length = encode_binary(body, slot.parsed.binary_outputs)
            context.set_response_content_type(idx, BINARY_CONTENT_TYPE)
            context.set_response_header(idx, BINARY_HEADER, str(header_length))
            return payload
        return jsontext.dumps(body)  # finite: _finish_batch and _finish refuse non-finite outputs

    def _record(self, context: Any, slots: list[_Slot], seconds: float) -> None:
        if self.recorder is None:
            return
        processors = getattr(context, "request_processor", None)
        predicted = [p.label for slot in slots if slot.status == 200 for p in slot.predictions if p.label is not None]
        self.recorder.record_batch(
            getattr(context, "metrics", None),
            seconds=seconds,
            statuses=[slot.status for slot in slots],
            predicted=predicted,
            batch_size=len(processors) if processors else len(slots),
        )

    def _warn_envelope(self, envelope: Envelope, context: Any) -> None:
        processors = getattr(context, "request_processor", None) or []
        if len(processors) > 1 and not self._envelope_warned:
            self._envelope_warned = True
            logger.error(
                "service_envelope=%s hands the handler only the first of the %d requests in this batch, so "
                "TorchServe fails the whole batch; drop service_envelope (Esteira's handlers read KServe v1 and "
                "v2 bodies themselves) or set batchSize to 1",
                envelope,
                len(processors),
            )

    # --- helpers for subclasses ------------------------------------------------------------------------

    def classify(self, outputs: torch.Tensor, k: int = 1) -> list[tuple[list[float], list[int]]]:
        """Per row: the class probabilities (softmax unless the model already outputs probabilities) and the
        indices of the ``k`` most probable classes, best first. A few values are finished in Python
        (``PYTHON_FINISH_VALUES``); more go through torch."""
        logits = self.config.output == "logits"
        if outputs.numel() <= PYTHON_FINISH_VALUES:
            rows = [softmax(row) if logits else row for row in outputs.tolist()]
            return [(row, top_indices(row, k)) for row in rows]
        probabilities = outputs.softmax(dim=1) if logits else outputs
        indices = probabilities.topk(k, dim=1).indices.tolist()
        return list(zip(probabilities.tolist(), indices, strict=True))


def softmax(row: list[float]) -> list[float]:
    """The softmax of one row of finite logits, in float64."""
    top = max(row)
    exps = [math.exp(value - top) for value in row]
    total = sum(exps)
    return [value / total for value in exps]


def top_indices(row: list[float], k: int) -> list[int]:
    """The indices of the ``k`` largest values, largest first; of equal values, the first."""
    if k == 1:
        return [row.index(max(row))]
    return sorted(range(len(row)), key=row.__getitem__, reverse=True)[:k]


def all_finite(outputs: torch.Tensor) -> bool:
    """Whether every output is finite, with one reduction (an overflowing float32 sum only costs the careful
    path); a few values are summed in Python."""
    if outputs.numel() <= PYTHON_FINISH_VALUES and outputs.dim() in (1, 2):
        values = outputs.tolist()
        return math.isfinite(sum(map(sum, values)) if outputs.dim() == 2 else sum(values))
    return math.isfinite(float(outputs.sum()))


def _request_headers(context: Any, idx: int) -> dict[str, Any]:
    """The request's headers as TorchServe passes them, with lower-case names (read once per request: parsing
    and the inference log both use them)."""
    try:
        headers = context.get_all_request_header(idx)
    except Exception:  # no TorchServe context (unit tests) or no headers
        return {}
    if not isinstance(headers, Mapping):
        return {}
    return {str(key).lower(): value for key, value in headers.items()}


def _content_headers(headers: Mapping[str, Any]) -> tuple[str | None, int | None, str | None]:
    """The request's Content-Type, Content-Length and Inference-Header-Content-Length."""
    content_type = headers.get("content-type")
    length = headers.get("content-length")
    binary = headers.get(BINARY_HEADER.lower())
    try:
        size = int(length) if length is not None else None
    except (TypeError, ValueError):
        size = None
    return (
        str(content_type) if isinstance(content_type, str) else None,
        size,
        str(binary) if binary is not None else None,
    )


def _joined(context: Any, idx: int) -> int | FramingError | None:
    """How many requests the batch's request ``idx`` joins (None: it is one request of its own), or why it
    cannot be read. Only the header's exact name is looked up: the front and the router write it lower case."""
    value = context.get_request_header(idx, JOINED_HEADER)
    if value is None:  # every request but a joined one: one lookup
        return None
    try:
        return joined_count({JOINED_HEADER: value})
    except FramingError as error:
        return error


def _joined_body(row: Any) -> bytes | bytearray:
    body = extract_body(row)
    if not isinstance(body, bytes | bytearray):
        raise FramingError(f"the body must reach the model as bytes (Content-Type: {JOINED_CONTENT_TYPE})")
    return body


def processor_for(headers: Mapping[str, str]) -> RequestProcessor:
    """A request's processor as TorchServe's worker makes one: its headers, and under ``body`` the body's."""
    return RequestProcessor({**headers, "body": dict(headers)})


def answer_from(processor: RequestProcessor, result: Any) -> Answer:
    """One request's answer as the handler left it: ``result`` and the status and headers on its processor."""
    body = bytes(result) if isinstance(result, bytes | bytearray) else str(result).encode()
    return Answer(processor.get_response_status_code(), body, processor.get_response_headers())


def _body_or_none(row: Any) -> Any:
    try:
        return extract_body(row)
    except BadRequest:
        return None

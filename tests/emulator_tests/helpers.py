"""Plain-HTTP helpers for the emulator's own tests (raw requests with a chosen User-Agent or content type)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
MD = ("serving.esteira.io", "v1alpha1", "modeldeployments")
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
KOPF_AGENT = "kopf/1.45.2"  # what Kopf's HTTP client sends; the default fault target


def http(
    base: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    user_agent: str = "esteira-tests",
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """Send one request; return the status and the decoded JSON body (or None when there is none)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": content_type, "User-Agent": user_agent}
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def watch_lines(
    base: str, path: str, *, user_agent: str = "esteira-tests", timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Read a whole watch stream (it must end on its own, e.g. via ``timeoutSeconds``) as decoded events."""
    request = urllib.request.Request(base + path, headers={"User-Agent": user_agent})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return [json.loads(line) for line in response.read().splitlines() if line.strip()]


def watch_until(
    base: str, path: str, done: Callable[[list[dict[str, Any]]], bool], *, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Read a watch stream event by event until ``done(events)`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    request = urllib.request.Request(base + path, headers={"User-Agent": "esteira-tests"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        while not done(events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"watch incomplete after {timeout}s: {len(events)} events")
            line = response.readline()
            if not line:
                raise AssertionError(f"the watch stream ended early after {len(events)} events")
            if line.strip():
                events.append(json.loads(line))
    return events


def model_deployment(name: str, model: str = "resnet", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.esteira.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": model, **spec},
    }


def inference_service(name: str, **predictor: Any) -> dict[str, Any]:
    model = {"modelFormat": {"name": "pytorch"}, "storageUri": "s3://models/x"}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"model": model, **predictor}},
    }


def api_reason(exc: Exception) -> str:
    """The ``reason`` of the Status object carried by a ``kubernetes`` client ApiException."""
    body = getattr(exc, "body", None)
    return str(json.loads(body).get("reason")) if body else ""

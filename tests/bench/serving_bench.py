"""Serving benchmark: the demo models through a real TorchServe with Esteira's handlers, next to the same
TorchScript models called in-process on the same batches (the ceiling the server overhead is measured
against). Needs `make models` first. Writes `.bench/serving.json`.

Each caller thread sends one-instance KServe v1 requests back to back for a fixed time; TorchServe
batches concurrent requests (batchSize 8, maxBatchDelay 10 ms from the packaged model config).
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from tests.support.torchserve import TorchServe

REPO = Path(__file__).resolve().parents[2]
MODELS = {"tabular": "iris-1.0.0", "image": "digits-1.0.0"}
BATCH_SIZE = 8


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_instance(request_file: Path) -> Any:
    return json.loads(request_file.read_text())["instances"][0]


def load(port: int, model: str, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def caller() -> None:
        nonlocal errors
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        failed = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            connection.request("POST", f"/v1/models/{model}:predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            failed += response.status != 200
        with lock:
            latencies.extend(mine)
            errors += failed

    threads = [threading.Thread(target=caller) for _ in range(concurrency)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "errors": errors,
    }


def in_process(model_file: Path, example: torch.Tensor, batch: int, seconds: float) -> dict[str, float]:
    """The same TorchScript model called directly on batches of the size TorchServe would form."""
    model = torch.jit.load(str(model_file)).eval()
    inputs = example.repeat(batch, *([1] * (example.dim() - 1)))
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    with torch.inference_mode():
        while time.monotonic() < deadline:
            started = time.perf_counter()
            model(inputs)
            latencies.append(time.perf_counter() - started)
    return {
        "rps": round(batch * len(latencies) / sum(latencies), 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
    }


def example_tensor(kind: str, instance: Any) -> torch.Tensor:
    if kind == "tabular":
        return torch.tensor([instance], dtype=torch.float32)
    return torch.zeros(1, 1, 8, 8)  # the digits model's input; the values do not change its cost


def run(seconds: float, concurrencies: list[int], out: Path) -> dict[str, Any]:
    models_dir = REPO / "build" / "models"
    requests_dir = REPO / "build" / "demo" / "requests"
    if not models_dir.exists():
        raise SystemExit("run `make models` first")
    work = Path(tempfile.mkdtemp(prefix="esteira-serving-bench-"))
    store = work / "store"
    store.mkdir()
    for key in MODELS.values():
        name = key.split("-")[0]
        (store / f"{name}.mar").symlink_to(models_dir / key / "model-store" / f"{name}.mar")
    results: dict[str, Any] = {"seconds_per_point": seconds, "batch_size": BATCH_SIZE, "models": {}}
    names = [key.split("-")[0] for key in MODELS.values()]
    with TorchServe(work / "ts", store, names) as server:
        port = server.ports["inference"]
        for kind, key in MODELS.items():
            name = key.split("-")[0]
            instance = one_instance(requests_dir / f"{name}-v1.json")
            body = json.dumps({"instances": [instance]}).encode()
            load(port, name, body, 2, 2.0)  # warm up the worker
            rows = {}
            for concurrency in concurrencies:
                served = load(port, name, body, concurrency, seconds)
                ceiling = in_process(
                    REPO / "build" / "demo" / key / "model.pt",
                    example_tensor(kind, instance),
                    min(concurrency, BATCH_SIZE),
                    seconds / 2,
                )
                rows[str(concurrency)] = {"torchserve": served, "in_process": ceiling}
                print(f"{name:7} c={concurrency:<3} torchserve {served}  in-process {ceiling}", flush=True)
            results["models"][name] = rows
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "serving.json")
    args = parser.parse_args()
    results = run(args.seconds, args.concurrency, args.out)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""`python -m esteira.local.demo_retrain`: the retraining command `make demo-loop` gives `spec.retraining`.

`esteira up` starts it per trigger with the trigger's evidence in the environment. It downloads the labelled
window the evidence names (the collector's Parquet export), trains iris on the original training rows plus the
logged, labelled rows, validates on held-out rows (the original held-out share and a share of the logged rows
kept out of training), scores the build it replaces on the same rows (the card's validation baseline, so the
gate compares like with like), packages the build with `esteira package` and its model card, and points the
ModelDeployment file at it. From run `--worse-from-run` on it trains on shuffled labels: a candidate that the
gate must refuse.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import yaml

from esteira.vocabulary import ENV_LOG_MODE, ENV_RETRAIN_EVIDENCE, ENV_RETRAIN_RUN

HELD_OUT_PERCENT = 30  # of the logged rows, chosen by request id so a row never moves between the two sets
EXPORT_TIMEOUT = 30.0
SCORE_CHUNK = 64  # rows per request when the build being replaced is scored (a handler's default max_instances)


@dataclass(frozen=True)
class Logged:
    """Labelled rows from the collector: features and the class index of their truth."""

    x: np.ndarray
    y: np.ndarray
    held_out: np.ndarray  # bool per row


def download(url: str) -> list[dict[str, Any]]:
    """The collector's export as rows (one per labelled instance)."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    with urllib.request.urlopen(url, timeout=EXPORT_TIMEOUT) as response:  # the evidence's own URL
        table = pq.read_table(io.BytesIO(response.read()))
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def _instance(row: dict[str, Any], width: int) -> list[float] | None:
    """The features the request sent for this row's instance, or None if the record does not hold them."""
    try:
        body = json.loads(row["request"]) if isinstance(row["request"], str) else row["request"]
        values = body["instances"][int(row["index"])]
        features = [float(v) for v in values]
    except (TypeError, ValueError, KeyError, IndexError):
        return None
    return features if len(features) == width else None


def _class(actual: Any, labels: Sequence[str]) -> int | None:
    text = json.loads(actual) if isinstance(actual, str) and actual.startswith('"') else actual
    if isinstance(text, str) and text in labels:
        return labels.index(text)
    return None


def logged_rows(rows: list[dict[str, Any]], labels: Sequence[str], width: int) -> Logged:
    """Usable labelled rows (features present, truth a known class), each request's share fixed by its id."""
    x, y, held = [], [], []
    for row in rows:
        features, truth = _instance(row, width), _class(row["actual"], labels)
        if features is None or truth is None:
            continue
        x.append(features)
        y.append(truth)
        held.append(int(hashlib.sha256(str(row["request_id"]).encode()).hexdigest(), 16) % 100 < HELD_OUT_PERCENT)
    return Logged(
        np.asarray(x, dtype=np.float32).reshape(-1, width), np.asarray(y, dtype=np.int64), np.asarray(held, bool)
    )


def served_accuracy(storage_uri: str, x: np.ndarray, y: np.ndarray, labels: Sequence[str]) -> float | None:
    """Accuracy on (x, y) of the build at `storage_uri`, every row answered by that build's own handler as it
    serves (in this process); None for a build not on this machine's disk."""
    from model_handlers.inprocess import InProcessHandler
    from model_handlers.messages import RawRequest

    location = urlparse(storage_uri)
    if location.scheme != "file":
        return None
    os.environ.pop(ENV_LOG_MODE, None)  # scoring is not traffic: nothing to log
    predicted: list[int] = []
    with tempfile.TemporaryDirectory(prefix="esteira-score-") as work:
        handler = InProcessHandler(Path(url2pathname(location.path)), Path(work), None)
        for start in range(0, len(x), SCORE_CHUNK):
            body = json.dumps({"instances": x[start : start + SCORE_CHUNK].tolist()}).encode()
            (answer,) = handler.run([RawRequest(body, {"content-type": "application/json"})])
            if answer.status != 200:
                raise RuntimeError(f"the build at {storage_uri} answered {answer.status}: {answer.body[:300]!r}")
            predicted += [labels.index(p["label"]) for p in json.loads(answer.body)["predictions"]]
    return round(float((np.asarray(predicted) == y).mean()), 4)


def next_version(newest: str) -> str:
    """1.0.0 -> 1.1.0: a retrained build is the next minor version after the newest build."""
    parts = newest.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return f"{parts[0]}.{int(parts[1]) + 1}.0"
    return f"{newest}-retrained"


def update_manifest(path: Path, version: str, folder: Path, card: dict[str, Any]) -> None:
    """Point the ModelDeployment at the new build, atomically (`esteira up` may read the file at any moment)."""
    document = yaml.safe_load(path.read_text())
    model = document["spec"]["model"]
    model.update({"version": version, "storageUri": folder.resolve().as_uri(), "card": card})
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(yaml.safe_dump(document, sort_keys=False))
    staged.replace(path)


def retrain(manifest: Path, out: Path, evidence: dict[str, Any], run: int, worse: bool, owner: str) -> int:
    import torch

    from esteira.cli import main as esteira
    from model_handlers.demo import build, datasets, profile
    from model_handlers.demo.training import TabularNet, TrainSettings, deterministic, predict, train

    data = datasets.iris()
    spec = yaml.safe_load(manifest.read_text())["spec"]
    newest = str(spec["model"]["version"])  # numbers follow the newest build, so a rejected one's is not reused
    version = next_version(newest)
    # The stable build it extends and must beat, as the evidence names it (else the build the file asks for).
    stable = evidence.get("stable") or {"version": newest, "storageUri": spec["model"]["storageUri"]}
    parent = str(stable["version"])
    logged = logged_rows(download(str(evidence["labelledData"])), data.labels, len(data.feature_names))
    x_train = np.concatenate([data.x_train, logged.x[~logged.held_out]])
    y_train = np.concatenate([data.y_train, logged.y[~logged.held_out]])
    x_valid = np.concatenate([data.x_test, logged.x[logged.held_out]])
    y_valid = np.concatenate([data.y_test, logged.y[logged.held_out]])
    print(f"run {run}: {len(logged.y)} logged labelled rows ({int(logged.held_out.sum())} held out), parent {parent}")
    # As many optimiser steps as `make models` takes for iris 1.0.0, however many rows were logged.
    settings = TrainSettings(max(10, 150 * len(data.y_train) // len(y_train)), 0.02, 16, seed=7)
    if worse:
        y_train = np.random.default_rng(run).permutation(y_train)
        print("training on shuffled labels (--worse-from-run): this candidate must be refused")
    inputs = torch.from_numpy(x_train)
    with deterministic(settings.seed):
        net = TabularNet(inputs.mean(dim=0), inputs.std(dim=0), classes=len(data.labels))
        model = train(net, x_train, y_train, settings)
        predicted = predict(model, x_valid)
    score = round(float((predicted == y_valid).mean()), 4)
    print(f"held-out accuracy {score} on {len(y_valid)} rows")
    baseline = served_accuracy(str(stable["storageUri"]), x_valid, y_valid, data.labels)
    print(f"{parent}, the stable build it would replace, scores {baseline} on the same rows")

    staging = out / f"iris-{version}-train"
    staging.mkdir(parents=True, exist_ok=True)
    build.export(model, torch.from_numpy(x_valid[:2]), staging / build.MODEL_FILE)
    variant = build.Variant("iris", version, "retrained", "tabular", datasets.iris, lambda d: net, settings)
    (staging / build.HANDLER_CONFIG).write_text(json.dumps(build.handler_config(variant, data), indent=2))
    reference = profile.reference_profile(
        model="iris",
        version=version,
        source=f"held-out rows of retraining run {run}: iris's and {int(logged.held_out.sum())} logged",
        kind="tabular",
        features={name: x_valid[:, i] for i, name in enumerate(data.feature_names)},
        predicted=predicted,
        labels=data.labels,
    )
    (staging / build.PROFILE_FILE).write_text(reference.to_json())
    training_csv = staging / "training-data.csv"
    header = ",".join([*data.feature_names, "species"])
    rows = np.column_stack([x_train, y_train])
    np.savetxt(training_csv, rows, delimiter=",", header=header, comments="", fmt="%.4f")
    target = out / f"iris-{version}"
    code = esteira(
        [
            "package",
            "--name=iris",
            f"--version={version}",
            "--handler=tabular",
            f"--model-file={staging / build.MODEL_FILE}",
            "--extra-files",
            str(staging / build.HANDLER_CONFIG),
            str(staging / build.PROFILE_FILE),
            "--batch-size=8",
            "--max-batch-delay-ms=10",
            f"--out={target}",
            f"--parent-version={parent}",
            f"--training-data={training_csv}",
            "--validation-metric=accuracy",
            f"--validation-score={score}",
            *(
                [f"--validation-baseline-version={parent}", f"--validation-baseline-score={baseline}"]
                if baseline is not None
                else []
            ),
            f"--owner={owner}",
        ]
    )
    if code != 0:
        return code
    card = json.loads((target / "model-card.json").read_text())
    update_manifest(manifest, version, target, card)
    print(f"{manifest.name} now asks for iris {version} ({target})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esteira.local.demo_retrain", description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True, help="The ModelDeployment file to update.")
    parser.add_argument("--out", type=Path, required=True, help="Where new builds are packaged.")
    parser.add_argument("--worse-from-run", type=int, help="From this retraining run on, train on shuffled labels.")
    parser.add_argument("--owner", default="demo-loop", help="The model card's owner.")
    args = parser.parse_args(argv)
    raw, run = os.environ.get(ENV_RETRAIN_EVIDENCE), os.environ.get(ENV_RETRAIN_RUN, "")
    if not raw or not run.isdigit():
        print(f"{ENV_RETRAIN_EVIDENCE} and {ENV_RETRAIN_RUN} are set by `esteira up` for each run", file=sys.stderr)
        return 2
    evidence = json.loads(raw)
    if not isinstance(evidence, dict) or not isinstance(evidence.get("labelledData"), str):
        print(f"{ENV_RETRAIN_EVIDENCE} has no labelledData URL", file=sys.stderr)
        return 2
    worse = args.worse_from_run is not None and int(run) >= args.worse_from_run
    return retrain(args.manifest.resolve(), args.out, evidence, int(run), worse, args.owner)


if __name__ == "__main__":
    raise SystemExit(main())

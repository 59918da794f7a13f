"""The demo models: reproducible builds, and WORSE versions that really are worse."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.prerequisites import require_module

torch = require_module("torch")
require_module("sklearn")

from esteira.drift.profile import ReferenceProfile  # noqa: E402
from esteira.rollout.distances import jensen_shannon_distance  # noqa: E402
from model_handlers.config import parse_config  # noqa: E402
from model_handlers.demo import build, datasets  # noqa: E402
from model_handlers.demo.training import predict  # noqa: E402

DATASETS: dict[str, Callable[[], datasets.Dataset]] = {"iris": datasets.iris, "digits": datasets.digits}


def load(directory: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream, still supported
        return torch.jit.load(str(directory / build.MODEL_FILE))


def held_out_predictions(directory: Path, name: str) -> tuple[Any, Any]:
    data = DATASETS[name]()
    return predict(load(directory), data.x_test), data.y_test


def frequencies(predicted: Any, classes: int) -> dict[str, float]:
    counts = torch.bincount(torch.as_tensor(predicted), minlength=classes)
    return {str(i): float(c) for i, c in enumerate(counts)}


@pytest.mark.slow
def test_build_twice_gives_identical_predictions(
    demo_models: tuple[Path, list[Any]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = demo_models
    assert build.main(["--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for variant in build.VARIANTS:
        assert f"{variant.key}" in printed and "held-out accuracy" in printed
        data = DATASETS[variant.name]()
        x = torch.from_numpy(data.x_test)
        with torch.inference_mode():
            a = load(first / variant.key)(x)
            b = load(tmp_path / variant.key)(x)
        assert torch.equal(a, b), variant.key
        for extra in build.EXTRA_FILES:
            assert (first / variant.key / extra).read_text() == (tmp_path / variant.key / extra).read_text()
    requests = sorted(p.name for p in (first / "requests").iterdir())
    assert requests == ["digits-v1.json", "digits-v2.json", "iris-v1.json", "iris-v2.json"]
    for name in requests:
        assert (first / "requests" / name).read_text() == (tmp_path / "requests" / name).read_text()
    iris = json.loads((first / "requests" / "iris-v1.json").read_text())
    assert iris["instances"] == datasets.iris().x_test[:3].tolist()


def _by_key(demo_models: tuple[Path, list[Any]]) -> dict[str, Any]:
    return {b.variant.key: b for b in demo_models[1]}


@pytest.mark.parametrize(("name", "classes"), [("iris", 3), ("digits", 10)])
def test_worse_version_is_worse(demo_models: tuple[Path, list[Any]], name: str, classes: int) -> None:
    out, _ = demo_models
    good_pred, truth = held_out_predictions(out / f"{name}-1.0.0", name)
    worse_pred, _ = held_out_predictions(out / f"{name}-1.1.0", name)
    good_acc = float((good_pred == truth).mean())
    worse_acc = float((worse_pred == truth).mean())
    assert good_acc >= 0.9
    assert good_acc - worse_acc >= 0.15, (good_acc, worse_acc)
    # Clearly above the rollout analysis' default prediction-shift limit (Jensen-Shannon distance 0.1).
    shift = jensen_shannon_distance(frequencies(good_pred, classes), frequencies(worse_pred, classes))
    assert shift >= 0.2, shift
    # The good model predicts classes about as often as they occur; the worse one does not.
    assert jensen_shannon_distance(frequencies(truth, classes), frequencies(good_pred, classes)) < 0.1


def test_reported_accuracy_matches_the_saved_model(demo_models: tuple[Path, list[Any]]) -> None:
    out, built = demo_models
    for b in built:
        predicted, truth = held_out_predictions(out / b.variant.key, b.variant.name)
        assert b.accuracy == pytest.approx(float((predicted == truth).mean()))
    summary = json.loads((out / "summary.json").read_text())
    assert [(s["name"], s["version"], s["quality"]) for s in summary] == [
        ("iris", "1.0.0", "good"),
        ("iris", "1.1.0", "worse"),
        ("digits", "1.0.0", "good"),
        ("digits", "1.1.0", "worse"),
    ]


@pytest.mark.parametrize("key", ["iris-1.0.0", "iris-1.1.0", "digits-1.0.0", "digits-1.1.0"])
def test_handler_files_follow_the_contract(demo_models: tuple[Path, list[Any]], key: str) -> None:
    out, _ = demo_models
    directory = out / key
    name, version = key.split("-")
    config = parse_config(json.loads((directory / build.HANDLER_CONFIG).read_text()))
    data = DATASETS[name]()
    assert config.kind == ("tabular" if name == "iris" else "image")
    assert list(config.labels or ()) == list(data.labels)
    assert (config.model_name, config.model_version) == (name, version)
    if name == "iris":
        assert config.feature_names == data.feature_names
        assert len(config.feature_names or ()) == data.x_test.shape[1]
    else:
        assert config.image_size == (8, 8) and config.channels == 1
    with torch.inference_mode():
        logits = load(directory)(torch.from_numpy(data.x_test[:3]))
    assert tuple(logits.shape) == (3, len(data.labels))


@pytest.mark.parametrize("key", ["iris-1.0.0", "digits-1.1.0"])
def test_reference_profile(demo_models: tuple[Path, list[Any]], key: str) -> None:
    out, built = demo_models
    profile = json.loads((out / key / build.PROFILE_FILE).read_text())
    name = key.split("-")[0]
    data = DATASETS[name]()
    rows = len(data.y_test)
    assert profile["rows"] == rows
    expected = list(data.feature_names) if name == "iris" else ["brightness", "contrast"]
    assert [f["name"] for f in profile["features"]] == expected
    assert ReferenceProfile.model_validate(profile).kind == ("tabular" if name == "iris" else "image")
    for feature in profile["features"]:
        assert sum(feature["counts"]) == rows
        assert len(feature["counts"]) == len(feature["edges"]) + 1
        assert feature["edges"] == sorted(set(feature["edges"]))
        assert feature["min"] <= feature["mean"] <= feature["max"]
    predictions = profile["predictions"]
    assert predictions["labels"] == list(data.labels)
    assert sum(predictions["counts"]) == rows
    (b,) = [b for b in built if b.variant.key == key]
    assert [round(c / rows, 6) for c in predictions["counts"]] == b.frequencies
    if name == "iris":  # the statistics are those of the held-out inputs
        assert profile["features"][0]["mean"] == pytest.approx(float(data.x_test[:, 0].mean()), abs=1e-5)

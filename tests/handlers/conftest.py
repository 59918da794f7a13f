"""Fixtures for the handler tests: tiny models, model directories for in-process handlers, and (session-wide,
started once and in parallel) the real TorchServe instances the slow tests talk to."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import model_handlers
from tests.support.torchserve import ModelArchive, TorchServe, build_mar, require_torchserve, running_torchservers

# Without the serving extra (torch, torchserve, pillow, numpy) nothing in this directory can run.
MISSING = [name for name in ("torch", "ts", "PIL", "numpy") if importlib.util.find_spec(name) is None]
if MISSING:
    collect_ignore_glob = ["test_*.py"]
else:
    from ts.context import Context, RequestProcessor
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    from tests.handlers import models

HERE = Path(__file__).resolve().parent
REVISION = "rev-7"
BATCH_DELAY_MS = 50


@dataclass(frozen=True)
class ModelDir:
    """An unpacked-archive look-alike: what TorchServe's worker would hand ``initialize``."""

    path: Path
    name: str

    @property
    def manifest(self) -> dict[str, Any]:
        return {"model": {"modelName": self.name, "modelVersion": "1.0", "serializedFile": "model.pt"}}


def make_model_dir(root: Path, name: str, model: Any, config: dict[str, Any] | None) -> ModelDir:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(model, bytes):
        (directory / "model.pt").write_bytes(model)
    else:
        models.save_torchscript(model, directory / "model.pt")
    if config is not None:
        models.write_config(directory, config)
    return ModelDir(directory, name)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelDir]:
    root = tmp_path_factory.mktemp("models")
    return {
        "tabular": make_model_dir(root, "tabular", models.tabular_classifier(), models.TABULAR_CONFIG),
        "regression": make_model_dir(root, "regression", models.regressor(), models.REGRESSION_CONFIG),
        "image": make_model_dir(root, "image", models.image_classifier(), models.IMAGE_CONFIG),
        "garbage": make_model_dir(root, "garbage", b"this is not a TorchScript archive", models.TABULAR_CONFIG),
        "bad_config": make_model_dir(
            root, "bad_config", models.tabular_classifier(), {**models.TABULAR_CONFIG, "kind": "text"}
        ),
        "no_config": make_model_dir(root, "no_config", models.tabular_classifier(), None),
        "wrong_labels": make_model_dir(
            root, "wrong_labels", models.tabular_classifier(), {**models.TABULAR_CONFIG, "labels": ["a", "b"]}
        ),
    }


ContextFactory = Callable[..., Any]  # returns a ts.context.Context


@pytest.fixture
def make_context() -> ContextFactory:
    """A real ``ts.context.Context`` as TorchServe's worker builds it, with a metrics cache from metrics.yaml."""

    def factory(model_dir: ModelDir, *, gpu_id: int | None = None, headers: list[dict[str, Any]] | None = None) -> Any:
        cache = MetricsCacheYamlImpl(config_file_path=str(model_handlers.metrics_config()))
        cache.initialize_cache()
        cache.model_name = model_dir.name
        context = Context(
            model_dir.name,
            str(model_dir.path),
            model_dir.manifest,
            8,
            gpu_id,
            "0.12.0",
            metrics=cache,
            model_yaml_config={},
        )
        if headers is not None:
            context.request_processor = [RequestProcessor(h) for h in headers]
            context.request_ids = {idx: f"req-{idx}" for idx in range(len(headers))}
            cache.set_request_ids(context.request_ids)
        return context

    return factory


def json_headers(count: int) -> list[dict[str, Any]]:
    """Request headers as TorchServe builds them for ``count`` JSON bodies."""
    return [{"body": {"content-type": "application/json"}, "Content-Type": "application/json"} for _ in range(count)]


# --- real TorchServe ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    """The session's TorchServe instances: ``main`` (native OIP mode, all models, ESTEIRA_REVISION set),
    ``kserve`` and ``kservev2`` (the stock KServe runtime's envelopes), ``broken`` (archives that cannot load)."""

    main: TorchServe
    kserve: TorchServe
    kservev2: TorchServe
    broken: TorchServe


def _archives(dirs: dict[str, ModelDir]) -> list[ModelArchive]:
    def archive(name: str, source: str, kind: str, config: dict[str, Any]) -> ModelArchive:
        directory = dirs[source].path
        extra = [directory / "esteira-model.json"] if (directory / "esteira-model.json").exists() else []
        handler = str(model_handlers.handler_file(kind))  # type: ignore[arg-type]
        return ModelArchive(name, directory / "model.pt", handler, extra, model_config=config)

    batched = {"batchSize": 8, "maxBatchDelay": BATCH_DELAY_MS, "minWorkers": 1, "maxWorkers": 1}
    single = {"batchSize": 1, "minWorkers": 1, "maxWorkers": 1}
    failing = {**single, "maxRetryTimeoutInSec": 2}
    return [
        archive("tabular", "tabular", "tabular", batched),
        archive("image", "image", "image", {**batched, "batchSize": 4}),
        archive("regression", "regression", "tabular", single),
        archive("tabular_single", "tabular", "tabular", single),
        archive("image_single", "image", "image", single),
        archive("broken_weights", "garbage", "tabular", failing),
        archive("broken_config", "bad_config", "tabular", failing),
    ]


@pytest.fixture(scope="session")
def model_store(model_dirs: dict[str, ModelDir], tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_torchserve()
    store = tmp_path_factory.mktemp("model-store")
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda archive: build_mar(archive, store), _archives(model_dirs)))
    return store


@pytest.fixture(scope="session")
def servers(model_store: Path) -> Iterator[Servers]:
    """Four TorchServe instances started together (about 20 s on 2 cores), stopped at the end of the session."""
    metrics = model_handlers.metrics_config()
    env = {"ESTEIRA_REVISION": REVISION}
    base = Path(tempfile.mkdtemp(prefix="ts-"))  # a short path: worker sockets live under it
    pool = Servers(
        main=TorchServe(
            base / "main", model_store, ["tabular", "image", "regression"], env=env, oip=True, metrics_config=metrics
        ),
        kserve=TorchServe(
            base / "kserve",
            model_store,
            ["tabular_single", "image_single", "tabular"],
            envelope="kserve",
            metrics_config=metrics,
        ),
        kservev2=TorchServe(
            base / "kservev2", model_store, ["tabular_single"], envelope="kservev2", metrics_config=metrics
        ),
        broken=TorchServe(
            base / "broken",
            model_store,
            ["broken_weights", "broken_config"],
            expect_failure=["broken_weights", "broken_config"],
            metrics_config=metrics,
        ),
    )
    try:
        with running_torchservers([pool.main, pool.kserve, pool.kservev2, pool.broken]):
            yield pool
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Recorded:
    """A metrics cache that keeps every update written to it (the interface esteira-kserve's registry offers)."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, float, tuple[str, ...]]] = []

    def write_update(self, name: str, value: float, labels: Sequence[str]) -> None:
        self.updates.append((name, value, tuple(labels)))

"""``esteira package``: turn a trained model into a directory KServe's TorchServe runtimes can serve."""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from esteira.drift.profile import PROFILE_FILE
from esteira.packaging.archive import HANDLERS, PackageInputs, PackagingError, expand_extra_files, package
from esteira.packaging.card import CARD_FILE, build_card
from esteira.packaging.config import METRICS_CONFIG_PATH, RESPONSE_TIMEOUT_SECONDS, ModelSpec, ServerSpec
from esteira.packaging.profiling import staged_profile
from esteira.vocabulary import ENV_RETRAIN_RUN


def default_metrics_config() -> Path | None:
    """Esteira's handler metrics declaration, found without importing the handlers (they need torch)."""
    spec = importlib.util.find_spec("model_handlers")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "metrics.yaml"
        if candidate.is_file():
            return candidate
    return None


def finite(text: str) -> float:
    """A score: a finite number (nan and inf were written into a card no cluster can store, with exit 0)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def at_least_one(text: str) -> int:
    """A count of workers (--max-workers 0 was taken for --workers without a word)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _retraining_run(value: str | None) -> int | None:
    """The run number a retraining Job or command was given, or None outside one (or for anything else)."""
    return int(value) if value and value.isdigit() and int(value) >= 1 else None


def _package(args: argparse.Namespace) -> int:
    staging = Path(tempfile.mkdtemp(prefix="esteira-card-"))
    try:
        model = ModelSpec(
            name=args.name,
            version=args.version,
            batch_size=args.batch_size,
            max_batch_delay_ms=args.max_batch_delay_ms,
            min_workers=args.workers,
            max_workers=args.workers if args.max_workers is None else args.max_workers,
            response_timeout_s=args.response_timeout,
            startup_timeout_s=args.startup_timeout,
            device_type=args.device,
        )
        card = build_card(
            parent_version=args.parent_version,
            training_data=args.training_data,
            training_rows=args.training_rows,
            metric=args.validation_metric,
            score=args.validation_score,
            better=args.validation_better,
            owner=args.owner,
            argv=sys.argv,
            baseline_version=args.validation_baseline_version,
            baseline_score=args.validation_baseline_score,
            retraining_run=args.retraining_run,
        )
        card_file = staging / CARD_FILE
        card_file.write_text(card.model_dump_json(by_alias=True, exclude_none=True, indent=2) + "\n")
        extra_files = expand_extra_files(args.extra_files)
        if args.profile is not None:
            extra_files += (staged_profile(args.profile, extra_files, staging),)
        metrics = None if args.no_metrics_config else (args.metrics_config or default_metrics_config())
        server = ServerSpec(metrics_config=METRICS_CONFIG_PATH if metrics else None)
        inputs = PackageInputs(
            model_file=args.model_file,
            handler=args.handler,
            model_code=args.model_code,
            extra_files=(*extra_files, card_file),
            requirements_file=args.requirements_file,
            metrics_config=metrics,
        )
        result = package(model, inputs, args.out, server)
        shutil.copyfile(card_file, args.out / CARD_FILE)  # beside config/, for people and pipelines to read
    except (ValueError, PackagingError, OSError) as exc:
        print(f"esteira package: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{result.mar}\n{result.config}")
    # Percent-encoded: a folder named with '#', '?' or '%' read back as another folder from a plain file:// URL.
    print(f"storageUri: {result.out.resolve().as_uri()}  (model name in URLs: {model.name})")
    print("model card, for spec.model.card:")
    print(yaml.safe_dump({"card": card.model_dump(by_alias=True, exclude_none=True)}, sort_keys=False), end="")
    return 0


def add_package_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``package`` on the ``esteira`` command's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "package",
        help="Package a model for TorchServe in KServe's layout (config/ and model-store/).",
        description="Build OUT/config/config.properties and OUT/model-store/NAME.mar with torch-model-archiver. "
        "OUT can then be uploaded and used as the model's storageUri.",
    )
    parser.add_argument("--name", required=True, help="Model name (the name in inference URLs).")
    parser.add_argument("--version", required=True, help="Model version, e.g. 1.0.0.")
    parser.add_argument(
        "--model-file", required=True, type=Path, help="TorchScript file, or a state dict with --model-code."
    )
    parser.add_argument(
        "--handler",
        required=True,
        help=f"Esteira handler ({', '.join(sorted(HANDLERS))}), an installed package.module:Class, "
        "or a handler .py file to put in the archive.",
    )
    parser.add_argument("--model-code", type=Path, help="Python file defining the eager model class.")
    parser.add_argument(
        "--extra-files",
        nargs="+",
        default=[],
        metavar="FILE",
        help="Files (or folders, whose files are added) to put beside the model, e.g. esteira-model.json.",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help=f"Reference profile (from esteira profile), checked and put beside the model as {PROFILE_FILE}: "
        "the model server counts drift and data quality against it.",
    )
    parser.add_argument("--requirements-file", type=Path, help="requirements.txt kept in the archive.")
    parser.add_argument("--batch-size", type=int, default=1, help="Server-side batch size. Default: 1.")
    parser.add_argument(
        "--max-batch-delay-ms", type=int, default=10, help="How long to wait to fill a batch. Default: 10."
    )
    parser.add_argument("--workers", type=at_least_one, default=1, help="Worker processes (minWorkers). Default: 1.")
    parser.add_argument("--max-workers", type=at_least_one, help="maxWorkers. Default: --workers.")
    parser.add_argument(
        "--response-timeout",
        type=int,
        default=RESPONSE_TIMEOUT_SECONDS,
        help="Seconds a batch may take; past it the model server restarts. Default: %(default)s.",
    )
    parser.add_argument("--startup-timeout", type=int, default=120, help="Seconds to load. Default: 120.")
    parser.add_argument("--device", choices=["cpu", "gpu"], help="deviceType. Default: GPU when one is visible.")
    metrics = parser.add_mutually_exclusive_group()
    metrics.add_argument(
        "--metrics-config",
        type=Path,
        help="TorchServe metrics YAML. Default: model_handlers/metrics.yaml if installed.",
    )
    metrics.add_argument("--no-metrics-config", action="store_true", help="Use TorchServe's default metrics.")
    parser.add_argument("--out", required=True, type=Path, help="Output directory (the future storageUri).")
    card = parser.add_argument_group("model card", f"written into the archive as {CARD_FILE} and printed")
    card.add_argument("--parent-version", help="The version this build was trained from.")
    card.add_argument("--training-data", type=Path, help="The training data (file or folder), fingerprinted.")
    card.add_argument("--training-rows", type=int, help="Rows trained on. Default: counted for a CSV file.")
    card.add_argument("--validation-metric", help="e.g. accuracy, f1, mae.")
    card.add_argument("--validation-score", type=finite, help="The score on held-out data.")
    card.add_argument("--validation-better", choices=["higher", "lower"], default="higher", help="Default: higher.")
    card.add_argument(
        "--validation-baseline-version",
        help="The stable version also scored on these held-out rows; the retraining gate then compares like with like.",
    )
    card.add_argument("--validation-baseline-score", type=finite, help="That version's score on the same rows.")
    card.add_argument("--owner", help="Who answers for this model.")
    card.add_argument(
        "--retraining-run",
        type=int,
        default=_retraining_run(os.environ.get(ENV_RETRAIN_RUN)),
        help=f"The retraining run that built it. Default: {ENV_RETRAIN_RUN}, which a run's Job or command has.",
    )
    parser.set_defaults(func=_package)
    return parser

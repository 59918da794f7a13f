"""``esteira package``: turn a trained model into a directory KServe's TorchServe runtimes can serve."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from esteira.packaging.archive import HANDLERS, PackageInputs, PackagingError, expand_extra_files, package
from esteira.packaging.config import METRICS_CONFIG_PATH, ModelSpec, ServerSpec


def default_metrics_config() -> Path | None:
    """Esteira's handler metrics declaration, found without importing the handlers (they need torch)."""
    spec = importlib.util.find_spec("model_handlers")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "metrics.yaml"
        if candidate.is_file():
            return candidate
    return None


def _package(args: argparse.Namespace) -> int:
    try:
        model = ModelSpec(
            name=args.name,
            version=args.version,
            batch_size=args.batch_size,
            max_batch_delay_ms=args.max_batch_delay_ms,
            min_workers=args.workers,
            max_workers=args.max_workers or args.workers,
            response_timeout_s=args.response_timeout,
            startup_timeout_s=args.startup_timeout,
            device_type=args.device,
        )
        metrics = None if args.no_metrics_config else (args.metrics_config or default_metrics_config())
        server = ServerSpec(metrics_config=METRICS_CONFIG_PATH if metrics else None)
        inputs = PackageInputs(
            model_file=args.model_file,
            handler=args.handler,
            model_code=args.model_code,
            extra_files=expand_extra_files(args.extra_files),
            requirements_file=args.requirements_file,
            metrics_config=metrics,
        )
        result = package(model, inputs, args.out, server)
    except (ValueError, PackagingError, OSError) as exc:
        print(f"esteira package: {exc}", file=sys.stderr)
        return 2
    print(f"{result.mar}\n{result.config}")
    print(f"storageUri: file://{result.out.resolve()}  (model name in URLs: {model.name})")
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
    parser.add_argument("--requirements-file", type=Path, help="requirements.txt kept in the archive.")
    parser.add_argument("--batch-size", type=int, default=1, help="Server-side batch size. Default: 1.")
    parser.add_argument(
        "--max-batch-delay-ms", type=int, default=10, help="How long to wait to fill a batch. Default: 10."
    )
    parser.add_argument("--workers", type=int, default=1, help="Worker processes (minWorkers). Default: 1.")
    parser.add_argument("--max-workers", type=int, help="maxWorkers. Default: --workers.")
    parser.add_argument("--response-timeout", type=int, default=120, help="Seconds per batch. Default: 120.")
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
    parser.set_defaults(func=_package)
    return parser

"""Readiness of Esteira's model server: every model in the snapshot has its workers up.

TorchServe's ``/ping`` stays healthy when a model never registered, and Open Inference Protocol's
``/v2/health/ready`` always answers ready, so neither says whether predictions can be served. This asks the
management API (loopback only) to describe each model and counts workers in state READY. Used by the image's
HEALTHCHECK and the ServingRuntime's readiness probe. Standard library only: it runs every few seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esteira.packaging.config import parse_properties
from esteira.packaging.entrypoint import DEFAULT_RUNTIME_DIR, ENV_RUNTIME_DIR, RUNTIME_CONFIG

DEFAULT_MANAGEMENT_ADDRESS = "http://127.0.0.1:8081"


@dataclass(frozen=True)
class Target:
    """A model to check and the workers it needs."""

    name: str
    min_workers: int


def targets(properties: Mapping[str, str]) -> list[Target]:
    """The models of ``model_snapshot`` with their minimum worker count (at least one)."""
    snapshot = json.loads(properties.get("model_snapshot") or "{}")
    out = []
    for name, versions in (snapshot.get("models") or {}).items():
        wanted = [int(entry.get("minWorkers", 1)) for entry in versions.values()]
        out.append(Target(name, max([1, *wanted])))
    return out


def management_address(properties: Mapping[str, str], env: Mapping[str, str]) -> str:
    """The address TorchServe uses: ``TS_MANAGEMENT_ADDRESS`` wins when environment overrides are on."""
    address = properties.get("management_address", DEFAULT_MANAGEMENT_ADDRESS)
    if properties.get("enable_envvars_config", "false").lower() == "true":
        address = env.get("TS_MANAGEMENT_ADDRESS") or address
    return address.rstrip("/").replace("://0.0.0.0:", "://127.0.0.1:")


def ready_workers(description: Any) -> int:
    """READY workers in a describe-model answer (a list with one entry per version)."""
    versions = description if isinstance(description, list) else [description]
    return sum(
        1
        for version in versions
        if isinstance(version, dict)
        for worker in version.get("workers") or []
        if isinstance(worker, dict) and worker.get("status") == "READY"
    )


def check(properties: Mapping[str, str], env: Mapping[str, str], timeout: float = 2.0) -> list[str]:
    """Problems that make the server unready; empty when it is ready."""
    wanted = targets(properties)
    if not wanted:
        return ["model_snapshot lists no models"]
    base = management_address(properties, env)
    problems = []
    for target in wanted:
        url = f"{base}/models/{urllib.parse.quote(target.name, safe='')}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                description = json.load(response)
        except (OSError, ValueError) as exc:
            problems.append(f"{target.name}: {url}: {exc}")
            continue
        ready = ready_workers(description)
        if ready < target.min_workers:
            problems.append(f"{target.name}: {ready} of {target.min_workers} workers ready")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esteira.packaging.healthcheck", description=__doc__)
    default = Path(os.environ.get(ENV_RUNTIME_DIR, DEFAULT_RUNTIME_DIR)) / RUNTIME_CONFIG
    parser.add_argument("--config", type=Path, default=default, help=f"Runtime config.properties. Default: {default}.")
    parser.add_argument("--timeout", type=float, default=2.0, help="Seconds per request. Default: 2.")
    args = parser.parse_args(argv)
    try:
        properties = parse_properties(args.config.read_text())
        problems = check(properties, os.environ, args.timeout)
    except (OSError, ValueError) as exc:
        problems = [f"{args.config}: {exc}"]
    for problem in problems:
        print(f"not ready: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

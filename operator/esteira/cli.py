"""The `esteira` command: render manifests, print the CRD, package models, run a ModelDeployment locally."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from esteira.api.crd import build_crd
from esteira.api.errors import InvalidSpec
from esteira.local.cli import add_local_commands, run_quietly_into_a_pipe
from esteira.manifests import dump_documents, load_documents, render_document
from esteira.packaging.cli import add_package_command
from esteira.packaging.profiling import add_profile_command
from esteira.vocabulary import DEFAULT_INGRESS_DOMAIN


def _render(args: argparse.Namespace) -> int:
    rendered = []
    for path in args.files:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
        except OSError as exc:
            print(f"{path}: cannot read the file: {exc.strerror or exc}", file=sys.stderr)
            return 2
        try:
            for doc in load_documents(text):
                rendered += render_document(
                    doc,
                    prometheus_url=args.prometheus_url,
                    ingress_domain=args.ingress_domain,
                    collector_url=args.collector_url,
                    canary_weight=args.canary_weight,
                    stable=(args.stable_version, args.stable_storage_uri or doc_uri(doc))
                    if args.stable_version
                    else None,
                )
        except InvalidSpec as exc:
            for problem in exc.problems:
                print(f"{path}: {problem}", file=sys.stderr)
            return 2
        except Exception as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 2
    if args.output == "json":
        print(json.dumps(rendered if len(rendered) != 1 else rendered[0], indent=2))
    else:
        sys.stdout.write(dump_documents(rendered))
    return 0


def _percent(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value} is not a percentage between 0 and 100")
    return value


def doc_uri(doc: dict[str, Any]) -> str:
    """The document's storageUri, for a stable arm that differs only in version."""
    return str(((doc.get("spec") or {}).get("model") or {}).get("storageUri") or "")


def _crd(_: argparse.Namespace) -> int:
    sys.stdout.write(dump_documents([build_crd()]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esteira", description="Run PyTorch models on Kubernetes.")
    commands = parser.add_subparsers(dest="command", required=True)

    render = commands.add_parser("render", help="Render ModelDeployment files to the manifests the operator applies.")
    render.add_argument("files", nargs="+", help="ModelDeployment YAML files ('-' for standard input)")
    render.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    render.add_argument("--prometheus-url", help="Prometheus URL used where the spec names none (gpu-utilization).")
    render.add_argument(
        "--collector-url",
        help="The operator's collector (ESTEIRA_COLLECTOR_URL): where logger Esteira sends records when the spec "
        "names no logging.url.",
    )
    render.add_argument(
        "--ingress-domain",
        default=DEFAULT_INGRESS_DOMAIN,
        help="The operator's --ingress-domain: the domain of the GatewayAPI router's host where the spec names none.",
    )
    render.add_argument(
        "--canary-weight",
        type=_percent,
        help="Show a rollout at this canary weight (0-100): the file's model is the canary (revision 2); 0 with "
        "rollout.mirror shows it getting copies of stable's requests.",
    )
    render.add_argument("--stable-version", help="With --canary-weight: the stable revision's model version.")
    render.add_argument(
        "--stable-storage-uri", help="With --canary-weight: the stable revision's storageUri (default: the file's)."
    )
    render.set_defaults(func=_render)

    crd = commands.add_parser("crd", help="Print the ModelDeployment CustomResourceDefinition.")
    crd.set_defaults(func=_crd)
    add_package_command(commands)
    add_profile_command(commands)
    add_local_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_quietly_into_a_pipe(args)


if __name__ == "__main__":
    raise SystemExit(main())

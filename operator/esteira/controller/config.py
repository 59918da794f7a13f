"""Operator-wide settings, from command-line flags with environment-variable fallbacks."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from esteira.api.spec import DNS_SUBDOMAIN_PATTERN
from esteira.controller.observed import FULL_READ_SECONDS
from esteira.vocabulary import DEFAULT_INGRESS_DOMAIN

# API calls in flight at once. Each reconcile makes a few calls that mostly wait on the API server, so the
# pool, not the CPU, paced the operator: with asyncio's default pool (cores + 4 threads) an operator of 1,000
# ModelDeployments on 2 cores queued its resyncs (reconcile p50 1.7 s at rest) and a new one waited seconds.
DEFAULT_API_CONCURRENCY = 32


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...]
    all_namespaces: bool
    prometheus_url: str | None
    prometheus_auth_dir: Path | None
    ingress_domain: str
    metrics_port: int
    liveness_port: int
    resync_seconds: float
    rollout_tick_seconds: float
    full_read_seconds: float
    api_concurrency: int
    kubeconfig: str | None
    log_format: str
    verbose: bool


def parse_args(argv: Sequence[str] | None = None) -> OperatorConfig:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="esteira-operator", description="Esteira's ModelDeployment operator.")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[ns for ns in env("ESTEIRA_NAMESPACES", "").split(",") if ns],
        help="Namespace to watch; repeat for several (env ESTEIRA_NAMESPACES, comma-separated).",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="Watch every namespace.")
    parser.add_argument("--prometheus-url", default=env("ESTEIRA_PROMETHEUS_URL"), help="Default Prometheus URL.")
    parser.add_argument(
        "--prometheus-auth-dir",
        type=Path,
        default=env("ESTEIRA_PROMETHEUS_AUTH_DIR"),
        help="A mounted Secret with the default Prometheus' credentials: files token, or username and password, "
        "and optionally ca.crt. Sent only to --prometheus-url.",
    )
    parser.add_argument(
        "--ingress-domain",
        default=env("ESTEIRA_INGRESS_DOMAIN", DEFAULT_INGRESS_DOMAIN),
        help="The domain of the hosts the GatewayAPI router names, <name>-<namespace>.<domain>, where a "
        "ModelDeployment names none: KServe's ingress domain (env ESTEIRA_INGRESS_DOMAIN).",
    )
    parser.add_argument("--metrics-port", type=int, default=int(env("ESTEIRA_METRICS_PORT", "8080")))
    parser.add_argument("--liveness-port", type=int, default=int(env("ESTEIRA_LIVENESS_PORT", "8081")))
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=float(env("ESTEIRA_RESYNC_SECONDS", "60")),
        help="Full reconcile of every ModelDeployment at this interval, besides watch events.",
    )
    parser.add_argument(
        "--rollout-tick-seconds",
        type=float,
        default=float(env("ESTEIRA_ROLLOUT_TICK_SECONDS", "5")),
        help="How often active rollouts are looked at (analyses still run once per rollout.interval).",
    )
    parser.add_argument(
        "--full-read-seconds",
        type=float,
        default=float(env("ESTEIRA_FULL_READ_SECONDS", str(FULL_READ_SECONDS))),
        help="A resync or rollout tick plans from what the watches delivered, and reads a ModelDeployment and its "
        "children from the API server only to act, or when they were last read between half this long and this long "
        "ago (drawn at random for each read; 0: every time).",
    )
    parser.add_argument(
        "--api-concurrency",
        type=int,
        default=int(env("ESTEIRA_API_CONCURRENCY", str(DEFAULT_API_CONCURRENCY))),
        help="Kubernetes API calls in flight at once.",
    )
    parser.add_argument("--kubeconfig", default=None, help="Kubeconfig file (default: in-cluster, then $KUBECONFIG).")
    parser.add_argument("--log-format", choices=["json", "plain"], default=env("ESTEIRA_LOG_FORMAT", "json"))
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if not args.namespace and not args.all_namespaces:
        parser.error("name the namespaces to watch with --namespace, or use --all-namespaces")
    if args.api_concurrency < 1:
        parser.error(f"--api-concurrency must be at least 1, got {args.api_concurrency}")
    if not re.fullmatch(DNS_SUBDOMAIN_PATTERN, args.ingress_domain) or len(args.ingress_domain) > 253:
        parser.error(f"--ingress-domain must be a DNS name such as example.com, got {args.ingress_domain!r}")
    if args.full_read_seconds < 0:
        parser.error(f"--full-read-seconds must be 0 or more, got {args.full_read_seconds}")
    return OperatorConfig(
        namespaces=tuple(args.namespace),
        all_namespaces=args.all_namespaces,
        prometheus_url=args.prometheus_url,
        prometheus_auth_dir=Path(args.prometheus_auth_dir) if args.prometheus_auth_dir else None,
        ingress_domain=args.ingress_domain,
        metrics_port=args.metrics_port,
        liveness_port=args.liveness_port,
        resync_seconds=args.resync_seconds,
        rollout_tick_seconds=args.rollout_tick_seconds,
        full_read_seconds=args.full_read_seconds,
        api_concurrency=args.api_concurrency,
        kubeconfig=args.kubeconfig,
        log_format=args.log_format,
        verbose=args.verbose,
    )

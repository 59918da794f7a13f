"""`python -m esteira.controller`: run the operator."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from esteira.controller.config import OperatorConfig, parse_args
from esteira.controller.handlers import register
from esteira.controller.kube import KubeAPI, load_client_config
from esteira.controller.reconciler import Reconciler
from esteira.controller.wakes import Wakes
from esteira.packaging.heap import freeze_startup_heap


def run(config: OperatorConfig) -> None:
    kopf.configure(
        verbose=config.verbose,
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    load_client_config(config.kubeconfig)
    registry = kopf.OperatorRegistry()
    register(registry, config.resync_seconds, config.kubeconfig, config.rollout_tick_seconds)
    if config.metrics_port:
        start_http_server(config.metrics_port)
    reconciler = Reconciler(
        KubeAPI(concurrency=config.api_concurrency),
        config.prometheus_url,
        config.prometheus_auth_dir,
        config.full_read_seconds,
        config.ingress_domain,
    )
    wakes = Wakes(config.resync_seconds, config.rollout_tick_seconds)
    memo = kopf.Memo(reconciler=reconciler, managed=set(), background=set(), waiting=set(), wakes=wakes)
    liveness = f"http://0.0.0.0:{config.liveness_port}/healthz" if config.liveness_port else None
    logging.getLogger(__name__).info("watching %s", "all namespaces" if config.all_namespaces else config.namespaces)
    freeze_startup_heap()  # the modules loaded so far (kopf, the Kubernetes client) are walked by no full collection
    asyncio.run(
        kopf.operator(
            registry=registry,
            memo=memo,
            standalone=True,
            clusterwide=config.all_namespaces,
            namespaces=list(config.namespaces),
            liveness_endpoint=liveness,
        )
    )


def main(argv: Sequence[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()

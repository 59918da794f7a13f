"""A real Prometheus server (Debian's `prometheus`) on loopback, scraping given targets every second, or
serving samples written beforehand at chosen timestamps (`with_samples`)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.net import free_port
from tests.support.prerequisites import require_tool


def prometheus_binary() -> str:
    return require_tool("prometheus")


def with_samples(workdir: Path, openmetrics: str) -> PrometheusServer:
    """A started Prometheus holding exactly these OpenMetrics samples (with their timestamps), loaded as TSDB
    blocks by `promtool tsdb create-blocks-from openmetrics`; it scrapes nothing."""
    source = workdir / "series.om"
    source.write_text(openmetrics)
    done = subprocess.run(
        [require_tool("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(source), str(workdir / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"promtool could not load the samples: {done.stdout}{done.stderr}")
    return PrometheusServer(workdir, targets=[]).start()


class PrometheusServer:
    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        scrape_interval: str = "1s",
        labels: dict[str, str] | None = None,
        discovery: str | None = None,
    ) -> None:
        """`labels` go on every scraped series, as a pod scrape adds the pod's `namespace`; `discovery`, a URL
        that lists more targets in Prometheus' HTTP service discovery format, read every second."""
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        static: dict[str, Any] = {"targets": targets} | ({"labels": labels} if labels else {})
        # honor_labels keeps the exporter's own `namespace` label, as a pod scrape would set it.
        job: dict[str, Any] = {"job_name": "models", "honor_labels": True, "static_configs": [static]}
        if discovery is not None:
            job["http_sd_configs"] = [{"url": discovery, "refresh_interval": "1s"}]
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [job],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        log = (self.workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"Prometheus not ready after {timeout}s")

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The result of an instant query (now, or at `at` seconds since the epoch): one entry per series, with
        `value` or (range selectors) `values`."""
        parameters = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(parameters)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.loads(response.read())
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

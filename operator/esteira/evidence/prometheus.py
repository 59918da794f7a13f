"""Evidence from a Prometheus server's HTTP API, with timeouts, retries and errors that say what failed.

Errors end up in status, Events and logs, so they never carry credentials: a URL's userinfo is shown as
`***`, and any token or password is scrubbed from what the HTTP library reports.
"""

from __future__ import annotations

import asyncio
import base64
import math
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from esteira.api.spec import ModelDeploymentSpec
from esteira.evidence.drift import drift_window
from esteira.rollout.evidence import ArmSample, Evidence, MetricsUnavailable
from esteira.rollout.queries import ArmQueries, MetricNames, Scope, arm_queries, render_custom
from esteira.vocabulary import (
    PROMETHEUS_CA_KEY,
    PROMETHEUS_PASSWORD_KEY,
    PROMETHEUS_TOKEN_KEY,
    PROMETHEUS_USERNAME_KEY,
)

REDACTED = "***"


def redact_url(url: str) -> str:
    """The URL with any userinfo replaced by `***`, fit for status, Events and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return REDACTED
    if "@" not in parts.netloc or host is None:
        return url
    netloc = f"{REDACTED}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class PrometheusAuth:
    """How to authenticate to Prometheus: a bearer token or basic auth, and a CA for its TLS certificate."""

    token: str | None = None
    username: str | None = None
    password: str | None = None
    ca_pem: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, str]) -> PrometheusAuth:
        """From a Secret's decoded data (or files of the same names); empty values count as absent."""

        def value(key: str) -> str | None:
            text = (data.get(key) or "").strip()
            return text or None

        auth = cls(
            token=value(PROMETHEUS_TOKEN_KEY),
            username=value(PROMETHEUS_USERNAME_KEY),
            password=value(PROMETHEUS_PASSWORD_KEY),
            ca_pem=value(PROMETHEUS_CA_KEY),
        )
        if auth.token and auth.username:
            raise ValueError(f"set either {PROMETHEUS_TOKEN_KEY!r} or {PROMETHEUS_USERNAME_KEY!r}, not both")
        if bool(auth.username) != bool(auth.password):
            raise ValueError(f"basic auth needs both {PROMETHEUS_USERNAME_KEY!r} and {PROMETHEUS_PASSWORD_KEY!r}")
        try:  # read now: an unreadable CA raised from every query's session, out of the analysis' error handling
            auth.ssl_context()
        except (ssl.SSLError, ValueError) as exc:
            raise ValueError(f"{PROMETHEUS_CA_KEY!r} is not a PEM CA certificate ({exc})") from None
        return auth

    @classmethod
    def from_directory(cls, directory: Path) -> PrometheusAuth:
        """From a mounted Secret: one file per key; read at each use, so a rotated Secret takes effect."""
        keys = (PROMETHEUS_TOKEN_KEY, PROMETHEUS_USERNAME_KEY, PROMETHEUS_PASSWORD_KEY, PROMETHEUS_CA_KEY)
        return cls.from_mapping({key: (directory / key).read_text() for key in keys if (directory / key).is_file()})

    def headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.username is not None:
            pair = f"{self.username}:{self.password or ''}".encode()
            return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
        return {}

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cadata=self.ca_pem) if self.ca_pem else None

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.password) if s]


class PrometheusClient:
    """Instant queries against `/api/v1/query`.

    Credentials in the URL become basic auth (unless `auth` brings its own) and are taken out of the URL
    the HTTP library sees, so none of its errors can repeat them.
    """

    def __init__(self, url: str, timeout: float = 10.0, attempts: int = 3, auth: PrometheusAuth | None = None) -> None:
        auth = auth or PrometheusAuth()
        parts = urlsplit(url.rstrip("/"))
        credentialed = "@" in parts.netloc
        if credentialed:
            if not auth.headers():
                user, password = unquote(parts.username or ""), unquote(parts.password or "")
                auth = PrometheusAuth(username=user, password=password, ca_pem=auth.ca_pem)
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        self.url = urlunsplit(parts)
        self.shown_url = redact_url(url.rstrip("/"))
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.attempts = attempts
        self.auth = auth
        # The URL is a secret only where it holds credentials: scrubbed whole, every error read "Prometheus at ***".
        self._secrets = [s for s in (*auth.secrets(), url if credentialed else "") if s]

    def scrub(self, text: str) -> str:
        """`text` without the URL's credentials or any token or password."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def session(self) -> aiohttp.ClientSession:
        """A session that sends the credentials and trusts the CA, if any."""
        return aiohttp.ClientSession(
            headers=self.auth.headers(), connector=aiohttp.TCPConnector(ssl=self.auth.ssl_context() or True)
        )

    async def query(self, session: aiohttp.ClientSession, promql: str) -> list[dict[str, Any]]:
        last = ""
        for attempt in range(self.attempts):
            try:
                async with session.get(
                    f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout
                ) as response:
                    try:
                        body = await response.json(content_type=None)
                    except ValueError:
                        body = None  # a proxy's error page, say: the status says enough
                    if response.status == 200 and isinstance(body, dict) and body.get("status") == "success":
                        result = instant_vector(body.get("data"))
                        if result is None:  # a scalar, a range of values: asking again will not change it
                            kind = (
                                body.get("data", {}).get("resultType") if isinstance(body.get("data"), dict) else None
                            )
                            last = f"the answer is {kind or 'malformed'}, not an instant vector"
                            break
                        return result
                    detail = body.get("error", body) if isinstance(body, dict) else "the answer is not JSON"
                    last = f"HTTP {response.status}: {detail}"
                    if response.status == 400:
                        break  # a bad query will not get better
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2 * 2**attempt * random.uniform(0.5, 1.0))
        raise MetricsUnavailable(self.scrub(f"Prometheus at {self.shown_url}: {last} (query: {promql})"))

    async def scalar(self, session: aiohttp.ClientSession, promql: str) -> float | None:
        """The query's one value (None: no series, or NaN); MetricsUnavailable where it answers several series,
        which a check cannot judge by one of them."""
        result = await self.query(session, promql)
        if not result:
            return None
        if len(result) > 1:
            message = f"{len(result)} series where one was expected: aggregate them in the query (max, sum)"
            raise MetricsUnavailable(self.scrub(f"Prometheus at {self.shown_url}: {message} (query: {promql})"))
        value = float(result[0]["value"][1])
        return value if math.isfinite(value) else None  # x/0 answers ±Inf, which passed any bound on its side

    async def by_label(self, session: aiohttp.ClientSession, promql: str, label: str) -> dict[str, float]:
        result = await self.query(session, promql)
        out = {}
        for series in result:
            value = float(series["value"][1])
            if not math.isnan(value):
                out[series["metric"].get(label, "")] = value
        return out


def instant_vector(data: Any) -> list[dict[str, Any]] | None:
    """The series of an instant vector (``resultType`` vector: each its labels and one numeric sample); None for
    any other answer. A query that answered a scalar or a range of values raised out of the analysis and stopped
    every reconcile of its ModelDeployment, commands included."""
    if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        return None
    for series in data["result"]:
        value = series.get("value") if isinstance(series, dict) else None
        if not isinstance(value, list) or len(value) != 2 or not isinstance(series.get("metric", {}), dict):
            return None
        try:
            float(value[1])
        except (TypeError, ValueError):
            return None
    result: list[dict[str, Any]] = data["result"]
    return result


class PrometheusProvider:
    """Gathers both arms' samples and the custom checks for one analysis."""

    def __init__(self, client: PrometheusClient, names: MetricNames | None = None) -> None:
        self.client = client
        self.names = names or MetricNames()

    async def _arm(self, session: aiohttp.ClientSession, queries: ArmQueries) -> ArmSample:
        requests, errors, p95, classes, drift = await asyncio.gather(
            self.client.scalar(session, queries.requests),
            self.client.scalar(session, queries.errors),
            self.client.scalar(session, queries.latency_p95),
            self.client.by_label(session, queries.class_counts, self.names.class_label),
            drift_window(self.client, session, queries.drift, self.names),
        )
        return ArmSample(
            requests=requests or 0.0,
            errors=errors or 0.0,
            latency_p95=p95,
            class_counts=classes,
            drift=drift,
        )

    async def collect(
        self, namespace: str, name: str, spec: ModelDeploymentSpec, stable_revision: int, canary_revision: int
    ) -> Evidence:
        """Every query of the analysis at once: its time is the slowest query's, not their sum."""
        interval = spec.rollout.interval
        scope = Scope(namespace, name, spec.model.name)
        checks = spec.rollout.analysis.custom
        async with self.client.session() as session:
            arms = asyncio.gather(
                self._arm(session, arm_queries(self.names, scope, canary_revision, interval)),
                self._arm(session, arm_queries(self.names, scope, stable_revision, interval)),
            )
            values = asyncio.gather(
                *(
                    self.client.scalar(session, render_custom(check.query, namespace, name, canary_revision, interval))
                    for check in checks
                )
            )
            (canary, stable), custom = await asyncio.gather(arms, values)
        return Evidence(canary=canary, stable=stable, custom={c.name: v for c, v in zip(checks, custom, strict=True)})

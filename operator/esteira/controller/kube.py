"""The Kubernetes API as the operator uses it: ModelDeployments and InferenceServices, nothing more.

Calls go through the official client in worker threads; every error becomes an `ApiError` with its HTTP
status so callers can retry the transient ones.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from esteira import API_GROUP, API_VERSION, PLURAL, __version__
from esteira.api.command import COMMAND_PLURAL
from esteira.api.errors import api_server_message
from esteira.controller import telemetry
from esteira.controller.config import DEFAULT_API_CONCURRENCY
from esteira.controller.retry import ApiError, NameTaken
from esteira.routing import ObjectKey, child_kinds
from esteira.routing.kserve import INFERENCE_SERVICES
from esteira.vocabulary import LABEL_DEPLOYMENT, LABEL_RETRAIN_RUN

KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL = (
    INFERENCE_SERVICES.group,
    INFERENCE_SERVICES.version,
    INFERENCE_SERVICES.plural,
)
# (apiVersion, kind) of each kind a router manages -> (group, version, plural)
CHILD_RESOURCES: dict[tuple[str, str], tuple[str, str, str]] = {
    (kind.api_version, kind.kind): (kind.group, kind.version, kind.plural) for kind in child_kinds()
}
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read (seconds)
# A child kind whose CRD is not installed (no Gateway API, say) is not listed again for this long, so a resync
# without it costs one read less per ModelDeployment; creating one of that kind ends the wait at once.
MISSING_KIND_SECONDS = 300.0


def load_client_config(kubeconfig: str | None = None) -> None:
    """In-cluster service account when running in a pod, else the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    if kubeconfig is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return
        except config.ConfigException:
            pass
    config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]


def connection_info(kubeconfig: str | None = None) -> kopf.ConnectionInfo:
    """Kopf's credentials from the same source as the client's, so `--kubeconfig` applies to both.

    Loaded afresh on every call: Kopf logs in again when a token expires.
    """
    load_client_config(kubeconfig)
    cfg = client.Configuration.get_default_copy()
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        username=cfg.username or None,
        password=cfg.password or None,
        scheme=scheme or None,
        token=token or None,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
    )


def _verb(fn: Callable[..., object]) -> str:
    """The API verb of a client method, from its name (``list_namespaced_custom_object``: list; ``read_...``:
    get)."""
    first = getattr(fn, "__name__", "").split("_", 1)[0]
    return "get" if first == "read" else first


class KubeAPI:
    """Async facade over the custom-objects API for the resources Esteira reads and writes, and the one
    Secret a ModelDeployment may name for Prometheus credentials. The blocking client runs in its own pool of
    ``concurrency`` threads, with as many pooled connections."""

    def __init__(self, api_client: Any | None = None, concurrency: int = DEFAULT_API_CONCURRENCY) -> None:
        if api_client is None:
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = concurrency
            api_client = client.ApiClient(configuration)
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="esteira-api")
        api_client.user_agent = f"esteira-operator/{__version__}"
        self._api = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._batch = client.BatchV1Api(api_client)
        self._missing_since: dict[str, float] = {}  # plural -> when its list answered 404 (a CRD is cluster-wide)

    async def _call(self, fn: Callable[..., object], *args: Any, **kwargs: Any) -> dict[str, Any]:
        telemetry.API_CALLS.labels(_verb(fn)).inc()
        try:
            call = functools.partial(fn, *args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
            return cast(dict[str, Any], await asyncio.get_running_loop().run_in_executor(self._executor, call))
        except ApiException as exc:
            raise ApiError(int(exc.status or 0), api_server_message(exc.body, exc.reason or exc)) from None
        except (HTTPError, OSError) as exc:
            raise ApiError(0, f"{type(exc).__name__}: {exc}") from None

    async def get_model_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call(
                self._api.get_namespaced_custom_object, API_GROUP, API_VERSION, namespace, PLURAL, name
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def read_secret(self, namespace: str, name: str) -> tuple[dict[str, str], dict[str, str]]:
        """(labels, decoded data) of one Secret; a `get`, never a list, so no other Secret is ever seen."""

        def read(**options: Any) -> Any:
            found = self._core.read_namespaced_secret(name, namespace, **options)
            return self._core.api_client.sanitize_for_serialization(found)

        secret = await self._call(read)
        labels = (secret.get("metadata") or {}).get("labels") or {}
        data: dict[str, str] = {}
        for key, value in (secret.get("data") or {}).items():
            try:
                data[key] = base64.b64decode(value).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise ApiError(422, f"Secret {name}: key {key!r} is not base64-encoded UTF-8 text") from None
        return labels, data

    async def list_rollout_commands(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's RolloutCommands; none when their CRD is not installed."""
        try:
            listing = await self._call(
                self._api.list_namespaced_custom_object, API_GROUP, API_VERSION, namespace, COMMAND_PLURAL
            )
        except ApiError as exc:
            if exc.status == 404:
                return []
            raise
        return list(listing.get("items") or [])

    async def patch_rollout_command_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        await self._call(
            self._api.patch_namespaced_custom_object_status,
            API_GROUP,
            API_VERSION,
            namespace,
            COMMAND_PLURAL,
            name,
            {"status": status},
        )

    async def patch_model_deployment_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            self._api.patch_namespaced_custom_object_status,
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
        )

    async def list_children(self, namespace: str, owner: str) -> dict[ObjectKey, dict[str, Any]]:
        """The objects Esteira manages for one ModelDeployment, found by its label.

        A kind whose CRD is not installed (no Gateway API, say) simply has no objects.
        """
        selector = f"{LABEL_DEPLOYMENT}={owner}"
        found: dict[ObjectKey, dict[str, Any]] = {}
        for (api_version, kind), (group, version, plural) in CHILD_RESOURCES.items():
            missing_since = self._missing_since.get(plural)
            if missing_since is not None and time.monotonic() - missing_since < MISSING_KIND_SECONDS:
                continue
            try:
                listing = await self._call(
                    self._api.list_namespaced_custom_object, group, version, namespace, plural, label_selector=selector
                )
            except ApiError as exc:
                if exc.status == 404:
                    self._missing_since[plural] = time.monotonic()
                    continue
                raise
            self._missing_since.pop(plural, None)
            for item in listing.get("items") or []:
                labels = (item.get("metadata") or {}).get("labels") or {}
                if labels.get(LABEL_DEPLOYMENT) == owner:  # some API servers ignore selectors
                    item.setdefault("apiVersion", api_version)
                    item.setdefault("kind", kind)
                    found[(api_version, kind, item["metadata"]["name"])] = item
        return found

    async def list_retrain_jobs(self, namespace: str, owner: str) -> dict[str, dict[str, Any]]:
        """The retraining Jobs of one ModelDeployment, by name, as plain dicts."""
        selector = f"{LABEL_DEPLOYMENT}={owner},{LABEL_RETRAIN_RUN}"

        def list_jobs(**options: Any) -> dict[str, Any]:
            raw: Any = self._batch.list_namespaced_job(
                namespace, label_selector=selector, _preload_content=False, **options
            )  # unparsed (the typed models drop fields): a urllib3 response
            return {"items": json.loads(raw.data).get("items") or []}

        listing = await self._call(list_jobs)
        return {job["metadata"]["name"]: job for job in listing["items"]}

    async def create_job(self, namespace: str, body: dict[str, Any]) -> None:
        """Create a retraining Job; one of the same owner that exists already (a retried create) is left as it
        is, one of another owner or none (left by an earlier ModelDeployment of this name) is `NameTaken`."""
        try:
            await self._call(self._batch.create_namespaced_job, namespace, body)
        except ApiError as exc:
            if exc.status != 409:
                raise
        else:
            return
        name = body["metadata"]["name"]

        def list_holder(**options: Any) -> dict[str, Any]:  # a list, which the operator may do, not a get
            raw: Any = self._batch.list_namespaced_job(
                namespace, field_selector=f"metadata.name={name}", _preload_content=False, **options
            )
            return {"items": json.loads(raw.data).get("items") or []}

        held = (await self._call(list_holder))["items"]
        if not held:  # deleted since: the create may be tried again
            raise ApiError(409, f"Job {name} was deleted while its create was refused")
        ours = {ref.get("uid") for ref in body["metadata"].get("ownerReferences") or []}
        theirs = {ref.get("uid") for ref in (held[0].get("metadata") or {}).get("ownerReferences") or []}
        if not ours & theirs:
            raise NameTaken(
                f"a Job named {name} exists that this ModelDeployment does not own (left by an earlier "
                "ModelDeployment of this name, or made by hand): delete it, and the next run makes its own"
            )

    async def create_child(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a child. One of its name that exists already is a 409 when it is this ModelDeployment's (a
        retried create, or one left by an earlier ModelDeployment of the name, which the caller adopts), and
        `NameTaken` when it is not: patched, someone else's object was taken over, its controller dropped."""
        group, version, plural = CHILD_RESOURCES[(body["apiVersion"], body["kind"])]
        try:
            created = await self._call(
                self._api.create_namespaced_custom_object, group, version, namespace, plural, body
            )
        except ApiError as exc:
            if exc.status != 409:
                raise
            name = body["metadata"]["name"]
            listing = await self._call(
                self._api.list_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                field_selector=f"metadata.name={name}",
            )
            held = listing.get("items") or []
            if not held:  # deleted since: made now (a 409 again is the caller's to patch)
                return await self._call(
                    self._api.create_namespaced_custom_object, group, version, namespace, plural, body
                )
            owner = body["metadata"]["labels"][LABEL_DEPLOYMENT]
            if ((held[0].get("metadata") or {}).get("labels") or {}).get(LABEL_DEPLOYMENT) != owner:
                raise NameTaken(
                    f"an {body['kind']} named {name} exists that is not ModelDeployment {owner}'s (no "
                    f"{LABEL_DEPLOYMENT}={owner} label): rename or delete it; Esteira does not take it over"
                ) from None
            raise
        self._missing_since.pop(plural, None)
        return created

    async def patch_child(self, namespace: str, key: ObjectKey, patch: dict[str, Any]) -> dict[str, Any]:
        group, version, plural = CHILD_RESOURCES[(key[0], key[1])]
        return await self._call(
            self._api.patch_namespaced_custom_object, group, version, namespace, plural, key[2], patch
        )

    async def delete_child(self, namespace: str, key: ObjectKey) -> None:
        group, version, plural = CHILD_RESOURCES[(key[0], key[1])]
        try:
            await self._call(self._api.delete_namespaced_custom_object, group, version, namespace, plural, key[2])
        except ApiError as exc:
            if exc.status != 404:
                raise

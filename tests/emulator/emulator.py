"""A stateful Kubernetes API emulator over real HTTP, built on kmock's ``KubernetesEmulator``.

kmock serves discovery, error rendering and request recording; this subclass takes over every
resource URL and serves it from :class:`~.store.ObjectStore`, with the behaviour an operator relies on
(resourceVersions, generations, the status subresource, finalizers, watches that resume, CRDs that
become discoverable when created) plus runtime fault injection.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import importlib.resources
import json
from typing import Any

import aiohttp.web
import attrs
import kmock
from typing_extensions import override

from . import errors
from .admission import AdmissionPlugin
from .bodies import patch_function, precondition_answer, read_body, selection, status_response
from .crds import CRD_RESOURCE, ServedVersion, established_status, served_versions
from .faults import FaultInjector
from .kserve.webhook import INFERENCE_SERVICES, KServeWebhooks
from .paths import ApiPath, parse_api_path
from .store import NAMESPACES, Kind, ObjectStore, WatchEvent, now_rfc3339
from .watching import serve_watch


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """The emulator handler; serve it with :class:`~.server.EmulatorServer` (or any aiohttp server)."""

    faults: FaultInjector = attrs.field(factory=FaultInjector)
    validate_schemas: bool = True  # default, prune and validate custom resources by their CRD schema
    event_log_size: int = 10_000  # watches may resume from any resourceVersion still in this log
    require_namespaces: bool = True  # creating in a missing namespace is 404, as on a real cluster
    initial_namespaces: tuple[str, ...] = ("default", "kube-system", "kube-public", "kube-node-lease")
    bookmark_interval: float = 60.0  # idle watches that allow bookmarks get one this often (as kube-apiserver)
    kserve_webhooks: bool = True  # KServe's defaulting and validating webhooks on InferenceServices, when served
    admission: dict[kmock.resource, tuple[AdmissionPlugin, ...]] = attrs.field(factory=dict)  # more, per resource
    _store: ObjectStore = attrs.field(init=False)
    _custom: dict[kmock.resource, ServedVersion] = attrs.field(init=False, factory=dict)
    _open_streams: int = attrs.field(init=False, default=0)
    _no_streams: asyncio.Event = attrs.field(init=False, factory=asyncio.Event)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._no_streams.set()
        self.resources.load_data(_bundled_resources())  # core v1 (namespaces, events, ...) and built-in groups
        self._store = ObjectStore(
            self.objects, self.kind_of, log_size=self.event_log_size, require_namespaces=self.require_namespaces
        )
        self._store.listeners.append(self._follow_crds)
        for namespace in self.initial_namespaces:
            self._store.create(self.kind_of(NAMESPACES), None, {"metadata": {"name": namespace}})

    @property
    def store(self) -> ObjectStore:
        return self._store

    def kind_of(self, resource: kmock.resource) -> Kind:
        """The write rules for a served resource; 404 if the emulator does not serve it."""
        if resource not in self.resources:
            raise errors.resource_not_found(f"{resource.group}/{resource.version}/{resource.plural}")
        info = self.resources[resource]
        custom = self._custom.get(resource)
        return Kind(
            resource=resource,
            kind=info.kind or str(resource.plural).capitalize(),
            namespaced=info.namespaced is not False,
            status_subresource="status" in info.subresources,
            schema=custom.schema if custom is not None and self.validate_schemas else None,
            require_resource_version=custom is not None,
            selectable_fields=custom.selectable_fields if custom is not None else frozenset(),
            admission=self._admission_plugins(resource),
        )

    def _admission_plugins(self, resource: kmock.resource) -> tuple[AdmissionPlugin, ...]:
        kserve = (_KSERVE_WEBHOOKS,) if self.kserve_webhooks and resource == INFERENCE_SERVICES else ()
        return kserve + self.admission.get(resource, ())

    @override
    def _get_resources(self) -> list[kmock.resource]:
        # Discovery lists what is served now (built-ins and CRDs), not every resource that ever had objects.
        return [resource for resource in super()._get_resources() if resource in self.resources]

    async def close_watches(self) -> None:
        """End all watch streams and wait until each has sent its last chunk, so clients see a clean end."""
        self._store.close_watches()
        await self._no_streams.wait()

    # -- entry points ----------------------------------------------------------------------------------

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's own URL parser fails on the namespace collection (/api/v1/namespaces), so that one URL
        # is parsed here; every other request goes through kmock (and is recorded in `emulator.requests`).
        path = parse_api_path(raw_request.path)
        if path is None or path.plural != "namespaces" or path.group or path.name is not None:
            return await super().__call__(raw_request)
        body = await raw_request.read()
        request = kmock.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            body=body,
            text=body.decode("utf-8", "replace"),
        )
        self._requests.append(request)
        try:
            return await self._handle(request)
        except Exception as exc:  # a bug, not an API error: keep it visible in `emulator.errors`
            if self._errors:
                self._errors[-1].append(exc)
            return await self._render_error(exc)

    @override
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        path = parse_api_path(request.url.path)
        if path is None:
            return await super()._handle(request)  # discovery, /version and anything non-resource
        is_watch = request.params.get("watch", "").lower() in ("true", "1")
        precondition = precondition_answer(request)
        decision = self.faults.decide(
            user_agent=request.headers.get("User-Agent", ""),
            method=str(request.method.value),
            watch=is_watch,
            preconditioned=precondition is not None,
        )
        if decision.delay:
            await asyncio.sleep(decision.delay)
        held = self.faults.held_write(
            user_agent=request.headers.get("User-Agent", ""),
            method=str(request.method.value),
            path=request.url.path,
            body=_json_or_none(request),
        )
        if held is not None:
            held.arrived.set()
            await asyncio.to_thread(held.released.wait)
        try:
            if decision.error or held is not None:
                raise errors.injected_server_error()
            kind = self.kind_of(kmock.resource(path.group, path.version, path.plural))
            if decision.conflict and path.name is not None:
                self._store.touch(kind, path.namespace, path.name)
            if decision.conflict and precondition == 422:
                raise errors.invalid(kind.resource, path.name, ["test operation failed (injected fault)"])
            if decision.conflict:
                raise errors.injected_conflict(kind.resource, path.name)
            if is_watch:
                self._open_streams += 1
                self._no_streams.clear()
                try:
                    return await serve_watch(
                        self._store,
                        request,
                        path,
                        kind,
                        drop_after=decision.drop_watch_after,
                        bookmark_interval=self.bookmark_interval,
                        gone=decision.gone_watch,
                    )
                finally:
                    self._open_streams -= 1
                    if not self._open_streams:
                        self._no_streams.set()
            status, payload = self._serve_resource(request, path, kind)
        except kmock.KubernetesError as exc:
            return status_response(exc)
        return aiohttp.web.json_response(payload, status=status)

    # -- plain requests --------------------------------------------------------------------------------

    def _serve_resource(self, request: kmock.Request, path: ApiPath, kind: Kind) -> tuple[int, Any]:
        method = str(request.method.value)
        dry_run = request.params.get("dryRun") == "All"
        if path.subresource is not None:
            self._check_subresource(path, kind, method)
        if path.name is None:
            return self._serve_collection(request, path, kind, method, dry_run)
        name, subresource = path.name, path.subresource
        if method == "GET":
            return 200, self._store.get(kind, path.namespace, name)
        if method == "PUT":
            body = read_body(request)
            replace = self._store.update
            return 200, replace(
                kind, path.namespace, name, lambda _: body, subresource=subresource, replace=True, dry_run=dry_run
            )
        if method == "PATCH":
            compute = patch_function(request, kind)
            return 200, self._store.update(
                kind, path.namespace, name, compute, subresource=subresource, dry_run=dry_run
            )
        if method == "DELETE":
            options = read_body(request, default={})
            return 200, self._store.delete(kind, path.namespace, name, options=options, dry_run=dry_run)
        raise errors.method_not_allowed(f"{method} is not supported on an object")

    def _serve_collection(
        self, request: kmock.Request, path: ApiPath, kind: Kind, method: str, dry_run: bool
    ) -> tuple[int, Any]:
        if method == "GET":
            return 200, self._list(request, path, kind)
        if method == "POST":
            return 201, self._store.create(kind, path.namespace, read_body(request), dry_run=dry_run)
        if method == "DELETE":
            return 200, self._delete_collection(request, path, kind, dry_run)
        raise errors.method_not_allowed(f"{method} is not supported on a collection")

    def _check_subresource(self, path: ApiPath, kind: Kind, method: str) -> None:
        if path.subresource not in self.resources[kind.resource].subresources:
            raise errors.resource_not_found(f"{path.plural}/{path.subresource}")
        if path.subresource != "status" or method not in ("GET", "PUT", "PATCH"):
            raise errors.method_not_allowed(f"{method} on {path.plural}/{path.subresource} is not emulated")

    def _list(self, request: kmock.Request, path: ApiPath, kind: Kind) -> dict[str, Any]:
        matches = selection(request, path, kind)
        return {
            "apiVersion": kind.api_version,
            "kind": f"{kind.kind}List",
            "metadata": {"resourceVersion": str(self._store.resource_version), "continue": ""},
            "items": [obj for obj in self._store.list_objects(kind, path.namespace) if matches(obj)],
        }

    def _delete_collection(self, request: kmock.Request, path: ApiPath, kind: Kind, dry_run: bool) -> Any:
        matches = selection(request, path, kind)
        options = read_body(request, default={})
        deleted = [
            self._store.delete(
                kind, obj["metadata"].get("namespace"), obj["metadata"]["name"], options=options, dry_run=dry_run
            )
            for obj in self._store.list_objects(kind, path.namespace)
            if matches(obj)
        ]
        return {"apiVersion": kind.api_version, "kind": f"{kind.kind}List", "metadata": {}, "items": deleted}

    # -- watches ---------------------------------------------------------------------------------------

    # -- CRDs ------------------------------------------------------------------------------------------

    def _follow_crds(self, event: WatchEvent) -> None:
        """Serve a CRD's resources as soon as it is created, as the apiextensions server does."""
        if event.resource != CRD_RESOURCE:
            return
        previous = {res for res, served in self._custom.items() if served.crd_name == event.object["metadata"]["name"]}
        current = [] if event.type == "DELETED" else served_versions(event.object)
        for served in current:
            self._custom[served.resource] = served
            self.resources[served.resource] = served.info
        for gone_resource in previous - {served.resource for served in current}:
            self._store.remove_all(gone_resource)
            del self._custom[gone_resource]
            del self.resources[gone_resource]
        conditions = (event.object.get("status") or {}).get("conditions") or []
        if event.type != "DELETED" and not any(c.get("type") == "Established" for c in conditions):
            status = established_status(event.object, now_rfc3339())
            crd_kind = self.kind_of(CRD_RESOURCE)
            self._store.update(
                crd_kind,
                None,
                event.object["metadata"]["name"],
                lambda obj: {**obj, "status": status},
                subresource="status",
            )


_KSERVE_WEBHOOKS = KServeWebhooks()


def _json_or_none(request: kmock.Request) -> Any:
    """The body for a held-write matcher; the request's own handling reports a bad one."""
    try:
        return read_body(request) if request.body.strip() else None
    except kmock.KubernetesError:
        return None


# Groups in kmock's bundled discovery that a bare kube-apiserver does not serve: the Gateway API comes with its
# CRDs (kubernetes-sigs/gateway-api `config/crd`), metrics.k8s.io with metrics-server's APIService. Served
# here only once their CRD is applied, as on a cluster without them, where a list answers 404.
NOT_BUILT_IN_GROUPS = frozenset({"gateway.networking.k8s.io", "metrics.k8s.io"})


@functools.cache
def _bundled_resources() -> bytes:
    """kmock's bundled discovery data (what ``load_bundled()`` reads, without its deprecated resource API),
    less the groups a bare API server does not serve."""
    raw = importlib.resources.files("kmock._internal").joinpath("resources.json.gz").read_bytes()
    lists = json.loads(gzip.decompress(raw))
    built_in = [one for one in lists if one["groupVersion"].partition("/")[0] not in NOT_BUILT_IN_GROUPS]
    return json.dumps(built_in).encode()

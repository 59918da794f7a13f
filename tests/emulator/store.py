"""The object store behind the emulator: versions, generations, finalizers, garbage collection and events.

Everything here is synchronous and runs on the server's event loop, so each write and the snapshot a
watch starts from are atomic without locks. Objects live in kmock's ``ObjectsArray`` (with their
history), so ``emulator.objects[...]`` keeps working for assertions.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import kmock

from . import errors
from .admission import AdmissionPlugin
from .metadata import object_meta_errors
from .schemas import StructuralSchema

NAMESPACES = kmock.resource("", "v1", "namespaces")
# Fields a client cannot set or change; the server owns them.
_SERVER_OWNED = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet kube-apiserver uses for generateName


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Kind:
    """What the store needs to know about one resource to write its objects like a real server."""

    resource: kmock.resource
    kind: str
    namespaced: bool
    status_subresource: bool  # writes to the object ignore status; /status writes change only status
    schema: StructuralSchema | None = None
    require_resource_version: bool = False  # custom resources refuse unconditional updates (PUT)
    admission: tuple[AdmissionPlugin, ...] = ()  # webhooks called on create and update (not /status)
    selectable_fields: frozenset[str] = frozenset()  # a CRD version's selectableFields, as field labels

    @property
    def custom(self) -> bool:
        return self.require_resource_version

    @property
    def field_labels(self) -> frozenset[str] | None:
        """The field selector labels this resource accepts; None for built-ins (any dotted path here).

        A custom resource takes metadata.name, metadata.namespace when namespaced, and its CRD's
        selectableFields (apiextensions-apiserver pkg/apiserver/conversion/converter.go ConvertFieldLabel).
        """
        if not self.custom:
            return None
        return frozenset({"metadata.name", *(("metadata.namespace",) if self.namespaced else ())}) | (
            self.selectable_fields
        )

    @property
    def api_version(self) -> str:
        return f"{self.resource.group}/{self.resource.version}" if self.resource.group else str(self.resource.version)


@dataclass(frozen=True)
class WatchEvent:
    """One change, as sent on watch streams; ``rv`` orders events globally."""

    rv: int
    resource: kmock.resource
    type: str
    object: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "object": self.object}


@dataclass(eq=False)
class Subscription:
    """A live watch: the store pushes matching-resource events into the queue; ``None`` ends it."""

    resource: kmock.resource
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)


Key = tuple[kmock.resource, str | None, str]


class ObjectStore:
    """Stores objects and applies the API server's write rules; raises kmock errors rendered as Status."""

    def __init__(
        self,
        objects: kmock.ObjectsArray,
        kind_of: Callable[[kmock.resource], Kind],
        *,
        log_size: int,
        require_namespaces: bool,
    ) -> None:
        self._objects = objects
        self._require_namespaces = require_namespaces
        self._kind_of = kind_of
        self._rv = 0
        self._log: collections.deque[WatchEvent] = collections.deque()
        self._log_size = log_size
        self._log_floor = 0  # the newest rv that fell out of the log; older watches get 410 Gone
        self._subscriptions: set[Subscription] = set()
        self._closed = False
        self.listeners: list[Callable[[WatchEvent], None]] = []

    @property
    def resource_version(self) -> int:
        return self._rv

    # -- reading ---------------------------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any]:
        current = self._current((kind.resource, self._ns(kind, namespace), name))
        if current is None:
            raise errors.not_found(kind.resource, name)
        return current

    def list_objects(self, kind: Kind, namespace: str | None) -> list[dict[str, Any]]:
        """All live objects of the resource, in one namespace or (namespace None) in all of them."""
        return [obj for (_, ns, _), obj in self._live(kind.resource) if namespace is None or ns == namespace]

    # -- writing ---------------------------------------------------------------------------------------

    def create(self, kind: Kind, namespace: str | None, body: Any, *, dry_run: bool = False) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        meta = body.get("metadata") or {}
        if kind.namespaced:
            if namespace and meta.get("namespace") and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or meta.get("namespace") or "default"
        else:
            namespace = None
        if namespace is not None and self._require_namespaces:
            self._check_namespace(namespace)
        name = meta.get("name") or self._generate_name(kind, namespace, meta.get("generateName"))
        if self._current((kind.resource, namespace, name)) is not None:
            raise errors.already_exists(kind.resource, name)

        obj = {"apiVersion": kind.api_version, "kind": kind.kind, **copy.deepcopy(body)}
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if kind.status_subresource:
            obj.pop("status", None)
        if kind.resource == NAMESPACES:
            obj["status"] = {"phase": "Active"}
        new_meta = {k: v for k, v in meta.items() if k not in _SERVER_OWNED and k != "resourceVersion"}
        new_meta.update(name=name, uid=str(uuid.uuid4()), generation=1, creationTimestamp=now_rfc3339())
        # A cluster-scoped object's namespace is cleared, not refused (registry/rest/meta.go
        # EnsureObjectNamespaceMatchesRequestNamespace, called from rest.BeforeCreate).
        new_meta.pop("namespace", None)
        if namespace is not None:
            new_meta["namespace"] = namespace
        obj["metadata"] = new_meta
        obj = self._admit(kind, None, obj)
        if dry_run:
            return obj
        obj["metadata"]["resourceVersion"] = self._next_rv()
        key = (kind.resource, namespace, name)
        if key in self._objects:
            self._objects[key].create(obj)
        else:
            self._objects[key] = obj
        self._emit(kind.resource, "ADDED", obj)
        self._attempt_to_delete(key)  # a dependent created with only dangling owners is collected at once
        return obj

    def update(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        compute: Callable[[dict[str, Any]], Any],
        *,
        subresource: str | None = None,
        replace: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Write ``compute(current)`` (a full new object) as a PUT (``replace``) or a PATCH would."""
        key = (kind.resource, self._ns(kind, namespace), name)
        current = self.get(kind, namespace, name)
        candidate = compute(copy.deepcopy(current))
        if not isinstance(candidate, dict):
            raise errors.bad_request("the resulting object must be a JSON object")
        self._check_identity(kind, current, candidate)
        wanted_rv = (candidate.get("metadata") or {}).get("resourceVersion")
        if replace and kind.require_resource_version and not wanted_rv:
            raise errors.invalid(kind.resource, name, ["metadata.resourceVersion: must be specified for an update"])
        if wanted_rv and str(wanted_rv) != current["metadata"]["resourceVersion"]:
            raise errors.conflict(kind.resource, name)

        merged = self._merge_write(kind, current, candidate, subresource)
        new = self._conform(kind, merged, current) if subresource == "status" else self._admit(kind, current, merged)
        added = set(new["metadata"].get("finalizers") or ()) - set(current["metadata"].get("finalizers") or ())
        if current["metadata"].get("deletionTimestamp") and added:
            causes = ["metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted"]
            raise errors.invalid(kind.resource, name, causes)
        # Custom resources without a status subresource count status changes too (apiextensions strategy).
        with_status = kind.custom and not kind.status_subresource
        if _content(new, with_status) != _content(current, with_status):
            new["metadata"]["generation"] = current["metadata"].get("generation", 0) + 1
        if new == current or dry_run:
            return new  # a no-op write keeps the resourceVersion and sends no event, as on a real server
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._remove(kind, key, new)  # the last finalizer is gone: one DELETED event, no MODIFIED
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[key].history.append(new)
        self._emit(kind.resource, "MODIFIED", new)
        self._attempt_to_delete(key)  # the update may have pointed the object at owners that are gone
        return new

    def delete(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        *,
        options: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Delete now, or (with finalizers) only mark ``deletionTimestamp`` until the finalizers are gone."""
        key = (kind.resource, self._ns(kind, namespace), name)
        current = self.get(kind, namespace, name)
        options = options or {}
        preconditions = options.get("preconditions") or {}
        for field_name in ("uid", "resourceVersion"):
            expected = preconditions.get(field_name)
            if expected and expected != current["metadata"].get(field_name):
                why = f"Precondition failed: {field_name} in precondition: {expected}, in object meta: "
                raise errors.conflict(kind.resource, name, why + str(current["metadata"].get(field_name)))
        if dry_run:
            return current
        if options.get("propagationPolicy") == "Orphan" or options.get("orphanDependents") is True:
            # kube-apiserver adds the `orphan` finalizer (registry/generic/registry/store.go
            # shouldOrphanDependents); the garbage collector then strips the owner's references from its
            # dependents and removes that finalizer (garbagecollector.go orphanDependents). Eager here: the
            # dependents are released now and the `orphan` finalizer is never seen.
            self._orphan_dependents(current["metadata"]["uid"])
        if not current["metadata"].get("finalizers"):
            return self._remove(kind, key, current)
        if current["metadata"].get("deletionTimestamp"):
            return current
        marked = copy.deepcopy(current)
        # A real server also bumps the generation when it marks an object for graceful deletion.
        marked["metadata"].update(
            deletionTimestamp=now_rfc3339(),
            deletionGracePeriodSeconds=0,
            generation=current["metadata"].get("generation", 0) + 1,
            resourceVersion=self._next_rv(),
        )
        self._objects[key].history.append(marked)
        self._emit(kind.resource, "MODIFIED", marked)
        return marked

    def touch(self, kind: Kind, namespace: str | None, name: str) -> None:
        """Give a live object a new resourceVersion, as a concurrent writer would (missing objects are ignored).

        Injected conflicts use this so they are true: the caller's resourceVersion really is stale now, and
        watchers see a MODIFIED event that prompts a retry, just as after a real concurrent update.
        """
        key = (kind.resource, self._ns(kind, namespace), name)
        current = self._current(key)
        if current is None:
            return
        touched = copy.deepcopy(current)
        touched["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[key].history.append(touched)
        self._emit(kind.resource, "MODIFIED", touched)

    def remove_all(self, resource: kmock.resource) -> None:
        """Delete every object of a resource at once (its CRD is gone), with DELETED events."""
        kind = self._kind_of(resource)
        for key, obj in list(self._live(resource)):
            self._remove(kind, key, obj)

    # -- watching --------------------------------------------------------------------------------------

    def subscribe(self, resource: kmock.resource, since: int | None) -> tuple[list[WatchEvent], Subscription]:
        """Start a watch: the events it must send first (a snapshot, or the log after ``since``) and its queue.

        Both are taken in one step, so no change can fall between the snapshot and the live stream.
        """
        if since is None:
            first = [WatchEvent(self._rv, resource, "ADDED", obj) for _, obj in self._live(resource)]
        elif since < self._log_floor:
            raise errors.gone(since, self._log_floor)
        else:
            first = [event for event in self._log if event.resource == resource and event.rv > since]
        subscription = Subscription(resource)
        if self._closed:
            subscription.queue.put_nowait(None)  # the server is stopping: send what is due, then end
        else:
            self._subscriptions.add(subscription)
        return first, subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def watchers(self, resource: kmock.resource) -> int:
        """How many watch streams of ``resource`` are open now."""
        return sum(1 for subscription in self._subscriptions if subscription.resource == resource)

    def close_watches(self) -> None:
        """End every live watch stream cleanly, and any started later (used when the server stops)."""
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.queue.put_nowait(None)
        self._subscriptions.clear()

    # -- internals -------------------------------------------------------------------------------------

    def _ns(self, kind: Kind, namespace: str | None) -> str | None:
        return namespace if kind.namespaced else None

    def _current(self, key: Key) -> dict[str, Any] | None:
        if key not in self._objects or self._objects[key].deleted:
            return None
        return self._objects[key].raw

    def _live(self, resource: kmock.resource) -> Iterator[tuple[Key, dict[str, Any]]]:
        for key, obj in list(self._objects.items()):
            if key[0] == resource and not obj.deleted:
                yield key, obj.raw

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _check_namespace(self, namespace: str) -> None:
        """Objects go only into existing namespaces that are not being deleted, as on a real cluster."""
        current = self._current((NAMESPACES, None, namespace))
        if current is None:
            raise errors.not_found(NAMESPACES, namespace)
        if current["metadata"].get("deletionTimestamp"):
            why = f"unable to create new content in namespace {namespace} because it is being terminated"
            raise errors.api_error(403, "Forbidden", why)

    def _generate_name(self, kind: Kind, namespace: str | None, prefix: Any) -> str:
        if not prefix:
            raise errors.invalid(
                kind.resource, None, ["metadata.name: Required value: name or generateName is required"]
            )
        for _ in range(100):
            name = f"{prefix}{''.join(random.choices(_NAME_ALPHABET, k=5))}"
            if self._current((kind.resource, namespace, name)) is None:
                return name
        raise errors.api_error(500, "InternalError", "could not generate a unique name")

    def _check_identity(self, kind: Kind, current: dict[str, Any], candidate: dict[str, Any]) -> None:
        meta = candidate.get("metadata") or {}
        # A cluster-scoped object's namespace is cleared on update too (rest.BeforeUpdate calls
        # EnsureObjectNamespaceMatchesRequestNamespace); _merge_write keeps the stored (absent) one.
        for field_name in ("name", "namespace") if kind.namespaced else ("name",):
            if meta.get(field_name) and meta[field_name] != current["metadata"].get(field_name):
                raise errors.bad_request(f"metadata.{field_name} cannot be changed by an update")
        uid = meta.get("uid")
        if uid and uid != current["metadata"]["uid"]:
            raise errors.conflict(kind.resource, current["metadata"]["name"], "Precondition failed: UID mismatch")

    def _merge_write(
        self, kind: Kind, current: dict[str, Any], candidate: dict[str, Any], subresource: str | None
    ) -> dict[str, Any]:
        if subresource == "status":
            new = copy.deepcopy(current)
            if "status" in candidate:
                new["status"] = copy.deepcopy(candidate["status"])
            else:
                new.pop("status", None)
            return new
        new = copy.deepcopy(candidate)
        new["apiVersion"], new["kind"] = current["apiVersion"], current["kind"]
        meta = new.setdefault("metadata", {})
        for field_name in ("name", "namespace", "resourceVersion", *_SERVER_OWNED):
            if field_name in current["metadata"]:
                meta[field_name] = current["metadata"][field_name]
            else:
                meta.pop(field_name, None)
        if kind.status_subresource:
            if "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            else:
                new.pop("status", None)
        return new

    def _admit(self, kind: Kind, old: dict[str, Any] | None, obj: dict[str, Any]) -> dict[str, Any]:
        """kube-apiserver's write path: mutating webhooks, its own validation, then validating webhooks."""
        if kind.schema is not None and kind.admission:
            obj = kind.schema.prepare(obj)  # webhooks see the decoded object: defaulted and pruned
        for plugin in kind.admission:
            mutated = plugin.mutate(old, copy.deepcopy(obj))
            owned = {
                k: obj["metadata"][k]
                for k in ("name", "namespace", "resourceVersion", *_SERVER_OWNED)
                if k in obj["metadata"]
            }
            mutated.setdefault("metadata", {}).update(owned)
            obj = mutated
        obj = self._conform(kind, obj, old)
        for plugin in kind.admission:
            plugin.validate(old, obj)
        return obj

    def _conform(self, kind: Kind, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
        """Default, prune and validate against the CRD schema (when the resource has one), its CEL rules
        (transition rules against `old`), and check metadata."""
        causes = object_meta_errors(
            obj["metadata"], namespaced=kind.namespaced, name_is_label=kind.resource == NAMESPACES
        )
        if kind.schema is not None:
            obj = kind.schema.prepare(obj)
            causes += kind.schema.errors(obj)
            if not causes:  # the API server runs CEL only on a schema-valid object
                causes += kind.schema.rule_errors(obj, old)
        if causes:
            raise errors.invalid(kind.resource, obj["metadata"].get("name"), causes)
        return obj

    def _remove(self, kind: Kind, key: Key, last: dict[str, Any]) -> dict[str, Any]:
        final = copy.deepcopy(last)
        final["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[key].delete()
        self._emit(kind.resource, "DELETED", final)
        self._collect_garbage(final["metadata"]["uid"])
        if kind.resource == NAMESPACES:
            self._empty_namespace(key[2])
        return final

    def _collect_garbage(self, owner_uid: str) -> None:
        """An owner is gone: look at each of its dependents, as the garbage collector does (eagerly here).

        Upstream the graph builder queues the dependents of a deleted owner for attemptToDeleteItem
        (pkg/controller/garbagecollector/graph_builder.go processGraphChanges).
        """
        for key, obj in list(self._all_live_with_keys()):
            if any(ref.get("uid") == owner_uid for ref in obj["metadata"].get("ownerReferences") or ()):
                self._attempt_to_delete(key)

    def _attempt_to_delete(self, key: Key) -> None:
        """Collect an object whose owners are all dangling; drop its dangling references if some owner lives.

        pkg/controller/garbagecollector/garbagecollector.go attemptToDeleteItem: an object being deleted is
        left alone; with no solid owner it is deleted (background propagation); with a solid owner and some
        dangling ones, the dangling references are patched away (deleteOwnerRefJSONMergePatch).
        """
        current = self._current(key)
        if current is None or current["metadata"].get("deletionTimestamp"):
            return
        refs = current["metadata"].get("ownerReferences") or []
        if not refs:
            return
        solid, dangling = self._classify_references(current, refs)
        if not solid:
            self.delete(self._kind_of(key[0]), key[1], key[2])
        elif dangling:
            gone = {ref.get("uid") for ref in dangling}
            self._rewrite_owner_references(key, current, [ref for ref in refs if ref.get("uid") not in gone])

    def _classify_references(
        self, obj: dict[str, Any], refs: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Split owner references into solid (the owner lives) and dangling ones.

        garbagecollector.go classifyReferences and isDangling: the owner is looked up by name in the
        dependent's namespace (cluster-scoped owners without one) and is absent when missing or when its uid
        differs. A namespaced owner of a cluster-scoped dependent, or an owner in another namespace, cannot be
        found there, so it is dangling too (the collector also reports an OwnerRefInvalidNamespace event).
        """
        namespace = obj["metadata"].get("namespace")
        live = {owner["metadata"]["uid"]: owner for owner in self._all_live()}
        solid, dangling = [], []
        for ref in refs:
            owner = live.get(ref.get("uid"))
            found = (
                owner is not None
                and owner["metadata"].get("name") == ref.get("name")
                and owner["metadata"].get("namespace") in (None, namespace)
            )
            (solid if found else dangling).append(ref)
        return solid, dangling

    def _orphan_dependents(self, owner_uid: str) -> None:
        """Remove references to the owner from its dependents (garbagecollector.go orphanDependents)."""
        for key, obj in list(self._all_live_with_keys()):
            refs = obj["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == owner_uid for ref in refs):
                self._rewrite_owner_references(key, obj, [ref for ref in refs if ref.get("uid") != owner_uid])

    def _rewrite_owner_references(self, key: Key, current: dict[str, Any], refs: list[dict[str, Any]]) -> None:
        """The garbage collector's own metadata patch: a new resourceVersion and a MODIFIED event."""
        new = copy.deepcopy(current)
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            new["metadata"].pop("ownerReferences", None)
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[key].history.append(new)
        self._emit(key[0], "MODIFIED", new)

    def _empty_namespace(self, namespace: str) -> None:
        for key, _ in list(self._all_live_with_keys()):
            if key[1] == namespace and self._kind_of(key[0]).namespaced:
                self._delete_quietly(key)

    def _delete_quietly(self, key: Key) -> None:
        kind = self._kind_of(key[0])
        if self._current(key) is not None:
            self.delete(kind, key[1], key[2])

    def _all_live(self) -> Iterator[dict[str, Any]]:
        return (obj for _, obj in self._all_live_with_keys())

    def _all_live_with_keys(self) -> Iterator[tuple[Key, dict[str, Any]]]:
        for key, obj in list(self._objects.items()):
            if not obj.deleted:
                yield key, obj.raw

    def _emit(self, resource: kmock.resource, event_type: str, obj: dict[str, Any]) -> None:
        event = WatchEvent(int(obj["metadata"]["resourceVersion"]), resource, event_type, copy.deepcopy(obj))
        self._log.append(event)
        while len(self._log) > self._log_size:
            self._log_floor = self._log.popleft().rv
        for subscription in list(self._subscriptions):
            if subscription.resource == resource:
                subscription.queue.put_nowait(event)
        for listener in list(self.listeners):
            listener(event)


def _content(obj: dict[str, Any], with_status: bool = False) -> dict[str, Any]:
    """Everything a generation counts: all but identity, metadata and (usually) status."""
    skipped = ("apiVersion", "kind", "metadata") if with_status else ("apiVersion", "kind", "metadata", "status")
    return {key: value for key, value in obj.items() if key not in skipped}

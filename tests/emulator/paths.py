"""Parsing of Kubernetes API URLs into their parts.

kmock's own URL parser cannot read the namespace collection (``/api/v1/namespaces``) and mixes up a
namespace object with a namespaced collection, so the emulator reads every resource URL with this one.
"""

from __future__ import annotations

from dataclasses import dataclass

# Subresources of a Namespace object: ``/api/v1/namespaces/<name>/<sub>``.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclass(frozen=True)
class ApiPath:
    """The resource, namespace, name and subresource addressed by one request URL."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def parse_api_path(path: str) -> ApiPath | None:
    """Split a resource URL; return None for discovery and other non-resource URLs."""
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return None  # discovery of one group-version

    if rest[0] == "namespaces" and group == "" and _is_namespace_itself(rest):
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) >= 3 else None
        return ApiPath(group, version, "namespaces", None, name, sub)

    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) >= 2 else None
    sub = "/".join(rest[2:]) or None
    return ApiPath(group, version, plural, namespace, name, sub)


def _is_namespace_itself(rest: list[str]) -> bool:
    """Tell ``namespaces[/<name>[/status|finalize]]`` from ``namespaces/<ns>/<plural>...``."""
    return len(rest) <= 2 or (len(rest) == 3 and rest[2] in _NAMESPACE_SUBRESOURCES)

"""Aggregated discovery (``apidiscovery.k8s.io/v2``): every group's resources in one document.

kubectl and client-go ask ``/api`` and ``/apis`` for an ``APIGroupDiscoveryList`` first; with
it, one request tells them every served resource (custom resources included, so a kind is found
as soon as its CRD is Established) instead of one request per group/version. The documents are
converted from the legacy ones (:mod:`.discovery` builds those), so both always agree: each
``APIResourceList`` entry becomes a resource with its ``responseKind`` and scope, and
``<resource>/<sub>`` entries become that resource's subresources.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from k3py.cluster.server.rest.http import parse_accept

Object = dict[str, Any]
CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def wanted(request: web.Request) -> bool:
    """Whether the client prefers the aggregated form (before plain JSON) in its Accept."""
    for media in parse_accept(request.headers.get("Accept", "")):
        params = media.params
        if (
            params.get("as") == "APIGroupDiscoveryList"
            and params.get("g") == "apidiscovery.k8s.io"
            and params.get("v") == "v2"
        ):
            return True
        if media.type in ("application/json", "*/*", "application/*") and "as" not in params:
            return False
    return False


def _kind(group: str, version: str, kind: str) -> Object:
    return {"group": group, "version": version, "kind": kind}


def version_entry(group: str, version: str, resource_list: Object) -> Object:
    """One version of a group, from its legacy ``APIResourceList``."""
    resources: dict[str, Object] = {}
    subresources: list[tuple[str, Object]] = []
    for entry in resource_list.get("resources", []):
        name = entry["name"]
        if "/" in name:
            subresources.append((name, entry))
            continue
        resource: Object = {
            "resource": name,
            "responseKind": _kind(group, version, entry["kind"]),
            "scope": "Namespaced" if entry.get("namespaced") else "Cluster",
            "singularResource": entry.get("singularName", ""),
            "verbs": entry.get("verbs", []),
        }
        for key in ("shortNames", "categories"):
            if entry.get(key):
                resource[key] = entry[key]
        resources[name] = resource
    for name, entry in subresources:
        parent, _, sub = name.partition("/")
        if parent not in resources:
            continue
        kind = _kind(entry.get("group", group), entry.get("version", version), entry["kind"])
        resources[parent].setdefault("subresources", []).append(
            {"subresource": sub, "responseKind": kind, "verbs": entry.get("verbs", [])}
        )
    return {"version": version, "resources": list(resources.values()), "freshness": "Current"}


def document(groups: list[tuple[str, list[tuple[str, Object]]]]) -> Object:
    """The ``APIGroupDiscoveryList`` of ``(group, [(version, APIResourceList)...])`` pairs,
    versions in preference order."""
    items = []
    for name, versions in groups:
        metadata: Object = {"name": name} if name else {}
        items.append(
            {
                "metadata": metadata,
                "versions": [version_entry(name, v, doc) for v, doc in versions],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }

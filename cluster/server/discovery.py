"""API discovery: ``/api``, ``/api/v1``, ``/apis`` and ``/apis/<group>[/<version>]``.

The documents are built from the resource registry (``RESOURCES``, then the server's custom
resources: the CRD kind and the kinds of established CRDs): every served resource with
its verbs, short names and categories, and each subresource as its own entry (``pods/status``,
``deployments/scale`` as an autoscaling/v1 Scale...), which is how kubectl learns that ``kubectl
scale`` and ``kubectl get all`` apply. ``/api`` and ``/apis`` also answer in the aggregated form
(:mod:`.discovery_aggregated`) to clients that ask for it first, as kubectl does.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from k3py.cluster.api import status, wire
from k3py.cluster.api.customresources import CustomResourceRegistry
from k3py.cluster.api.resources import GroupVersion, ResourceInfo, group_versions, resources_in
from k3py.cluster.server import componentstatus, discovery_aggregated
from k3py.cluster.server.metrics import resource_api
from k3py.cluster.server.rest.context import REST
from k3py.cluster.server.rest.http import json_response

# Subresource -> (group, version, kind, verbs); "" group/version/kind: the parent's.
_SUBRESOURCES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "status": ("", "", "", ("get", "patch", "update")),
    "scale": ("autoscaling", "v1", "Scale", ("get", "patch", "update")),
    "binding": ("", "", "Binding", ("create",)),
    "eviction": ("policy", "v1", "Eviction", ("create",)),
    "log": ("", "", "Pod", ("get",)),
    "exec": ("", "", "PodExecOptions", ("create", "get")),
    "attach": ("", "", "PodAttachOptions", ("create", "get")),
    "portforward": ("", "", "PodPortForwardOptions", ("create", "get")),
    "ephemeralcontainers": ("", "", "", ("get", "patch", "update")),
    "finalize": ("", "", "", ("update",)),
    "proxy": ("", "", "", ("create", "delete", "get", "patch", "update")),
}
_PROXY_KINDS = {
    "Pod": "PodProxyOptions",
    "Node": "NodeProxyOptions",
    "Service": "ServiceProxyOptions",
}


def _resource(info: ResourceInfo) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": info.plural,
        "singularName": info.singular,
        "namespaced": info.namespaced,
        "kind": info.kind,
        "verbs": list(info.verbs),
    }
    if info.short_names:
        entry["shortNames"] = list(info.short_names)
    if info.categories:
        entry["categories"] = list(info.categories)
    return entry


def _subresource(info: ResourceInfo, name: str) -> dict[str, Any]:
    group, version, kind, verbs = _SUBRESOURCES.get(name, ("", "", "", ("get",)))
    if name == "proxy":
        kind = _PROXY_KINDS.get(info.kind, "")
    entry: dict[str, Any] = {
        "name": f"{info.plural}/{name}",
        "singularName": "",
        "namespaced": info.namespaced,
        "kind": kind or info.kind,
        "verbs": list(verbs),
    }
    if group:
        entry["group"] = group
        entry["version"] = version
    return entry


def resource_list(
    group: str, version: str, custom: CustomResourceRegistry | None = None
) -> dict[str, Any] | None:
    infos = resources_in(group, version)
    if custom is not None:
        infos += custom.resources_in(group, version)
    if not infos:
        return None
    resources: list[dict[str, Any]] = []
    for info in infos:
        resources.append(_resource(info))
        resources.extend(_subresource(info, sub) for sub in info.subresources)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": infos[0].api_version,
        "resources": resources,
    }


def _served(custom: CustomResourceRegistry | None) -> tuple[GroupVersion, ...]:
    # The static registry's group/versions, then those of the CRD kind and the custom kinds.
    static = group_versions()
    if custom is None:
        return static
    return static + tuple(gv for gv in custom.group_versions() if gv not in static)


def _group(name: str, custom: CustomResourceRegistry | None = None) -> dict[str, Any]:
    versions = [
        {"groupVersion": f"{name}/{gv.version}", "version": gv.version}
        for gv in _served(custom)
        if gv.group == name
    ]
    return {"name": name, "versions": versions, "preferredVersion": versions[0]}


def group_list(custom: CustomResourceRegistry | None = None) -> dict[str, Any]:
    names = list(dict.fromkeys(gv.group for gv in _served(custom) if gv.group))
    groups = [_group(n, custom) for n in names]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


async def core_versions(request: web.Request) -> web.Response:
    host = request.host or "127.0.0.1"
    return json_response(
        {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
        }
    )


def _core_list(version: str) -> dict[str, Any] | None:
    document = resource_list("", version)
    if document is not None and document["groupVersion"] == "v1":
        # Computed on each request, outside the registry.
        document["resources"].append(componentstatus.discovery_entry())
    return document


def _aggregated(body: dict[str, Any]) -> web.Response:
    return web.Response(
        body=wire.encode(body),
        headers={"Content-Type": discovery_aggregated.CONTENT_TYPE, "Vary": "Accept"},
    )


async def core_versions_or_aggregated(request: web.Request) -> web.Response:
    if not discovery_aggregated.wanted(request):
        return await core_versions(request)
    core = _core_list("v1")
    assert core is not None
    return _aggregated(discovery_aggregated.document([("", [("v1", core)])]))


async def core_resources(request: web.Request) -> web.Response:
    document = _core_list(request.match_info["version"])
    if document is None:
        raise status.path_not_found(request.path)
    return json_response(document)


async def groups(request: web.Request) -> web.Response:
    custom = request.app[REST].custom
    document = group_list(custom)
    if discovery_aggregated.wanted(request):
        listed: list[tuple[str, list[tuple[str, dict[str, Any]]]]] = []
        for entry in document["groups"]:
            versions = []
            for version in entry["versions"]:
                found = resource_list(entry["name"], version["version"], custom)
                if found is not None:
                    versions.append((version["version"], found))
            listed.append((entry["name"], versions))
        listed.append((resource_api.GROUP, [(resource_api.VERSION, resource_api.resource_list())]))
        return _aggregated(discovery_aggregated.document(listed))
    # Served outside the registry, as an APIService makes an aggregated group appear.
    document["groups"].append(resource_api.api_group())
    return json_response(document)


async def group(request: web.Request) -> web.Response:
    name = request.match_info["group"]
    custom = request.app[REST].custom
    if not any(gv.group == name for gv in _served(custom)):
        raise status.path_not_found(request.path)
    return json_response({"kind": "APIGroup", "apiVersion": "v1", **_group(name, custom)})


async def group_resources(request: web.Request) -> web.Response:
    document = resource_list(
        request.match_info["group"], request.match_info["version"], request.app[REST].custom
    )
    if document is None:
        raise status.path_not_found(request.path)
    return json_response(document)


def add_routes(app: web.Application) -> None:
    componentstatus.add_routes(app)
    app.router.add_get("/api", core_versions_or_aggregated)
    app.router.add_get("/api/", core_versions_or_aggregated)
    app.router.add_get("/api/{version}", core_resources)
    app.router.add_get("/apis", groups)
    app.router.add_get("/apis/", groups)
    app.router.add_get("/apis/{group}", group)
    app.router.add_get("/apis/{group}/{version}", group_resources)

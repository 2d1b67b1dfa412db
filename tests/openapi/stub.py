"""A minimal API server for driving real kubectl against the OpenAPI routes.

Legacy discovery built from the resource registry, the OpenAPI routes under test, and an
in-memory object store that answers GET, POST and PATCH on resource paths. Every request is
recorded (method, path, query, content type, accept, body, response status), so tests can see
what kubectl asked and sent. It applies no patch: a PATCH returns the stored object unchanged.
Not a Kubernetes server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from k3py.cluster.api.resources import RESOURCES, group_versions, resources_in
from k3py.cluster.server.openapi import add_routes


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    accept: str
    body: bytes
    status: int


@dataclass
class StubState:
    requests: list[Recorded] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)


STATE = web.AppKey("state", StubState)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _resource_list(group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for info in resources_in(group, version):
        resources.append(
            {
                "name": info.plural,
                "singularName": info.singular,
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": list(info.verbs),
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            }
        )
        for sub in info.subresources:
            resources.append(
                {
                    "name": f"{info.plural}/{sub}",
                    "singularName": "",
                    "namespaced": info.namespaced,
                    "kind": info.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    gv = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }


async def _version(_: web.Request) -> web.Response:
    return _json({"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"})


async def _api(_: web.Request) -> web.Response:
    return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})


async def _apis(_: web.Request) -> web.Response:
    groups = []
    for gv in group_versions():
        if gv.group:
            entry = {"groupVersion": gv.api_version, "version": gv.version}
            groups.append({"name": gv.group, "versions": [entry], "preferredVersion": entry})
    return _json({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})


async def _core(_: web.Request) -> web.Response:
    return _json(_resource_list("", "v1"))


async def _group(request: web.Request) -> web.Response:
    return _json(_resource_list(request.match_info["group"], request.match_info["version"]))


def _not_found(path: str) -> web.Response:
    return _json(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "NotFound",
            "message": f"{path} not found",
            "code": 404,
        },
        status=404,
    )


@web.middleware
async def _record(request: web.Request, handler: Handler) -> web.StreamResponse:
    body = await request.read()
    try:
        response = await handler(request)
    except web.HTTPException as error:
        response = error
    request.app[STATE].requests.append(
        Recorded(
            request.method,
            request.path,
            dict(request.query),
            request.headers.get("Content-Type", ""),
            request.headers.get("Accept", ""),
            body,
            response.status,
        )
    )
    if isinstance(response, web.HTTPException):
        raise response
    return response


async def _resource(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await request.read()
    key = request.path
    if request.method == "GET":
        stored = state.objects.get(key)
        return _json(stored) if stored is not None else _not_found(key)
    if request.method == "POST":
        obj = json.loads(body)
        name = obj["metadata"]["name"]
        obj["metadata"].setdefault("namespace", request.match_info.get("namespace", "default"))
        obj["metadata"]["resourceVersion"] = "1"
        state.objects[f"{key}/{name}"] = obj
        return _json(obj, status=201)
    if request.method == "PATCH":
        stored = state.objects.get(key)
        return _json(stored) if stored is not None else _not_found(key)
    return _json({}, status=405)


def make_app() -> web.Application:
    app = web.Application(middlewares=[_record])
    app[STATE] = StubState()
    add_routes(app)
    app.router.add_get("/version", _version)
    app.router.add_get("/api", _api)
    app.router.add_get("/apis", _apis)
    app.router.add_get("/api/v1", _core)
    app.router.add_get("/apis/{group}/{version}", _group)
    for info in RESOURCES:
        base = f"/api/{info.version}" if not info.group else f"/apis/{info.group}/{info.version}"
        scope = f"{base}/namespaces/{{namespace}}" if info.namespaced else base
        app.router.add_route("*", f"{scope}/{info.plural}", _resource)
        app.router.add_route("*", f"{scope}/{info.plural}/{{name}}", _resource)
    return app

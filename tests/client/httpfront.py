"""A minimal Kubernetes REST front for :class:`FakeApi`, to test the client's wire behaviour.

It routes ``/api/v1/...`` and ``/apis/<group>/<version>/...`` to the fake, pages lists with
``limit``/``continue``, streams watches one JSON line per event (deliberately split across
writes), turns ``ApiError`` into ``Status`` bodies, and records each request's headers.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from aiohttp import web

from k3py.cluster.api.resources import by_plural
from k3py.cluster.api.status import ApiError, path_not_found
from k3py.cluster.client.fake import FakeApi

FAKE = web.AppKey("fake", FakeApi)
SEEN = web.AppKey("seen", list[web.Request])


def _route(request: web.Request) -> tuple[Any, str | None, str, str]:
    parts = [p for p in request.path.split("/") if p]
    if parts[:1] == ["api"]:
        group, version, rest = "", parts[1], parts[2:]
    else:
        group, version, rest = parts[1], parts[2], parts[3:]
    namespace = None
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    info = by_plural(group, version, rest[0])
    if info is None:
        raise path_not_found(request.path)
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    return info, namespace, name, sub


async def handle(request: web.Request) -> web.StreamResponse:
    request.app[SEEN].append(request)
    fake = request.app[FAKE]
    try:
        info, namespace, name, sub = _route(request)
        q = request.query
        if request.method == "GET" and not name and q.get("watch"):
            return await _watch(request, fake, info, namespace)
        if request.method == "GET" and not name:
            items, version = await fake.list(
                info,
                namespace,
                label_selector=q.get("labelSelector", ""),
                field_selector=q.get("fieldSelector", ""),
            )
            start = int(q.get("continue") or 0)
            limit = int(q.get("limit") or len(items) or 1)
            page = items[start : start + limit]
            meta: dict[str, Any] = {"resourceVersion": version}
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
            for item in page:
                item.pop("apiVersion", None)
                item.pop("kind", None)
            body: Any = {"kind": info.list_kind, "metadata": meta, "items": page}
        elif request.method == "GET":
            body = await fake.get(info, name, namespace, subresource=sub)
        elif request.method == "POST":
            body = await fake.create(info, await request.json(), namespace, subresource=sub)
        elif request.method == "PUT":
            body = await fake.update(info, await request.json(), subresource=sub)
        elif request.method == "PATCH":
            kinds: dict[str, Literal["merge", "strategic", "json"]] = {
                "application/json-patch+json": "json",
                "application/merge-patch+json": "merge",
                "application/strategic-merge-patch+json": "strategic",
            }
            kind = kinds[request.content_type]
            body = await fake.patch(
                info, name, await request.json(), namespace, patch_type=kind, subresource=sub
            )
        else:
            await request.read()
            body = await fake.delete(info, name, namespace)
            if body is None:
                body = {"kind": "Status", "apiVersion": "v1", "status": "Success"}
    except ApiError as err:
        return web.json_response(err.to_status(), status=err.code)
    return web.json_response(body)


async def _watch(
    request: web.Request, fake: FakeApi, info: Any, namespace: str | None
) -> web.StreamResponse:
    q = request.query
    stream = fake.watch(
        info,
        namespace,
        resource_version=q.get("resourceVersion", ""),
        label_selector=q.get("labelSelector", ""),
    )
    response = web.StreamResponse()
    response.content_type = "application/json"
    await response.prepare(request)
    try:
        async for kind, obj in stream:
            line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            # Split each event across two writes: the client must reassemble lines.
            await response.write(line[:7])
            await response.write(line[7:])
    except ApiError as err:
        line = json.dumps({"type": "ERROR", "object": err.to_status()}).encode() + b"\n"
        await response.write(line)
    return response


def make_app(fake: FakeApi) -> web.Application:
    app = web.Application()
    app[FAKE] = fake
    app[SEEN] = []
    app.router.add_route("*", "/{tail:.*}", handle)
    return app

"""URL routing for the served resources: one catch-all per API root, dispatched by target.

aiohttp's router cannot tell ``/api/v1/namespaces/x/pods`` (pods in x) from
``/api/v1/namespaces/x/status`` (a namespace's status) by pattern, so every resource path goes
to :func:`handle` which parses the target once (the auth middleware already did) and picks the
handler for its verb and subresource.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.api.resources import REVIEW_GROUPS
from k3py.cluster.server import nodeproxy, podproxy, portforward, watch
from k3py.cluster.server.rest import (
    delete,
    eviction,
    read,
    reviews,
    serviceaccounts,
    subresources,
    write,
)
from k3py.cluster.server.rest.http import RequestTarget, parse_target

Handler = Callable[[web.Request, RequestTarget], Awaitable[web.StreamResponse]]

_VERBS: dict[str, Handler] = {
    "get": read.get,
    "list": read.list_,
    "watch": watch.serve_watch,
    "create": write.create,
    "update": write.update,
    "patch": write.patch,
    "delete": delete.delete,
    "deletecollection": delete.delete_collection,
}
# Subresources served like the object itself (GET returns the whole object).
_OBJECT_LIKE = {"status": ("get", "update", "patch"), "finalize": ("update",)}


def _pick(target: RequestTarget, request: web.Request) -> Handler:
    sub = target.subresource
    if target.info.plural == "bindings":
        if target.verb != "create":
            raise status.method_not_allowed(request.method, request.path)
        return subresources.binding
    if target.info.group in REVIEW_GROUPS:
        if target.verb != "create" or sub:
            raise status.method_not_allowed(request.method, request.path)
        return reviews.review
    if not sub:
        return _VERBS[target.verb]
    if sub in _OBJECT_LIKE:
        if target.verb not in _OBJECT_LIKE[sub]:
            raise status.method_not_allowed(request.method, request.path)
        return _VERBS[target.verb]
    if sub == "scale":
        return subresources.scale
    if target.info.plural == "pods" and sub in ("log", "exec", "attach"):
        return {"log": nodeproxy.pod_log, "exec": nodeproxy.pod_exec}.get(sub, nodeproxy.pod_attach)
    if target.info.plural == "pods" and sub == "portforward":
        return portforward.pod_portforward
    if target.info.plural in ("pods", "services") and sub == "proxy":
        return podproxy.pod_proxy if target.info.plural == "pods" else podproxy.service_proxy
    if target.info.plural == "serviceaccounts" and sub == "token":
        if target.verb != "create":
            raise status.method_not_allowed(request.method, request.path)
        return serviceaccounts.create_token
    if sub in ("binding", "eviction"):
        if target.verb != "create":
            raise status.method_not_allowed(request.method, request.path)
        return subresources.binding if sub == "binding" else eviction.evict
    return subresources.unavailable


async def handle(request: web.Request) -> web.StreamResponse:
    target = parse_target(request)
    return await _pick(target, request)(request, target)


def add_routes(app: web.Application) -> None:
    app.router.add_route("*", "/api/{version}/{tail:.+}", handle)
    app.router.add_route("*", "/apis/{group}/{version}/{tail:.+}", handle)

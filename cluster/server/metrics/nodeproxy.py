"""``/api/v1/nodes/NAME/proxy/metrics``: a node's agent metrics, fetched through its tunnel.

Kubernetes proxies this path to the kubelet's port; here the agent has no inbound port, so the
server opens a ``metrics`` stream on the node's tunnel and returns the agent's Prometheus text.
Only ``metrics`` is proxied (the kubelet's other endpoints have no counterpart in the agent).

The generic request parser knows only the registry's resources, so :func:`request_attributes`
tells the authorizer what these paths (and the ``metrics.k8s.io`` group's) ask: a node proxy
is ``get nodes/proxy``, which only admins may do, as in Kubernetes, where the Node authorizer
does not grant it to nodes.
"""

from __future__ import annotations

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.api.usage import METRICS_STREAM
from k3py.cluster.server.auth import RequestAttributes
from k3py.cluster.server.metrics.resource_api import GROUP
from k3py.cluster.server.metrics.resource_api import PREFIX as METRICS_API
from k3py.cluster.server.tunnel import TUNNELS

NODES_PATH = "/api/v1/nodes/"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def node_metrics(request: web.Request) -> web.StreamResponse:
    name, path = request.match_info["name"], request.match_info["path"]
    if path.strip("/") != "metrics":
        raise status.ApiError(
            404, "NotFound", f"the agent of node {name} serves only /metrics through its proxy"
        )
    hub = request.app.get(TUNNELS)
    node_tunnel = hub.get(name) if hub is not None else None
    if node_tunnel is None:
        raise status.ApiError(
            503,
            "ServiceUnavailable",
            f"the agent of node {name} is not connected to this server; check that it runs",
        )
    stream = await node_tunnel.open(METRICS_STREAM, {})
    try:
        body = b"".join([chunk.payload async for chunk in stream.output()])
    finally:
        await stream.close()
    if stream.error:
        raise status.ApiError(
            int(stream.error.get("code") or 502),
            str(stream.error.get("reason") or "BadGateway"),
            str(stream.error.get("message") or f"node {name} did not send its metrics"),
        )
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def request_attributes(path: str, method: str) -> RequestAttributes | None:
    """What a node proxy or metrics API request asks (None: a path the registry parses)."""
    verb = "get" if method in ("GET", "HEAD") else method.lower()
    if path.startswith(NODES_PATH):
        name, _, rest = path[len(NODES_PATH) :].partition("/")
        if rest.startswith("proxy/") or rest == "proxy":
            return RequestAttributes(
                verb=verb, group="", resource="nodes", subresource="proxy", name=name
            )
        return None
    if not path.startswith(METRICS_API + "/"):
        return None
    segments = path[len(METRICS_API) + 1 :].split("/")
    namespace = ""
    if len(segments) >= 3 and segments[0] == "namespaces":
        namespace, segments = segments[1], segments[2:]
    name = segments[1] if len(segments) > 1 else ""
    if verb == "get" and not name:
        verb = "list"
    return RequestAttributes(
        verb=verb, group=GROUP, resource=segments[0], namespace=namespace, name=name
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(NODES_PATH + "{name}/proxy/{path:.*}", node_metrics)

"""``pods/proxy`` and ``services/proxy``: HTTP to a pod, carried through its node's tunnel.

``/api/v1/namespaces/NS/pods/[scheme:]NAME[:PORT]/proxy/PATH`` and
``…/services/[scheme:]NAME[:PORT]/proxy/PATH`` (what ``kubectl proxy`` users open) send the
request to the pod's IP, or to a ready endpoint of the Service, through a ``portforward``
tunnel stream to the pod's node (:mod:`.portforward`), so nodes behind NAT are reachable.
The request goes out as HTTP/1.0 with ``Connection: close``, which makes the answer end with
the connection (no chunked framing to undo); its status, headers and body come back as they
are, less hop-by-hop headers. Only ``http`` is proxied: https to pods needs the pod's CA,
which the server does not have.
"""

from __future__ import annotations

import random
from typing import Any

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.api.resources import by_kind
from k3py.cluster.server.portforward import open_port
from k3py.cluster.server.rest.context import REST
from k3py.cluster.server.rest.http import RequestTarget, read_body
from k3py.cluster.server.tunnel import TUNNELS, NodeStream, NodeTunnel

PODS = by_kind("v1", "Pod")
ENDPOINTS = by_kind("v1", "Endpoints")
SERVICES = by_kind("v1", "Service")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Not passed on to the pod: the client's credentials are for the API server, and the length
# is the server's to state.
_REQUEST_SKIP = _HOP_BY_HOP | {"host", "authorization", "content-length"}
_HEAD_LIMIT = 64 * 1024


def _split_name(text: str) -> tuple[str, str, str]:
    """``[scheme:]name[:port]`` → (scheme, name, port)."""
    parts = text.split(":")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        if parts[0] in ("http", "https"):
            return parts[0], parts[1], ""
        return "", parts[0], parts[1]
    return "", text, ""


def _tail(request: web.Request) -> str:
    """The path after ``/proxy`` (``/`` when empty), with the query string."""
    path = request.raw_path.split("?", 1)[0]
    _, _, rest = path.partition("/proxy")
    rest = rest or "/"
    return rest + (f"?{request.query_string}" if request.query_string else "")


def _tunnel(request: web.Request, node: str) -> NodeTunnel:
    hub = request.app.get(TUNNELS)
    node_tunnel = hub.get(node) if hub is not None else None
    if node_tunnel is None:
        raise status.ApiError(
            503,
            "ServiceUnavailable",
            f"the agent of node {node} is not connected to this server; check that it runs",
        )
    return node_tunnel


def _container_port(pod: dict[str, Any], port: str) -> int:
    if not port:
        return 80
    if port.isdigit():
        return int(port)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for item in container.get("ports") or []:
            if item.get("name") == port:
                return int(item.get("containerPort", 0))
    raise status.bad_request(f"pod has no port named {port!r}")


async def pod_proxy(request: web.Request, target: RequestTarget) -> web.StreamResponse:
    assert PODS is not None
    assert target.name is not None
    scheme, name, port = _split_name(target.name)
    if scheme == "https":
        raise status.bad_request("proxying to pods over https is not supported")
    pod = await request.app[REST].objects.get(PODS, target.namespace, name)
    node = (pod.get("spec") or {}).get("nodeName")
    if not node or not (pod.get("status") or {}).get("podIP"):
        raise status.ApiError(
            503, "ServiceUnavailable", f'pod "{name}" has no address yet: it is not running'
        )
    stream = await _open(request, str(node), pod, _container_port(pod, port))
    return await _relay(request, stream)


def _service_port(service: dict[str, Any], port: str) -> dict[str, Any]:
    ports = (service.get("spec") or {}).get("ports") or []
    for item in ports:
        if not port and len(ports) == 1:
            return dict(item)
        if port and (port == item.get("name") or port == str(item.get("port"))):
            return dict(item)
    name = (service.get("metadata") or {}).get("name", "")
    raise status.ApiError(503, "ServiceUnavailable", f'no port {port!r} for service "{name}"')


async def service_proxy(request: web.Request, target: RequestTarget) -> web.StreamResponse:
    assert SERVICES is not None
    assert ENDPOINTS is not None
    assert target.name is not None
    scheme, name, port = _split_name(target.name)
    if scheme == "https":
        raise status.bad_request("proxying to services over https is not supported")
    objects = request.app[REST].objects
    service = await objects.get(SERVICES, target.namespace, name)
    port_name = _service_port(service, port).get("name") or ""
    endpoints = await objects.get_or_none(ENDPOINTS, target.namespace, name) or {}
    candidates: list[tuple[dict[str, Any], int]] = []
    for subset in endpoints.get("subsets") or []:
        matching = [p for p in subset.get("ports") or [] if (p.get("name") or "") == port_name]
        if not matching:
            continue
        for address in subset.get("addresses") or []:
            candidates.append((address, int(matching[0].get("port", 0))))
    if not candidates:
        raise status.ApiError(
            503, "ServiceUnavailable", f'no endpoints available for service "{name}"'
        )
    address, target_port = random.choice(candidates)  # noqa: S311 (load spreading)
    node = str(address.get("nodeName") or "")
    ref = address.get("targetRef") or {}
    pod = {
        "metadata": {
            "namespace": target.namespace,
            "name": ref.get("name", ""),
            "uid": ref.get("uid", ""),
        },
        "status": {"podIP": address.get("ip", "")},
    }
    stream = await _open(request, node, pod, target_port)
    return await _relay(request, stream)


async def _open(request: web.Request, node: str, pod: dict[str, Any], port: int) -> NodeStream:
    return await open_port(_tunnel(request, node), pod, port)


def _request_head(request: web.Request, body: bytes) -> bytes:
    lines = [f"{request.method} {_tail(request)} HTTP/1.0", "Connection: close"]
    for key, value in request.headers.items():
        if key.lower() not in _REQUEST_SKIP:
            lines.append(f"{key}: {value}")
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _relay(request: web.Request, stream: NodeStream) -> web.StreamResponse:
    try:
        limit = request.app[REST].settings.max_request_body_bytes
        body = await read_body(request, limit)
        await stream.stdin(_request_head(request, body) + body)
        await stream.close_stdin()
        head = bytearray()
        chunks = stream.output()
        response: web.StreamResponse | None = None
        async for chunk in chunks:
            if response is None:
                head += chunk.payload
                end = head.find(b"\r\n\r\n")
                if end < 0:
                    if len(head) > _HEAD_LIMIT:
                        raise status.ApiError(502, "BadGateway", "the pod's answer is not HTTP")
                    continue
                response = _response(bytes(head[:end]))
                await response.prepare(request)
                await response.write(bytes(head[end + 4 :]))
            else:
                await response.write(chunk.payload)
        if response is None:
            message = str((stream.error or {}).get("message") or "the pod sent no answer")
            raise status.ApiError(502, "BadGateway", message)
        await response.write_eof()
        return response
    finally:
        await stream.close()


def _response(head: bytes) -> web.StreamResponse:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    try:
        code = int(parts[1])
    except (IndexError, ValueError):
        raise status.ApiError(502, "BadGateway", "the pod's answer is not HTTP") from None
    response = web.StreamResponse(status=code, reason=parts[2] if len(parts) > 2 else None)
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() not in _HOP_BY_HOP:
            response.headers.add(key.strip(), value.strip())
    return response

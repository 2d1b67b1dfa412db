"""``metrics.k8s.io/v1beta1``: NodeMetrics and PodMetrics, so ``kubectl top`` works.

metrics-server serves this group in Kubernetes by scraping every kubelet; here the server asks
each connected agent for its usage summary over the agent's tunnel (:mod:`k3py.cluster.api.usage`)
when a client lists metrics, so nothing is stored and the server's memory does not grow with
the cluster. Agents sample every few seconds; a node that does not answer within a few seconds
is left out, as metrics-server leaves out a kubelet it cannot scrape. The group is announced in
``/apis`` (as an APIService would make it) and described by its own discovery documents.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.selectors import LabelSelector
from k3py.cluster.api.usage import USAGE_STREAM, cpu_quantity, memory_quantity, window_text
from k3py.cluster.server.rest.context import REST
from k3py.cluster.server.rest.http import json_response
from k3py.cluster.server.tunnel import TUNNELS, NodeTunnel

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
PREFIX = f"/apis/{GROUP}/{VERSION}"
ASK_TIMEOUT = 5.0
NODES = by_kind("v1", "Node")
PODS = by_kind("v1", "Pod")

Object = dict[str, Any]


def api_group() -> Object:
    version = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {"name": GROUP, "versions": [version], "preferredVersion": version}


def resource_list() -> Object:
    verbs = ["get", "list"]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {
                "name": "nodes",
                "singularName": "",
                "namespaced": False,
                "kind": "NodeMetrics",
                "verbs": verbs,
            },
            {
                "name": "pods",
                "singularName": "",
                "namespaced": True,
                "kind": "PodMetrics",
                "verbs": verbs,
            },
        ],
    }


async def _ask(node_tunnel: NodeTunnel) -> Object | None:
    try:
        async with asyncio.timeout(ASK_TIMEOUT):
            stream = await node_tunnel.open(USAGE_STREAM, {})
            try:
                body = b"".join([chunk.payload async for chunk in stream.output()])
            finally:
                await stream.close()
        summary = json.loads(body)
    except (TimeoutError, status.ApiError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


async def summaries(request: web.Request, nodes: list[str] | None = None) -> dict[str, Object]:
    """The usage summary of each connected node (of ``nodes`` when given) that answered."""
    hub = request.app.get(TUNNELS)
    if hub is None:
        return {}
    wanted = hub.nodes if nodes is None else [n for n in nodes if hub.get(n) is not None]
    tunnels = [t for t in (hub.get(n) for n in wanted) if t is not None]
    answers = await asyncio.gather(*(_ask(t) for t in tunnels))
    return {t.node: a for t, a in zip(tunnels, answers, strict=True) if a is not None}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Object) -> Object:
    meta = obj.get("metadata") or {}
    out: Object = {"name": meta.get("name", ""), "creationTimestamp": _now()}
    if meta.get("namespace"):
        out["namespace"] = meta["namespace"]
    if meta.get("labels"):
        out["labels"] = meta["labels"]
    return out


def _usage(sample: Object) -> Object:
    return {
        "cpu": cpu_quantity(float(sample.get("cpu") or 0)),
        "memory": memory_quantity(float(sample.get("memory") or 0)),
    }


def _selector(request: web.Request) -> LabelSelector:
    return LabelSelector.parse(request.query.get("labelSelector", ""))


def _list(kind: str, items: list[Object]) -> Object:
    return {
        "kind": f"{kind}List",
        "apiVersion": GROUP_VERSION,
        "metadata": {"selfLink": ""},
        "items": items,
    }


async def _node_metrics(request: web.Request, name: str | None) -> list[Object]:
    assert NODES is not None
    objects = request.app[REST].objects
    if name is not None:
        nodes = [await objects.get(NODES, None, name)]
    else:
        selector = _selector(request)
        nodes = [
            n
            for n in await objects.list_all(NODES, None)
            if selector.matches((n.get("metadata") or {}).get("labels"))
        ]
    names = [str((n.get("metadata") or {}).get("name")) for n in nodes]
    reported = await summaries(request, names)
    items = []
    for node in nodes:
        summary = reported.get(str(node["metadata"]["name"]))
        sample = (summary or {}).get("node")
        if not isinstance(sample, dict):
            continue
        items.append(
            {
                "kind": "NodeMetrics",
                "apiVersion": GROUP_VERSION,
                "metadata": _meta(node),
                "timestamp": sample.get("timestamp") or _now(),
                "window": window_text(float(sample.get("window") or 0)),
                "usage": _usage(sample),
            }
        )
    return items


async def _pod_metrics(
    request: web.Request, namespace: str | None, name: str | None
) -> list[Object]:
    assert PODS is not None
    objects = request.app[REST].objects
    if name is not None:
        pods = [await objects.get(PODS, namespace, name)]
    else:
        selector = _selector(request)
        pods = [
            p
            for p in await objects.list_all(PODS, namespace)
            if selector.matches((p.get("metadata") or {}).get("labels"))
        ]
    nodes = sorted({str((p.get("spec") or {}).get("nodeName")) for p in pods} - {"None", ""})
    samples: dict[tuple[str, str], Object] = {}
    for summary in (await summaries(request, nodes)).values():
        for sample in summary.get("pods") or []:
            if isinstance(sample, dict):
                samples[(str(sample.get("namespace")), str(sample.get("name")))] = sample
    items = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        sample = samples.get((str(meta.get("namespace")), str(meta.get("name"))))
        if sample is None:
            continue
        items.append(
            {
                "kind": "PodMetrics",
                "apiVersion": GROUP_VERSION,
                "metadata": _meta(pod),
                "timestamp": sample.get("timestamp") or _now(),
                "window": window_text(float(sample.get("window") or 0)),
                "containers": [
                    {"name": c.get("name", ""), "usage": _usage(c)}
                    for c in sample.get("containers") or []
                    if isinstance(c, dict)
                ],
            }
        )
    return items


async def _group(request: web.Request) -> web.Response:
    return json_response({"kind": "APIGroup", "apiVersion": "v1", **api_group()})


async def _resources(request: web.Request) -> web.Response:
    return json_response(resource_list())


async def _nodes(request: web.Request) -> web.Response:
    name = request.match_info.get("name")
    items = await _node_metrics(request, name)
    if name is None:
        return json_response(_list("NodeMetrics", items))
    if not items:
        raise status.not_found(GROUP, "nodes", name)
    return json_response(items[0])


async def _pods(request: web.Request) -> web.Response:
    namespace = request.match_info.get("namespace")
    name = request.match_info.get("name")
    items = await _pod_metrics(request, namespace, name)
    if name is None:
        return json_response(_list("PodMetrics", items))
    if not items:
        raise status.not_found(GROUP, "pods", name)
    return json_response(items[0])


def add_routes(app: web.Application) -> None:
    """The group's discovery and resources (more specific than the generic ``/apis`` routes)."""
    app.router.add_get(f"/apis/{GROUP}", _group)
    app.router.add_get(PREFIX, _resources)
    app.router.add_get(f"{PREFIX}/nodes", _nodes)
    app.router.add_get(f"{PREFIX}/nodes/{{name}}", _nodes)
    app.router.add_get(f"{PREFIX}/pods", _pods)
    app.router.add_get(f"{PREFIX}/namespaces/{{namespace}}/pods", _pods)
    app.router.add_get(f"{PREFIX}/namespaces/{{namespace}}/pods/{{name}}", _pods)

"""Subresources beyond status: ``/scale`` (autoscaling/v1 Scale), pod ``/binding``, and the
node subresources no node serves yet (503). Eviction is :mod:`.eviction`; the tunnel ones
(logs, exec, port-forward, proxy) are the server's node proxies.

``/scale`` presents a Deployment's or ReplicaSet's replicas as a Scale and writes a changed
``spec.replicas`` back to the object (a Scale's resourceVersion is the object's, so it is a
precondition as usual). A Binding sets a pending Pod's ``spec.nodeName`` once, as the
scheduler does through kube-apiserver.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.api.bounded import WorkBudget
from k3py.cluster.api.customresources import (
    CustomResourceInfo,
    custom_scale,
    scale_object,
    set_path_value,
)
from k3py.cluster.api.patch import apply_json_patch, apply_merge_patch
from k3py.cluster.api.resources import ResourceInfo, by_kind
from k3py.cluster.server.rest import engine
from k3py.cluster.server.rest.context import REST, RestContext
from k3py.cluster.server.rest.http import (
    RequestTarget,
    decode_body,
    decode_object,
    json_response,
    media_type,
    read_body,
)
from k3py.cluster.server.rest.objects import CONFLICT_MESSAGE, Object
from k3py.cluster.server.rest.typecheck import INT32_RANGE

PODS = by_kind("v1", "Pod")
_RETRIES = 8


def selector_string(selector: dict[str, Any] | None) -> str:
    """A LabelSelector object in the text form of ``labelSelector=`` (Scale.status.selector)."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def to_scale(obj: Object) -> Object:
    spec = obj.get("spec") or {}
    replicas = spec.get("replicas")
    return scale_object(
        obj,
        1 if replicas is None else replicas,
        {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": selector_string(spec.get("selector")),
        },
    )


def _scale_replicas(scale: Any) -> int:
    if not isinstance(scale, dict):
        raise status.bad_request("the body must be an autoscaling/v1 Scale")
    if scale.get("kind", "Scale") != "Scale" or scale.get("apiVersion", "autoscaling/v1") not in (
        "autoscaling/v1",
    ):
        raise status.bad_request(
            f"the object provided is a {scale.get('kind')} in {scale.get('apiVersion')}, but"
            " this endpoint serves Scale in autoscaling/v1"
        )
    spec = scale.get("spec")
    replicas = spec.get("replicas", 0) if isinstance(spec, dict) else spec
    if (
        not isinstance(replicas, int)
        or isinstance(replicas, bool)
        or not 0 <= replicas <= INT32_RANGE[1]
    ):
        meta = scale.get("metadata")
        name = str(meta.get("name", "")) if isinstance(meta, dict) else ""
        raise status.invalid(
            "autoscaling",
            "Scale",
            name,
            [
                status.Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {replicas!r}: must be an int32 greater than or equal to 0",
                    "spec.replicas",
                )
            ],
        )
    return replicas


def _scale_of(info: ResourceInfo, obj: Object) -> Object:
    if isinstance(info, CustomResourceInfo) and info.scale is not None:
        return custom_scale(info, obj)
    return to_scale(obj)


async def scale(request: web.Request, target: RequestTarget) -> web.Response:
    ctx = request.app[REST]
    info = target.info
    assert target.name is not None
    if target.verb == "get":
        obj = await ctx.objects.get(info, target.namespace, target.name)
        return json_response(_scale_of(info, obj))
    if target.verb not in ("update", "patch"):
        raise status.method_not_allowed(request.method, request.path)
    raw = await read_body(request, ctx.settings.max_request_body_bytes)
    patch_type = media_type(request)
    body = decode_body(raw, "application/json" if target.verb == "patch" else patch_type)
    budget = WorkBudget(ctx.settings.max_request_body_bytes, ctx.settings.request_timeout_seconds)
    for _ in range(_RETRIES):
        obj = await ctx.objects.get(info, target.namespace, target.name)
        current = _scale_of(info, obj)
        if target.verb == "update":
            wanted = body
        elif patch_type == "application/json-patch+json":
            wanted = apply_json_patch(copy.deepcopy(current), body, budget)
        elif patch_type in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ):
            wanted = apply_merge_patch(copy.deepcopy(current), body, budget)
        else:
            raise status.unsupported_media_type(patch_type)
        replicas = _scale_replicas(wanted)
        given = ((wanted.get("metadata") or {}).get("resourceVersion")) or ""
        if given and given != obj["metadata"]["resourceVersion"]:
            raise status.conflict(info.group, info.plural, target.name, CONFLICT_MESSAGE)
        new = copy.deepcopy(obj)
        if isinstance(info, CustomResourceInfo) and info.scale is not None:
            set_path_value(new, info.scale.spec_replicas, replicas)
        else:
            new.setdefault("spec", {})["replicas"] = replicas
        try:
            stored = await engine.update_object(ctx, info, new, obj)
        except status.ApiError as err:
            if err.reason == "Conflict" and not given:
                continue
            raise
        return json_response(_scale_of(info, stored))
    raise status.conflict(info.group, info.plural, target.name, CONFLICT_MESSAGE)


async def bind(ctx: RestContext, namespace: str, pod_name: str, binding: Object) -> None:
    """Assign a pending Pod to the node a Binding names (once; 409 if already bound)."""
    assert PODS is not None
    target = binding.get("target")
    node = target.get("name") if isinstance(target, dict) else None
    if not node or not isinstance(node, str):
        raise status.invalid(
            "",
            "Binding",
            pod_name,
            [status.Cause("FieldValueRequired", "Required value", "target.name")],
        )
    for _ in range(_RETRIES):
        pod = await ctx.objects.get(PODS, namespace, pod_name)
        spec = pod.setdefault("spec", {})
        if pod["metadata"].get("deletionTimestamp"):
            raise status.conflict("", "pods", pod_name, "pod is being deleted, cannot be assigned")
        if spec.get("nodeName"):
            raise status.conflict(
                "",
                "pods",
                pod_name,
                f"pod {pod_name} is already assigned to node {spec['nodeName']!r}",
            )
        expected = int(pod["metadata"]["resourceVersion"])
        spec["nodeName"] = node
        conditions = [
            c
            for c in (pod.setdefault("status", {}).get("conditions") or [])
            if c.get("type") != "PodScheduled"
        ]
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": ctx.now(),
            }
        )
        pod["status"]["conditions"] = conditions
        try:
            # Bypasses the update path on purpose: spec.nodeName is immutable to updates.
            await ctx.objects.update(PODS, pod, expected)
        except status.ApiError as err:
            if err.reason == "Conflict":
                continue
            raise
        return
    raise status.conflict("", "pods", pod_name, CONFLICT_MESSAGE)


def _created(info: ResourceInfo, name: str) -> web.Response:
    return json_response(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": name, "kind": info.plural},
            "code": 201,
        },
        code=201,
    )


async def binding(request: web.Request, target: RequestTarget) -> web.Response:
    """``POST pods/<name>/binding`` and ``POST bindings``."""
    ctx = request.app[REST]
    raw = await read_body(request, ctx.settings.max_request_body_bytes)
    body = decode_object(raw, media_type(request))
    meta = body.get("metadata")
    name = target.name or (meta.get("name") if isinstance(meta, dict) else None)
    if not name or not isinstance(name, str):
        raise status.bad_request("a Binding needs metadata.name (the pod's name)")
    assert target.namespace is not None
    await bind(ctx, target.namespace, name, body)
    return _created(target.info, name)


async def unavailable(request: web.Request, target: RequestTarget) -> web.Response:
    raise status.ApiError(
        503,
        "ServiceUnavailable",
        f"{target.info.plural}/{target.subresource} is not served by this server",
    )

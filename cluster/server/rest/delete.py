"""Delete and deletecollection: grace periods, preconditions, finalizers and propagation.

An object is removed at once unless something must happen first: a Pod bound to a node gets a
grace period (``deletionTimestamp`` in the future, the node's agent finishes the deletion), an
object with finalizers keeps existing with a ``deletionTimestamp`` until they are removed, a
Namespace turns Terminating while the collector empties it, and ``Foreground`` propagation
adds the ``foregroundDeletion`` finalizer until the owner's dependents are gone. ``Background``
removes the owner first and queues its dependents for the collector; ``Orphan`` releases the
dependents (drops their ownerReference) before the owner goes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.api.resources import RESOURCES, ResourceInfo
from k3py.cluster.server.rest import engine
from k3py.cluster.server.rest.access import admission
from k3py.cluster.server.rest.context import REST, CollectorWork, RestContext, timestamp
from k3py.cluster.server.rest.http import (
    RequestTarget,
    decode_body,
    json_response,
    media_type,
    read_body,
)
from k3py.cluster.server.rest.objects import Object
from k3py.cluster.server.rest.read import list_objects, list_options

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
_POLICIES = ("Background", "Foreground", "Orphan")
_RETRIES = 8
_DEFAULT_POD_GRACE = 30


@dataclass(frozen=True)
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None
    uid: str = ""  # preconditions.uid
    resource_version: str = ""  # preconditions.resourceVersion
    dry_run: bool = False


def _invalid_options(field: str, message: str) -> status.ApiError:
    return status.invalid(
        "meta.k8s.io", "DeleteOptions", "", [status.Cause("FieldValueInvalid", message, field)]
    )


def delete_options(request: web.Request, body: Any) -> DeleteOptions:
    """DeleteOptions from the body (if any) and the query, as client-go sends either."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise status.bad_request("the body of a delete must be a DeleteOptions object")
    query = request.query
    grace: Any = body.get("gracePeriodSeconds")
    if "gracePeriodSeconds" in query:
        grace = query["gracePeriodSeconds"]
    if grace is not None:
        try:
            grace = int(grace)
        except (TypeError, ValueError):
            raise _invalid_options("gracePeriodSeconds", f"Invalid value: {grace!r}") from None
        grace = max(grace, 0)
    policy = query.get("propagationPolicy") or body.get("propagationPolicy")
    orphan = query.get("orphanDependents", body.get("orphanDependents"))
    if orphan is not None and policy is None:
        policy = "Orphan" if str(orphan).lower() in ("true", "1") else "Background"
    if policy is not None and policy not in _POLICIES:
        raise _invalid_options(
            "propagationPolicy",
            f'Unsupported value: "{policy}": supported values: "Foreground", "Background",'
            ' "Orphan"',
        )
    preconditions = body.get("preconditions") or {}
    if not isinstance(preconditions, dict):
        raise status.bad_request("preconditions must be an object")
    dry_run = list(query.getall("dryRun", [])) + list(body.get("dryRun") or [])
    for value in dry_run:
        if value != "All":
            raise status.bad_request(f'Invalid dryRun value "{value}"')
    return DeleteOptions(
        grace_period_seconds=grace,
        propagation_policy=policy,
        uid=str(preconditions.get("uid") or ""),
        resource_version=str(preconditions.get("resourceVersion") or ""),
        dry_run=bool(dry_run),
    )


def _check_preconditions(info: ResourceInfo, obj: Object, opts: DeleteOptions) -> None:
    meta = obj["metadata"]
    name = meta.get("name", "")
    if opts.uid and opts.uid != meta.get("uid"):
        raise status.conflict(
            info.group,
            info.plural,
            name,
            f"Precondition failed: UID in precondition: {opts.uid}, UID in object meta:"
            f" {meta.get('uid')}",
        )
    if opts.resource_version and opts.resource_version != meta.get("resourceVersion"):
        raise status.conflict(
            info.group,
            info.plural,
            name,
            "Precondition failed: ResourceVersion in precondition:"
            f" {opts.resource_version}, ResourceVersion in object meta:"
            f" {meta.get('resourceVersion')}",
        )


def _grace_period(info: ResourceInfo, obj: Object, opts: DeleteOptions) -> int:
    """Seconds a deletion waits; only Pods that may be running on a node have one."""
    if info.kind != "Pod":
        return 0
    spec = obj.get("spec") or {}
    phase = (obj.get("status") or {}).get("phase")
    if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
        return 0
    if opts.grace_period_seconds is not None:
        return opts.grace_period_seconds
    default = spec.get("terminationGracePeriodSeconds")
    return int(default) if isinstance(default, int) else _DEFAULT_POD_GRACE


def dependents_of(
    uid: str, objects: list[tuple[ResourceInfo, Object]]
) -> list[tuple[ResourceInfo, Object]]:
    return [
        (info, obj)
        for info, obj in objects
        if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
    ]


async def objects_in_scope(
    ctx: RestContext, namespace: str | None
) -> list[tuple[ResourceInfo, Object]]:
    """Every object that an owner in ``namespace`` (None: cluster-scoped) may own."""
    found: list[tuple[ResourceInfo, Object]] = []
    for info in (*RESOURCES, *ctx.custom.storage_infos()):
        if "list" not in info.verbs or (namespace is not None and not info.namespaced):
            continue
        found.extend((info, obj) for obj in await ctx.objects.list_all(info, namespace))
    return found


async def _orphan_dependents(ctx: RestContext, info: ResourceInfo, owner: Object) -> None:
    uid = owner["metadata"].get("uid")
    namespace = owner["metadata"].get("namespace") if info.namespaced else None

    def release(obj: Object) -> Object | None:
        refs = obj["metadata"].get("ownerReferences") or []
        kept = [ref for ref in refs if ref.get("uid") != uid]
        if len(kept) == len(refs):
            return None
        if kept:
            obj["metadata"]["ownerReferences"] = kept
        else:
            obj["metadata"].pop("ownerReferences", None)
        return obj

    for dep_info, dep in dependents_of(str(uid), await objects_in_scope(ctx, namespace)):
        meta = dep["metadata"]
        await engine.mutate(ctx, dep_info, meta.get("namespace"), meta["name"], release)


async def delete_object(
    ctx: RestContext, info: ResourceInfo, obj: Object, opts: DeleteOptions
) -> tuple[Object, bool]:
    """Delete ``obj`` (as read); returns its resulting state and whether it is gone now."""
    _check_preconditions(info, obj, opts)
    meta = obj["metadata"]
    expected = int(meta["resourceVersion"])
    finalizers = list(meta.get("finalizers") or [])
    policy = opts.propagation_policy
    if policy is None:
        policy = "Orphan" if ORPHAN in finalizers else "Background"
        if FOREGROUND in finalizers:
            policy = "Foreground"
    grace = _grace_period(info, obj, opts)
    if meta.get("deletionTimestamp"):
        pending = meta.get("deletionGracePeriodSeconds")
        if not pending or grace >= pending:
            return obj, False  # already being deleted; nothing sooner was asked
    if opts.dry_run:
        return obj, not finalizers and grace == 0 and info.kind != "Namespace"
    if policy == "Orphan":
        await _orphan_dependents(ctx, info, obj)
    if policy == "Foreground" and FOREGROUND not in finalizers:
        finalizers.append(FOREGROUND)
    if finalizers or grace > 0 or info.kind == "Namespace":
        pending_obj = copy.deepcopy(obj)
        pmeta = pending_obj["metadata"]
        now = ctx.clock()
        if not pmeta.get("deletionTimestamp") or grace > 0:
            pmeta["deletionTimestamp"] = timestamp(now + timedelta(seconds=grace))
        pmeta["deletionGracePeriodSeconds"] = grace
        if finalizers:
            pmeta["finalizers"] = finalizers
        pmeta["generation"] = int(pmeta.get("generation", 1)) + 1
        if info.kind == "Namespace":
            pending_obj.setdefault("status", {})["phase"] = "Terminating"
        if not finalizers and info.kind != "Namespace" and grace == 0:
            gone = await ctx.objects.delete(info, obj, expected)
            ctx.collector_queue.put_nowait(engine.dependents_work(info, gone, policy))
            return gone, True
        stored = await ctx.objects.update(info, pending_obj, expected)
        if info.kind == "Namespace":
            ctx.collector_queue.put_nowait(CollectorWork("namespace", name=meta["name"]))
        elif policy == "Foreground":
            ctx.collector_queue.put_nowait(engine.dependents_work(info, stored, "Foreground"))
        return stored, False
    gone = await ctx.objects.delete(info, obj, expected)
    if policy != "Orphan":
        ctx.collector_queue.put_nowait(engine.dependents_work(info, gone, "Background"))
    return gone, True


async def delete_with_retries(
    ctx: RestContext,
    info: ResourceInfo,
    namespace: str | None,
    name: str,
    opts: DeleteOptions,
    check: engine.Check | None = None,
) -> tuple[Object, bool]:
    for _ in range(_RETRIES):
        obj = await ctx.objects.get(info, namespace, name)
        if check is not None:
            await check(None, obj)
        try:
            return await delete_object(ctx, info, obj, opts)
        except status.ApiError as err:
            # A concurrent write moved the object on; preconditions are checked again.
            if err.reason != "Conflict" or "Precondition failed" in err.message:
                raise
    raise status.conflict(info.group, info.plural, name, "too many concurrent writers")


# The kinds whose upstream storage sets ``ReturnDeletedObject: true``: a delete that ends the
# object answers with the object, not a ``Status`` (clients parse it as the kind).
RETURNS_DELETED_OBJECT = frozenset({"Pod", "Service", "ServiceAccount", "Namespace"})


def success_status(info: ResourceInfo, obj: Object) -> dict[str, Any]:
    meta = obj["metadata"]
    details = {"name": meta.get("name", ""), "group": info.group, "kind": info.plural}
    if meta.get("uid"):
        details["uid"] = meta["uid"]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


async def _options(request: web.Request) -> DeleteOptions:
    ctx = request.app[REST]
    raw = await read_body(request, ctx.settings.max_request_body_bytes)
    body = decode_body(raw, media_type(request)) if raw.strip() else None
    return delete_options(request, body)


async def delete(request: web.Request, target: RequestTarget) -> web.Response:
    ctx = request.app[REST]
    assert target.name is not None
    opts = await _options(request)
    result, gone = await delete_with_retries(
        ctx, target.info, target.namespace, target.name, opts, admission(request, target)
    )
    if gone and target.info.kind not in RETURNS_DELETED_OBJECT:
        return json_response(success_status(target.info, result))
    return json_response(result)


async def delete_collection(request: web.Request, target: RequestTarget) -> web.Response:
    ctx = request.app[REST]
    info = target.info
    opts = await _options(request)
    selection = list_options(request, info)
    page = await list_objects(ctx, info, target.namespace, selection)
    deleted: list[Object] = []
    for obj in page.items:
        meta = obj["metadata"]
        try:
            result, _ = await delete_with_retries(
                ctx, info, meta.get("namespace"), meta["name"], opts, admission(request, target)
            )
        except status.ApiError as err:
            if err.code == 404:
                continue  # deleted meanwhile
            raise
        deleted.append(result)
    return json_response(
        {
            "kind": info.list_kind,
            "apiVersion": info.api_version,
            "metadata": {"resourceVersion": str(ctx.objects.revision)},
            "items": deleted,
        }
    )

"""Create, update and read-modify-write of objects, independent of HTTP.

The handlers, the bootstrap of default objects and the garbage collector all write through
these functions, so every write gets the same treatment: the kind's strategy, defaulting,
validation (422 with causes), Service allocation, no-op detection (an update that changes
nothing keeps its resourceVersion, which keeps ``kubectl apply`` idempotent), and the end of a
deletion once the last finalizer is gone.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

from k3py.cluster.api import status
from k3py.cluster.api.defaults import apply_defaults
from k3py.cluster.api.resources import ResourceInfo, by_kind
from k3py.cluster.api.validation import validate_create, validate_update
from k3py.cluster.server.rest import (
    customobjects,
    managedfields,
    serviceaccounts,
    services,
    strategy,
)
from k3py.cluster.server.rest.context import CollectorWork, RestContext

Object = dict[str, Any]
# Returns the object to store, or None to leave the stored one as it is.
Mutation = Callable[[Object], Object | None]
# Admission: may raise (403) before the object is stored; args are the new and the old object.
Check = Callable[[Object | None, Object | None], Awaitable[None]]

_RETRIES = 8
SERVICE_ACCOUNTS = by_kind("v1", "ServiceAccount")


def _name(obj: Object) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _raise_invalid(info: ResourceInfo, obj: Object, causes: list[status.Cause]) -> None:
    if causes:
        raise status.invalid(info.group, info.kind, _name(obj), causes)


async def create_object(
    ctx: RestContext,
    info: ResourceInfo,
    obj: Object,
    *,
    dry_run: bool = False,
    check: Check | None = None,
    manager: managedfields.Manager | None = None,
) -> Object:
    """Store a new object (metadata and namespace already in place); returns it as stored."""
    strategy.prepare_for_create(info, obj, ctx.now(), ctx.uids.next())
    if manager is not None and manager.operation == "Apply":
        fields = managedfields.record_apply(info, None, obj, manager, ctx.now())
        obj["metadata"]["managedFields"] = fields
    elif manager is not None:
        managedfields.record_update(info, None, obj, manager, ctx.now())
    if info.kind == "Pod":
        await serviceaccounts.admit_pod(ctx, obj)
    if customobjects.is_custom(info):
        _raise_invalid(info, obj, customobjects.admit_create(info, obj))
    else:
        apply_defaults(info, obj)
        _raise_invalid(info, obj, validate_create(info, obj))
    if check is not None:
        await check(obj, None)
    if dry_run:
        if info.kind == "Service":
            async with ctx.allocation_lock:
                await services.allocate(ctx, obj, None)
        return obj
    if info.kind == "Namespace":
        stored = await ctx.objects.create(info, obj)
        await ensure_service_account(ctx, obj["metadata"]["name"])
        return stored
    if info.kind != "Service":
        return await ctx.objects.create(info, obj)
    async with ctx.allocation_lock:
        await services.allocate(ctx, obj, None)
        return await ctx.objects.create(info, obj)


async def ensure_service_account(ctx: RestContext, namespace: str) -> None:
    """The ``default`` ServiceAccount and the ``kube-root-ca.crt`` ConfigMap of a namespace, as
    the service account controller and the root CA publisher make them."""
    assert SERVICE_ACCOUNTS is not None
    await serviceaccounts.ensure_root_ca(ctx, namespace)
    if await ctx.objects.get_or_none(SERVICE_ACCOUNTS, namespace, "default") is not None:
        return
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": namespace},
    }
    try:
        await create_object(ctx, SERVICE_ACCOUNTS, account)
    except status.ApiError as err:
        if err.reason != "AlreadyExists":
            raise


def _same(a: Object, b: Object) -> bool:
    meta_a = {k: v for k, v in a.get("metadata", {}).items() if k != "resourceVersion"}
    meta_b = {k: v for k, v in b.get("metadata", {}).items() if k != "resourceVersion"}
    if meta_a != meta_b:
        return False
    return {k: v for k, v in a.items() if k != "metadata"} == {
        k: v for k, v in b.items() if k != "metadata"
    }


def deletion_complete(obj: Object) -> bool:
    """An object being deleted whose finalizers are all gone is removed (as the registry does)."""
    meta = obj["metadata"]
    if obj.get("kind") == "Namespace" and (obj.get("spec") or {}).get("finalizers"):
        return False
    return (
        bool(meta.get("deletionTimestamp"))
        and not meta.get("finalizers")
        and not meta.get("deletionGracePeriodSeconds")
    )


async def update_object(
    ctx: RestContext,
    info: ResourceInfo,
    obj: Object,
    old: Object,
    *,
    subresource: str = "",
    dry_run: bool = False,
    check: Check | None = None,
    manager: managedfields.Manager | None = None,
) -> Object:
    """Store ``obj`` over ``old`` (as read, with its resourceVersion) through ``subresource``.

    Raises 409 when ``old`` is no longer the stored version.
    """
    expected = int(old["metadata"]["resourceVersion"])
    new = strategy.prepare_for_update(info, obj, old, subresource)
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
    custom = customobjects.is_custom(info)
    if not custom:
        apply_defaults(info, new)
    _managed_fields(ctx, info, new, old, manager)
    if custom:
        _raise_invalid(info, new, customobjects.admit_update(info, new, old))
    strategy.bump_generation(new, old)
    if not custom:
        _raise_invalid(info, new, validate_update(info, new, old))
    if check is not None:
        await check(new, old)
    if _same(new, old):
        return old
    if dry_run:
        return new
    if deletion_complete(new):
        gone = await ctx.objects.delete(info, new, expected)
        ctx.collector_queue.put_nowait(dependents_work(info, gone))
        return gone
    if info.kind != "Service":
        return await ctx.objects.update(info, new, expected)
    async with ctx.allocation_lock:
        await services.allocate(ctx, new, old)
        return await ctx.objects.update(info, new, expected)


def _managed_fields(
    ctx: RestContext,
    info: ResourceInfo,
    new: Object,
    old: Object,
    manager: managedfields.Manager | None,
) -> None:
    """Field ownership after an update: kept for internal writes, recorded for the API's."""
    previous = old["metadata"].get("managedFields")
    if manager is None:
        if previous:
            new["metadata"]["managedFields"] = copy.deepcopy(previous)
        else:
            new["metadata"].pop("managedFields", None)
    elif manager.entries is not None:
        new["metadata"]["managedFields"] = manager.entries
    else:
        managedfields.record_update(info, old, new, manager, ctx.now())
    if not new["metadata"].get("managedFields"):
        new["metadata"].pop("managedFields", None)


def dependents_work(info: ResourceInfo, owner: Object, policy: str = "Background") -> CollectorWork:
    """The collector's job of deleting what ``owner`` owned."""
    meta = owner["metadata"]
    return CollectorWork(
        "dependents",
        uid=meta.get("uid", ""),
        namespace=meta.get("namespace") if info.namespaced else None,
        name=meta.get("name", ""),
        policy=policy,
        owner=(info.api_version, info.plural, meta.get("name", "")),
    )


async def mutate(
    ctx: RestContext,
    info: ResourceInfo,
    namespace: str | None,
    name: str,
    change: Mutation,
    *,
    subresource: str = "",
) -> Object | None:
    """Read, change and write one object, retrying when someone else wrote in between.

    Returns the stored object, or None if it does not exist (any more).
    """
    for _ in range(_RETRIES):
        old = await ctx.objects.get_or_none(info, namespace, name)
        if old is None:
            return None
        new = change(copy.deepcopy(old))
        if new is None:
            return old
        try:
            return await update_object(ctx, info, new, old, subresource=subresource)
        except status.ApiError as err:
            if err.code == 404:
                return None
            if err.reason != "Conflict":
                raise
    raise status.conflict(
        info.group, info.plural, name, "too many concurrent writers; try again later"
    )

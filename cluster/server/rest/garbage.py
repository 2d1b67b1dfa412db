"""The in-server collector: empties terminating Namespaces and deletes what owners leave behind.

Deletes queue :class:`CollectorWork`; one background task (owned by the application) works the
queue. A terminating Namespace has its contents deleted, and once nothing is left its
``kubernetes`` finalizer is dropped and it is removed. A deleted owner's dependents (objects
whose ownerReferences name its uid) are deleted in the background, or, for ``Foreground``
propagation, deleted first with the owner's ``foregroundDeletion`` finalizer dropped once they
are gone. Work that must wait is retried a second later. At start the collector picks up what
a previous run left unfinished.
"""

from __future__ import annotations

import asyncio
import logging

from k3py.cluster.api.resources import RESOURCES, ResourceInfo, by_kind, by_plural
from k3py.cluster.api.status import ApiError
from k3py.cluster.server.rest import engine
from k3py.cluster.server.rest.context import CollectorWork, RestContext
from k3py.cluster.server.rest.delete import (
    FOREGROUND,
    DeleteOptions,
    delete_object,
    dependents_of,
    objects_in_scope,
)
from k3py.cluster.server.rest.objects import Object
from k3py.cluster.server.rest.strategy import NAMESPACE_FINALIZER

logger = logging.getLogger(__name__)

NAMESPACES = by_kind("v1", "Namespace")
NODES = by_kind("v1", "Node")
_RETRY_DELAY = 1.0


async def run_collector(ctx: RestContext) -> None:
    """Work the collector queue until cancelled; a failed job is logged and retried."""
    loop = asyncio.get_running_loop()
    await resume(ctx)
    while True:
        work = await ctx.collector_queue.get()
        try:
            done = await process(ctx, work)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "garbage collection failed; retrying",
                extra={"fields": {"work": work.kind, "name": work.name}},
            )
            done = False
        if not done:
            loop.call_later(_RETRY_DELAY, ctx.collector_queue.put_nowait, work)


async def resume(ctx: RestContext) -> None:
    """Queue what an earlier run left half done: terminating Namespaces, foreground owners."""
    for info in (*RESOURCES, *ctx.custom.storage_infos()):
        if "list" not in info.verbs:
            continue
        for obj in await ctx.objects.list_all(info, None):
            meta = obj["metadata"]
            if not meta.get("deletionTimestamp"):
                continue
            if info.kind == "Namespace":
                ctx.collector_queue.put_nowait(CollectorWork("namespace", name=meta["name"]))
            elif FOREGROUND in (meta.get("finalizers") or []):
                ctx.collector_queue.put_nowait(engine.dependents_work(info, obj, "Foreground"))


async def process(ctx: RestContext, work: CollectorWork) -> bool:
    """Do one job; False when it must be tried again later."""
    if work.kind == "namespace":
        return await finalize_namespace(ctx, work.name)
    return await collect_dependents(ctx, work)


async def _node_exists(ctx: RestContext, name: str) -> bool:
    assert NODES is not None
    return await ctx.objects.get_or_none(NODES, None, name) is not None


async def finalize_namespace(ctx: RestContext, name: str) -> bool:
    assert NAMESPACES is not None
    ns = await ctx.objects.get_or_none(NAMESPACES, None, name)
    if ns is None or not ns["metadata"].get("deletionTimestamp"):
        return True
    remaining = 0
    for info, obj in await objects_in_scope(ctx, name):
        if "delete" not in info.verbs:
            continue
        remaining += 1
        meta = obj["metadata"]
        options = DeleteOptions(propagation_policy="Background")
        if meta.get("deletionTimestamp"):
            # A pod on a node that no longer exists will never be finished by an agent.
            node = (obj.get("spec") or {}).get("nodeName")
            if info.kind != "Pod" or (node and await _node_exists(ctx, node)):
                continue
            options = DeleteOptions(grace_period_seconds=0, propagation_policy="Background")
        await _delete_logged(ctx, info, obj, options, f"namespace {name} is terminating")
    if remaining and await objects_in_scope(ctx, name):
        return False  # some wait for finalizers or grace periods: check again soon

    def drop_finalizer(current: Object) -> Object | None:
        finalizers = (current.get("spec") or {}).get("finalizers") or []
        if NAMESPACE_FINALIZER not in finalizers:
            return None
        current["spec"]["finalizers"] = [f for f in finalizers if f != NAMESPACE_FINALIZER]
        return current

    # With the last finalizer gone, the update removes the namespace (engine.deletion_complete).
    await engine.mutate(ctx, NAMESPACES, None, name, drop_finalizer, subresource="finalize")
    return await ctx.objects.get_or_none(NAMESPACES, None, name) is None


async def _delete_logged(
    ctx: RestContext, info: ResourceInfo, obj: Object, options: DeleteOptions, why: str
) -> None:
    """Delete one object for the collector; a failure is logged with what was being deleted
    (the next pass retries it). One already gone is what the collector wanted."""
    meta = obj["metadata"]
    namespace, name = meta.get("namespace"), meta.get("name")
    what = f"{info.kind} {namespace}/{name}" if namespace else f"{info.kind} {name}"
    try:
        await delete_object(ctx, info, obj, options)
    except asyncio.CancelledError:
        raise
    except ApiError as err:
        if err.code != 404:
            logger.warning("garbage collection: deleting %s (%s) failed: %s", what, why, err)
    except Exception:
        logger.exception("garbage collection: deleting %s (%s) failed", what, why)


async def _owner_alive(ctx: RestContext, namespace: str | None, ref: dict[str, str]) -> bool:
    api_version = ref.get("apiVersion", "")
    info = by_kind(api_version, ref.get("kind", "")) or ctx.custom.by_kind(
        api_version, ref.get("kind", "")
    )
    if info is None:
        return False
    owner = await ctx.objects.get_or_none(
        info, namespace if info.namespaced else None, ref.get("name", "")
    )
    return owner is not None and owner["metadata"].get("uid") == ref.get("uid")


async def collect_dependents(ctx: RestContext, work: CollectorWork) -> bool:
    scope = await objects_in_scope(ctx, work.namespace)
    dependents = dependents_of(work.uid, scope)
    policy = work.policy
    for info, obj in dependents:
        meta = obj["metadata"]
        others = [r for r in meta.get("ownerReferences") or [] if r.get("uid") != work.uid]
        if others and any([await _owner_alive(ctx, meta.get("namespace"), r) for r in others]):
            await _release(ctx, info, obj, work.uid)
            continue
        if meta.get("deletionTimestamp"):
            continue
        await _delete_logged(
            ctx, info, obj, DeleteOptions(propagation_policy=policy), f"owner {work.uid} is gone"
        )
    if policy != "Foreground":
        return True
    if dependents_of(work.uid, await objects_in_scope(ctx, work.namespace)):
        return False
    api_version, plural, name = work.owner
    group, _, version = api_version.rpartition("/")
    owner_info = by_plural(group, version, plural) or ctx.custom.by_plural(group, version, plural)
    if owner_info is None:
        return True

    def drop_foreground(owner: Object) -> Object | None:
        if owner["metadata"].get("uid") != work.uid:
            return None
        finalizers = owner["metadata"].get("finalizers") or []
        if FOREGROUND not in finalizers:
            return None
        owner["metadata"]["finalizers"] = [f for f in finalizers if f != FOREGROUND]
        return owner

    await engine.mutate(ctx, owner_info, work.namespace, name, drop_foreground)
    return True


async def _release(ctx: RestContext, info: ResourceInfo, obj: Object, uid: str) -> None:
    def release(current: Object) -> Object | None:
        refs = current["metadata"].get("ownerReferences") or []
        kept = [r for r in refs if r.get("uid") != uid]
        if len(kept) == len(refs):
            return None
        current["metadata"]["ownerReferences"] = kept
        return current

    meta = obj["metadata"]
    await engine.mutate(ctx, info, meta.get("namespace"), meta["name"], release)

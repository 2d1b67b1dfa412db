"""Garbage collection of dependents whose owner is gone, the part the API server cannot see.

The API server's collector deletes an owner's dependents when the owner is deleted
(background and foreground propagation, namespace emptying). What it cannot see is a
dependent created *after* its owner went — a controller acting on a cache a moment old — or
left from before a crash. This controller checks the ownerReferences of pods and ReplicaSets
(and of the rest of the workload kinds) as they appear and when an owner disappears: an object
all of whose owners are gone is deleted, one that lost only some owners loses those references.
Absence is confirmed with a GET before anything is deleted.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.api.status import ApiError
from k3py.cluster.client import split_key
from k3py.cluster.server.controllers import podutil
from k3py.cluster.server.controllers.base import (
    DAEMONSETS,
    DEPLOYMENTS,
    JOBS,
    PODS,
    REPLICASETS,
    ControllerContext,
    QueueController,
)

logger = logging.getLogger("k3py.controllers.garbage")

Object = dict[str, Any]
OWNER_KINDS: dict[str, ResourceInfo] = {
    "Deployment": DEPLOYMENTS,
    "ReplicaSet": REPLICASETS,
    "DaemonSet": DAEMONSETS,
    "Job": JOBS,
}
DEPENDENT_KINDS: dict[str, ResourceInfo] = {"Pod": PODS, "ReplicaSet": REPLICASETS}
# Give the API server's own collector the first go at a fresh deletion.
SETTLE_SECONDS = 2.0


class GarbageCollector(QueueController):
    name = "garbagecollector"
    component = "garbage-collector-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.dependents = {kind: ctx.informers.get(info) for kind, info in DEPENDENT_KINDS.items()}
        self.owners = {kind: ctx.informers.get(info) for kind, info in OWNER_KINDS.items()}
        for kind, informer in self.dependents.items():
            informer.add_handler(
                functools.partial(self._check, kind), functools.partial(self._check_changed, kind)
            )
        for informer in self.owners.values():
            informer.add_handler(on_delete=self._owner_deleted)

    def _check(self, kind: str, obj: Object) -> None:
        refs = podutil.meta(obj).get("ownerReferences") or []
        if any(ref.get("kind") in OWNER_KINDS for ref in refs):
            self.queue.add_after(f"{kind}|{_key(obj)}", SETTLE_SECONDS)

    def _check_changed(self, kind: str, old: Object, new: Object) -> None:
        old_refs = podutil.meta(old).get("ownerReferences")
        if old_refs != podutil.meta(new).get("ownerReferences"):
            self._check(kind, new)

    def _owner_deleted(self, owner: Object) -> None:
        uid = podutil.uid_of(owner)
        for kind, informer in self.dependents.items():
            for dependent in informer.by_index("owner", uid):
                self.queue.add_after(f"{kind}|{_key(dependent)}", SETTLE_SECONDS)

    async def _owner_exists(self, namespace: str, ref: Object) -> bool:
        info = OWNER_KINDS[str(ref["kind"])]
        cached = self.owners[str(ref["kind"])].get(str(ref.get("name")), namespace)
        if cached is not None and podutil.uid_of(cached) == ref.get("uid"):
            return True
        try:
            live = await self.api.get(info, str(ref.get("name")), namespace)
        except ApiError as err:
            if err.code == 404:
                return False
            raise
        return podutil.uid_of(live) == ref.get("uid")

    async def reconcile(self, key: str) -> float | None:
        kind, _, object_key = key.partition("|")
        informer = self.dependents[kind]
        obj = informer.get_by_key(object_key)
        if obj is None or podutil.is_terminating(obj):
            return None
        namespace, name = split_key(object_key)
        refs = podutil.meta(obj).get("ownerReferences") or []
        checked = [ref for ref in refs if ref.get("kind") in OWNER_KINDS]
        if not checked:
            return None
        gone = [ref for ref in checked if not await self._owner_exists(namespace or "", ref)]
        if not gone:
            return None
        info = DEPENDENT_KINDS[kind]
        if len(gone) == len(refs):
            logger.info(
                "deleting an object whose owners are gone",
                extra={"fields": {"kind": kind, "object": object_key}},
            )
            try:
                await self.api.delete(
                    info,
                    name,
                    namespace,
                    propagation_policy="Background",
                    preconditions={"uid": podutil.uid_of(obj)},
                )
            except ApiError as err:
                if err.code not in (404, 409):
                    raise
            return None
        kept = [ref for ref in refs if ref not in gone]
        patch = {
            "metadata": {
                "ownerReferences": kept,
                "resourceVersion": podutil.meta(obj).get("resourceVersion"),
            }
        }
        updated = await self.api.patch(info, name, patch, namespace)
        informer.assume(updated)
        return None


def _key(obj: Object) -> str:
    namespace = podutil.namespace_of(obj)
    return f"{namespace}/{podutil.name_of(obj)}" if namespace else podutil.name_of(obj)

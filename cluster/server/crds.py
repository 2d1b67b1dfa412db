"""The CRD follower: what makes a stored CustomResourceDefinition served, and its deletion.

Every server runs one. It lists the CRDs, then watches them, and for each change: a CRD whose
names no other CRD of its group holds has its versions served by this server's registry
(:class:`~k3py.cluster.api.customresources.CustomResourceRegistry`), and its status says so
(``NamesAccepted`` and ``Established`` conditions, ``acceptedNames``, ``storedVersions``), as
kube-apiserver's naming and establishing controllers do; a CRD being deleted stops being served,
its objects are removed (their dependents go to the garbage collector), and its cleanup
finalizer is dropped, which ends the CRD's deletion. With several servers on one datastore each
follows the same watch, so a CRD created through any of them is served by all; the status and
cleanup writes are idempotent, whichever server makes them first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from k3py.cluster.api import status
from k3py.cluster.api.crdvalidation import names_conflict
from k3py.cluster.api.customresources import (
    CLEANUP_FINALIZER,
    CRD,
    infos_of,
)
from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.server.rest import engine
from k3py.cluster.server.rest.context import RestContext
from k3py.cluster.server.rest.objects import Object, decode

logger = logging.getLogger(__name__)


def _name(crd: Object) -> str:
    return str((crd.get("metadata") or {}).get("name", ""))


def _condition(kind: str, ok: bool, reason: str, message: str, now: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def wanted_status(crd: Object, conflict: str, now: str) -> dict[str, Any]:
    """The status a CRD should have, given why its names conflict ("" when they don't)."""
    spec = crd.get("spec") or {}
    current = dict(crd.get("status") or {})
    accepted = not conflict
    conditions = [
        _condition(
            "NamesAccepted",
            accepted,
            "NoConflicts" if accepted else "NameConflict",
            "no conflicts found" if accepted else conflict,
            now,
        ),
        _condition(
            "Established",
            accepted,
            "InitialNamesAccepted" if accepted else "NotAccepted",
            "the initial names have been accepted" if accepted else "not all names are accepted",
            now,
        ),
    ]
    old = {c.get("type"): c for c in current.get("conditions") or [] if isinstance(c, dict)}
    for condition in conditions:  # a condition keeps its time while its status stays
        previous = old.get(condition["type"])
        if previous is not None and previous.get("status") == condition["status"]:
            condition["lastTransitionTime"] = previous.get("lastTransitionTime", now)
    current["conditions"] = conditions
    if accepted:
        current["acceptedNames"] = {
            k: v for k, v in (spec.get("names") or {}).items() if v not in (None, "", [])
        }
    else:
        current.setdefault("acceptedNames", {"plural": "", "kind": ""})
    storage = [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]
    stored = list(current.get("storedVersions") or [])
    current["storedVersions"] = stored + [v for v in storage if v not in stored]
    return current


def _same_status(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def plain(s: dict[str, Any]) -> dict[str, Any]:
        conditions = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in s.get("conditions") or []
        ]
        return {**s, "conditions": conditions}

    return plain(a) == plain(b)


class CRDFollower:
    """This server's view of the CRDs, kept by :meth:`run`."""

    def __init__(self, ctx: RestContext) -> None:
        self.ctx = ctx
        self.crds: dict[str, Object] = {}

    async def relist(self) -> int:
        """Serve what the stored CRDs say now; returns the revision to watch from."""
        kvs, revision, _ = await self.ctx.objects.list_page(
            CRD.storage_prefix(), revision=0, start_after="", limit=0
        )
        listed = {_name(o): o for o in (decode(kv) for kv in kvs)}
        for name in set(self.crds) - set(listed):
            self.forget(name)
        self.crds = listed
        for crd in list(listed.values()):
            await self.sync(crd)
        return revision

    async def run(self, revision: int | None = None) -> None:
        """Watch the CRDs from ``revision`` (listing first without one) until the server
        stops, listing again after a 410."""
        while not self.ctx.stopping.is_set():
            if revision is None:
                revision = await self.relist()
            try:
                async for events in self.ctx.objects.watch(CRD.storage_prefix(), revision):
                    for event in events:
                        if event.type == "delete":
                            self.forget(_name(event.object))
                        else:
                            self.crds[_name(event.object)] = event.object
                            await self.sync(event.object)
            except status.ApiError as err:
                if err.code != 410:
                    raise
            revision = None

    def forget(self, name: str) -> None:
        self.crds.pop(name, None)
        if self.ctx.custom.remove(name):
            logger.info("stopped serving a custom resource", extra={"fields": {"crd": name}})

    async def sync(self, crd: Object) -> None:
        name = _name(crd)
        if crd["metadata"].get("deletionTimestamp"):
            self.ctx.custom.remove(name)
            await self.cleanup(crd)
            return
        others = [c for n, c in self.crds.items() if n != name]
        conflict = names_conflict(crd, others)
        if conflict:
            self.ctx.custom.remove(name)
        elif self.ctx.custom.put(name, infos_of(crd)):
            logger.info("serving a custom resource", extra={"fields": {"crd": name}})
        await self._set_status(name, conflict)

    async def _set_status(self, name: str, conflict: str) -> None:
        def change(current: Object) -> Object | None:
            if current["metadata"].get("deletionTimestamp"):
                return None
            wanted = wanted_status(current, conflict, self.ctx.now())
            if _same_status(wanted, current.get("status") or {}):
                return None
            current["status"] = wanted
            return current

        try:
            await engine.mutate(self.ctx, CRD, None, name, change, subresource="status")
        except status.ApiError as err:  # another server wrote it first, or it went
            logger.info("CRD status not written", extra={"fields": {"crd": name, "why": str(err)}})

    async def cleanup(self, crd: Object) -> None:
        """Remove every object of a CRD being deleted, then its cleanup finalizer."""
        if CLEANUP_FINALIZER not in (crd["metadata"].get("finalizers") or []):
            return
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        storage = ResourceInfo(
            str(spec.get("group", "")),
            "v1",
            str(names.get("kind", "")),
            str(names.get("plural", "")),
            str(names.get("singular", "")),
            spec.get("scope") == "Namespaced",
        )
        if storage.plural and storage.group:
            for obj in await self.ctx.objects.list_all(storage, None):
                try:
                    gone = await self.ctx.objects.delete(storage, obj, 0)
                except status.ApiError as err:
                    if err.code != 404:
                        raise
                    continue
                self.ctx.collector_queue.put_nowait(engine.dependents_work(storage, gone))

        def drop_finalizer(current: Object) -> Object | None:
            finalizers = current["metadata"].get("finalizers") or []
            if CLEANUP_FINALIZER not in finalizers:
                return None
            current["metadata"]["finalizers"] = [f for f in finalizers if f != CLEANUP_FINALIZER]
            return current

        await engine.mutate(self.ctx, CRD, None, _name(crd), drop_finalizer)
        logger.info("removed a CRD and its objects", extra={"fields": {"crd": _name(crd)}})


async def start_follower(ctx: RestContext) -> Callable[[], Awaitable[None]]:
    """Serve the stored CRDs now (so that a restarted server serves them from its first
    request); returns the follower's loop, which runs for good from there (and, restarted
    after a failure, lists again)."""
    follower = CRDFollower(ctx)
    start: list[int | None] = [None]
    try:
        start[0] = await follower.relist()
    except Exception as err:  # the loop lists again; the server starts regardless
        logger.error("listing the CRDs failed", exc_info=err)

    async def loop() -> None:
        revision, start[0] = start[0], None
        await follower.run(revision)

    return loop

"""Which namespaces are active (exist and are not being deleted), followed from the datastore.

Every create of a namespaced object checks that its namespace exists and is not being deleted
(kube-apiserver's NamespaceLifecycle admission). Reading the Namespace from the datastore for
each create cost a hand-over to the datastore's read pool and back, which the profile of 1,000
creates/s named among a create's largest costs. :class:`NamespaceFollower` keeps the names of
the active namespaces in memory, listed once and then followed through one watch of the
namespaces' storage prefix, as the admission plug-in follows its namespace informer. It only
ever answers "active": a name it does not know or sees being deleted is read from the datastore
as before, so a namespace that another server of a shared datastore created a moment ago is
found, and the 404 and 403 answers always come from the stored object. On one server it is not
behind an acknowledged write: the datastore hands committed events to its watchers before it
resolves the writes, and the follower's task, woken first, takes them in before the writer's
own task runs on. Right after a (re)list it may be a moment behind, as an informer is.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.server.rest.objects import decode
from k3py.cluster.server.store import StoreError

if TYPE_CHECKING:
    from k3py.cluster.server.rest.context import RestContext

logger = logging.getLogger(__name__)

_NAMESPACES = by_kind("v1", "Namespace")
assert _NAMESPACES is not None
PREFIX = _NAMESPACES.storage_prefix()
RETRY_SECONDS = 1.0


def _is_active(obj: dict[str, Any]) -> bool:
    meta = obj.get("metadata")
    return isinstance(meta, dict) and not meta.get("deletionTimestamp")


class NamespaceFollower:
    """The active namespaces' names; see the module docstring."""

    def __init__(self) -> None:
        self._active: set[str] = set()
        self._synced = False
        self._task: asyncio.Task[None] | None = None

    def active(self, ctx: RestContext, name: str) -> bool:
        """True when ``name`` is known to be active; False means "read the datastore"."""
        if (self._task is None or self._task.done()) and not ctx.stopping.is_set():
            self._task = asyncio.create_task(self._run(ctx), name="k3py-namespaces")
        return self._synced and name in self._active

    async def _list(self, ctx: RestContext) -> int:
        items, revision = await ctx.objects.list_prefix(PREFIX)
        self._active = {kv.key[len(PREFIX) :] for kv in items if _is_active(decode(kv))}
        return revision

    async def _run(self, ctx: RestContext) -> None:
        while not ctx.stopping.is_set():
            try:
                revision = await self._list(ctx)
                self._synced = True
                async for events in ctx.objects.watch(PREFIX, revision):
                    for event in events:
                        name = str(event.object["metadata"].get("name", ""))
                        if event.type != "delete" and _is_active(event.object):
                            self._active.add(name)
                        else:
                            self._active.discard(name)
            except (ApiError, StoreError) as err:
                logger.debug("namespaces: listing again", extra={"fields": {"error": str(err)}})
            finally:  # whatever ended the watch, the names are no longer followed
                self._synced = False
            if ctx.stopping.is_set():  # the server is stopping (its datastore ended the watch)
                return
            await asyncio.sleep(RETRY_SECONDS)

"""Which objects each node's pods refer to, for the Node authorizer, kept from a watch of pods.

Kubernetes' Node authorizer decides from a graph of pods, nodes and the objects pods use;
:class:`NodeGraph` is that graph for k3py: it lists every pod once, then follows the pods'
watch, and answers "does a pod bound to node N refer to Secret S?" with a dictionary lookup, so
a node's frequent reads of its pods' objects cost no scan of the namespace. It starts on the
first question and ends when the server stops; until it has its first list (or after an
error) the caller falls back to reading the namespace's pods.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from k3py.cluster.api.podrefs import Reference, pod_references
from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.server.rest.objects import decode
from k3py.cluster.server.store import StoreError

if TYPE_CHECKING:
    from k3py.cluster.server.rest.context import RestContext

logger = logging.getLogger("k3py.server.nodegraph")

PODS = by_kind("v1", "Pod")
RETRY_SECONDS = 1.0


def _key(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class NodeGraph:
    def __init__(self) -> None:
        # pod key -> (node, references); node -> how many of its pods refer to each object
        self._pods: dict[str, tuple[str, frozenset[Reference]]] = {}
        self._by_node: dict[str, Counter[Reference]] = {}
        self._task: asyncio.Task[None] | None = None
        self.synced = False

    def refers(self, node: str, reference: Reference) -> bool:
        """True when a pod bound to ``node`` refers to ``reference`` (as far as seen)."""
        counts = self._by_node.get(node)
        return counts is not None and counts[reference] > 0

    def ensure_running(self, ctx: RestContext) -> None:
        if (self._task is None or self._task.done()) and not ctx.stopping.is_set():
            self._task = asyncio.create_task(self._run(ctx), name="k3py-node-graph")

    # -- keeping the graph -------------------------------------------------------------------

    def _set(self, key: str, pod: dict[str, Any] | None) -> None:
        old = self._pods.pop(key, None)
        if old is not None:
            counts = self._by_node[old[0]]
            counts.subtract(old[1])
            for ref in [r for r in old[1] if counts[r] <= 0]:
                del counts[ref]
            if not counts:
                del self._by_node[old[0]]
        node = ((pod or {}).get("spec") or {}).get("nodeName")
        if pod is None or not isinstance(node, str) or not node:
            return
        refs = frozenset(pod_references(pod))
        self._pods[key] = (node, refs)
        self._by_node.setdefault(node, Counter()).update(refs)

    async def _list(self, ctx: RestContext) -> int:
        assert PODS is not None
        items, revision = await ctx.objects.list_prefix(PODS.storage_prefix(None))
        self._pods.clear()
        self._by_node.clear()
        for kv in items:
            pod = decode(kv)
            self._set(_key(pod), pod)
        return revision

    async def _run(self, ctx: RestContext) -> None:
        assert PODS is not None
        while not ctx.stopping.is_set():
            try:
                revision = await self._list(ctx)
                self.synced = True
                async for events in ctx.objects.watch(PODS.storage_prefix(None), revision):
                    for event in events:
                        pod = event.object
                        self._set(_key(pod), None if event.type == "delete" else pod)
            except (ApiError, StoreError) as err:
                logger.debug(
                    "node graph: listing pods again", extra={"fields": {"error": str(err)}}
                )
            self.synced = False
            await asyncio.sleep(RETRY_SECONDS)

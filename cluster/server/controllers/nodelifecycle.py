"""The node lifecycle controller: pod CIDRs, node health, condition taints and NoExecute eviction.

* Every node gets a pod CIDR (a ``/24`` of the cluster CIDR by default) once; it is stored on
  the Node, so it survives restarts and is never handed out twice.
* A node is healthy while its Lease in ``kube-node-lease`` (or its Ready heartbeat) keeps being
  renewed. Renewals are timed on this process's clock, as kube-controller-manager does, so
  clock skew between machines does not matter. After ``--node-monitor-grace-period`` without
  one, its conditions become ``Unknown`` ("Kubelet stopped posting node status.").
* Ready ``False`` gives the ``node.kubernetes.io/not-ready`` taints, ``Unknown`` the
  ``node.kubernetes.io/unreachable`` ones (NoSchedule, and NoExecute with ``timeAdded``); Ready
  ``True`` removes both, so a node that comes back is untainted.
* Pods on a node with NoExecute taints are evicted at once if they do not tolerate them, else
  when their ``tolerationSeconds`` (300 s by default) run out: a ``DisruptionTarget`` condition,
  a ``TaintManagerEviction`` Event, then a graceful delete. Pods bound to a deleted node go.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from k3py.cluster.api.status import ApiError
from k3py.cluster.client.events import timestamp
from k3py.cluster.server.controllers import podcontrol, podutil
from k3py.cluster.server.controllers.base import (
    LEASES,
    NODES,
    PODS,
    ControllerContext,
    QueueController,
)
from k3py.cluster.server.scheduler.predicates import (
    NOT_READY_TAINT,
    UNREACHABLE_TAINT,
    node_ready,
    tolerates,
)

logger = logging.getLogger("k3py.controllers.nodelifecycle")

Object = dict[str, Any]
LEASE_NAMESPACE = "kube-node-lease"
HEALTH_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")


@dataclass
class Health:
    probe: float  # when a renewal was last seen, on the controller's monotonic clock
    lease_renew: str = ""
    heartbeat: str = ""


def ready_heartbeat(node: Object) -> str:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("lastHeartbeatTime") or "")
    return ""


def wanted_taints(node: Object, now: str) -> list[Object]:
    """The node's taints with the not-ready/unreachable ones matching its Ready condition."""
    ready = node_ready(node)
    current = list((node.get("spec") or {}).get("taints") or [])
    key = {"False": NOT_READY_TAINT, "Unknown": UNREACHABLE_TAINT}.get(ready)
    kept = [t for t in current if t.get("key") not in (NOT_READY_TAINT, UNREACHABLE_TAINT)]
    if key is None:
        return kept
    for effect in ("NoSchedule", "NoExecute"):
        existing = next(
            (t for t in current if t.get("key") == key and t.get("effect") == effect), None
        )
        if existing is not None:
            kept.append(existing)
        elif effect == "NoExecute":
            kept.append({"key": key, "effect": effect, "timeAdded": now})
        else:
            kept.append({"key": key, "effect": effect})
    return kept


def eviction_delay(pod: Object, taints: list[Object], now: datetime.datetime) -> float | None:
    """Seconds until ``pod`` must leave a node with these NoExecute taints (None: never)."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    delays: list[float] = []
    for taint in taints:
        if taint.get("effect") != "NoExecute":
            continue
        matching = [t for t in tolerations if tolerates([t], taint)]
        if not matching:
            return 0.0
        seconds = [
            t["tolerationSeconds"] for t in matching if t.get("tolerationSeconds") is not None
        ]
        if len(seconds) < len(matching):
            continue  # one toleration holds forever
        added = podutil.parse_time(taint.get("timeAdded")) or now
        due = added + datetime.timedelta(seconds=max(0, min(int(s) for s in seconds)))
        delays.append(max(0.0, (due - now).total_seconds()))
    return min(delays) if delays else None


class CIDRAllocator:
    def __init__(self, cluster_cidr: str, mask: int) -> None:
        self.network = ipaddress.ip_network(cluster_cidr, strict=False)
        self.mask = mask
        self.used: set[str] = set()

    def take(self) -> str | None:
        for subnet in self.network.subnets(new_prefix=self.mask):
            text = str(subnet)
            if text not in self.used:
                self.used.add(text)
                return text
        return None


class NodeLifecycleController(QueueController):
    name = "nodelifecycle"
    component = "node-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.nodes = ctx.informers.get(NODES)
        self.leases = ctx.informers.get(LEASES)
        self.pods = ctx.informers.get(PODS)
        settings = ctx.settings
        self.cidrs = CIDRAllocator(settings.cluster_cidr, settings.node_cidr_mask_size)
        self.health: dict[str, Health] = {}
        self.nodes.add_handler(self._node_added, self._node_updated, self._node_deleted)
        self.leases.add_handler(self._lease_event, lambda _o, n: self._lease_event(n))
        self.pods.add_handler(self._pod_event, lambda _o, n: self._pod_event(n))

    # -- observation ------------------------------------------------------------------------------

    def _node_added(self, node: Object) -> None:
        name = node["metadata"]["name"]
        for cidr in (node.get("spec") or {}).get("podCIDRs") or []:
            self.cidrs.used.add(str(cidr))
        if (node.get("spec") or {}).get("podCIDR"):
            self.cidrs.used.add(str(node["spec"]["podCIDR"]))
        self.health.setdefault(
            name, Health(self.clock.monotonic(), heartbeat=ready_heartbeat(node))
        )
        self.queue.add(name)

    def _node_updated(self, old: Object, new: Object) -> None:
        name = new["metadata"]["name"]
        health = self.health.get(name)
        if health is None:
            self._node_added(new)
            return
        beat = ready_heartbeat(new)
        if beat != health.heartbeat:
            health.heartbeat = beat
            health.probe = self.clock.monotonic()
        self.queue.add(name)

    def _node_deleted(self, node: Object) -> None:
        name = node["metadata"]["name"]
        self.health.pop(name, None)
        for cidr in (node.get("spec") or {}).get("podCIDRs") or []:
            self.cidrs.used.discard(str(cidr))
        self.queue.add(name)

    def _lease_event(self, lease: Object) -> None:
        if podutil.namespace_of(lease) != LEASE_NAMESPACE:
            return
        name = podutil.name_of(lease)
        renew = str((lease.get("spec") or {}).get("renewTime") or "")
        health = self.health.get(name)
        if health is not None and renew != health.lease_renew:
            health.lease_renew = renew
            health.probe = self.clock.monotonic()
            node = self.nodes.get(name)
            if node is not None and node_ready(node) != "True":
                self.queue.add(name)

    def _pod_event(self, pod: Object) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            return
        current = self.nodes.get(node)
        if current is None or any(
            t.get("effect") == "NoExecute" for t in (current.get("spec") or {}).get("taints") or []
        ):
            self.queue.add(node)

    # -- the loops --------------------------------------------------------------------------------

    async def run(self) -> None:
        monitor = asyncio.create_task(self._monitor())
        try:
            await super().run()
        finally:
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)

    async def _monitor(self) -> None:
        """Look at every node each ``node_monitor_period`` for missed renewals."""
        await self.ctx.informers.wait_synced()
        while True:
            await self.clock.sleep(self.ctx.settings.node_monitor_period)
            now = self.clock.monotonic()
            for name, health in list(self.health.items()):
                node = self.nodes.get(name)
                if node is not None and self._overdue(node, health, now):
                    self.queue.add(name)

    def _overdue(self, node: Object, health: Health, now: float) -> bool:
        settings = self.ctx.settings
        ever_ready = any(
            c.get("type") == "Ready" for c in (node.get("status") or {}).get("conditions") or []
        )
        grace = (
            settings.node_monitor_grace_period if ever_ready else settings.node_startup_grace_period
        )
        return now - health.probe > grace and node_ready(node) != "Unknown"

    async def reconcile(self, key: str) -> float | None:
        node = self.nodes.get(key)
        if node is None:
            await self._remove_orphan_pods(key)
            return None
        node = await self._ensure_cidr(node)
        health = self.health.get(key)
        if health is not None and self._overdue(node, health, self.clock.monotonic()):
            node = await self._mark_unknown(node)
        node = await self._sync_taints(node)
        return await self._evict(node)

    async def _ensure_cidr(self, node: Object) -> Object:
        spec = node.get("spec") or {}
        if spec.get("podCIDR"):
            return node
        cidr = self.cidrs.take()
        if cidr is None:
            self.event(
                node, "Normal", "CIDRNotAvailable",
                f"Node {podutil.name_of(node)} status is now: CIDRNotAvailable",
            )  # fmt: skip
            return node
        try:
            updated = await self.api.patch(
                NODES,
                podutil.name_of(node),
                {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}},
            )
        except ApiError:
            self.cidrs.used.discard(cidr)
            raise
        self.nodes.assume(updated)
        self.event(node, "Normal", "CIDRAssignmentSucceeded", f"Assigned {cidr}")
        return updated

    async def _mark_unknown(self, node: Object) -> Object:
        stamp = timestamp(self.clock)
        conditions = []
        present = {c.get("type"): c for c in (node.get("status") or {}).get("conditions") or []}
        for kind in HEALTH_CONDITIONS:
            cond = present.get(kind)
            if cond is None:
                if kind != "Ready":
                    continue
                conditions.append({
                    "type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": stamp, "lastTransitionTime": stamp,
                })  # fmt: skip
                continue
            if cond.get("status") == "Unknown":
                continue
            conditions.append({
                **cond, "status": "Unknown", "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.", "lastTransitionTime": stamp,
            })  # fmt: skip
        logger.info(
            "node stopped renewing its lease; marking it Unknown",
            extra={"fields": {"node": podutil.name_of(node)}},
        )
        updated = await self.api.patch(
            NODES,
            podutil.name_of(node),
            {"status": {"conditions": conditions}},
            patch_type="strategic",
            subresource="status",
        )
        self.nodes.assume(updated)
        self.event(
            updated, "Normal", "NodeNotReady",
            f"Node {podutil.name_of(node)} status is now: NodeNotReady",
        )  # fmt: skip
        return updated

    async def _sync_taints(self, node: Object) -> Object:
        current = list((node.get("spec") or {}).get("taints") or [])
        wanted = wanted_taints(node, timestamp(self.clock))
        if wanted == current:
            return node
        patch = {
            "metadata": {"resourceVersion": podutil.meta(node).get("resourceVersion")},
            "spec": {"taints": wanted or None},
        }
        updated = await self.api.patch(NODES, podutil.name_of(node), patch)
        self.nodes.assume(updated)
        return updated

    async def _evict(self, node: Object) -> float | None:
        taints = [
            t
            for t in (node.get("spec") or {}).get("taints") or []
            if t.get("effect") == "NoExecute"
        ]
        if not taints:
            return None
        now = self.clock.now()
        soonest: float | None = None
        for pod in self.pods.by_index("node", podutil.name_of(node)):
            if not podutil.is_active(pod):
                continue
            delay = eviction_delay(pod, taints, now)
            if delay is None:
                continue
            if delay > 0:
                soonest = delay if soonest is None else min(soonest, delay)
                continue
            await self._evict_pod(pod)
        return soonest

    async def _evict_pod(self, pod: Object) -> None:
        name, namespace = podutil.name_of(pod), podutil.namespace_of(pod)
        self.event(
            pod, "Normal", "TaintManagerEviction", f"Marking for deletion Pod {namespace}/{name}"
        )
        condition = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": timestamp(self.clock),
        }
        try:
            await self.api.patch(
                PODS, name, {"status": {"conditions": [condition]}}, namespace,
                patch_type="strategic", subresource="status",
            )  # fmt: skip
        except ApiError as err:
            if err.code in (404, 409):
                return
            raise
        await podcontrol.delete_pod(self, None, pod)

    async def _remove_orphan_pods(self, node_name: str) -> None:
        """Pods bound to a node that no longer exists will never be finished by it."""
        for pod in self.pods.by_index("node", node_name):
            try:
                await self.api.delete(
                    PODS,
                    podutil.name_of(pod),
                    podutil.namespace_of(pod),
                    grace_period_seconds=0,
                    preconditions={"uid": podutil.uid_of(pod)},
                )
            except ApiError as err:
                if err.code not in (404, 409):
                    raise
            self.pods.assume_deleted(pod)

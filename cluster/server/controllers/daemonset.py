"""The DaemonSet controller: one pod per eligible node, new nodes included, rolling updates.

A node is eligible when it matches the template's node selector and required node affinity and
its NoSchedule/NoExecute taints are tolerated, counting the tolerations every DaemonSet pod gets
(not-ready and unreachable NoExecute; disk, memory and PID pressure and unschedulable
NoSchedule). As kube-controller-manager does, pods are created unbound with a required node
affinity on ``metadata.name`` and the scheduler binds them. A changed template rolls out node by
node: an outdated pod is deleted only while fewer than ``maxUnavailable`` nodes lack an
available pod. Pods carry ``controller-revision-hash`` so that status can count updated ones.
"""

from __future__ import annotations

import copy
import datetime
import logging
from typing import Any

from k3py.cluster.server.controllers import podcontrol, podutil, rollout
from k3py.cluster.server.controllers.base import (
    DAEMONSETS,
    NODES,
    PODS,
    ControllerContext,
    QueueController,
)
from k3py.cluster.server.scheduler.predicates import matches_node_affinity, tolerates

logger = logging.getLogger("k3py.controllers.daemonset")

Object = dict[str, Any]
REVISION_HASH = "controller-revision-hash"
TEMPLATE_GENERATION = "pod-template-generation"

DAEMON_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
HOST_NETWORK_TOLERATION = {
    "key": "node.kubernetes.io/network-unavailable",
    "operator": "Exists",
    "effect": "NoSchedule",
}


def daemon_pod_spec(template_spec: Object, node: str) -> Object:
    """The template's pod spec bound to ``node`` by affinity, with the daemon tolerations."""
    spec = copy.deepcopy(template_spec)
    tolerations = list(spec.get("tolerations") or [])
    extra = list(DAEMON_TOLERATIONS)
    if spec.get("hostNetwork"):
        extra.append(HOST_NETWORK_TOLERATION)
    for tol in extra:
        if not any(
            t.get("key") == tol["key"] and t.get("effect") == tol["effect"] for t in tolerations
        ):
            tolerations.append(dict(tol))
    spec["tolerations"] = tolerations
    affinity = spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
        ]
    }
    return spec


def should_run(ds: Object, node: Object) -> bool:
    spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    if not matches_node_affinity(spec, node):
        return False
    tolerations = daemon_pod_spec(spec, node["metadata"]["name"])["tolerations"]
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            return False
    return True


def target_node(pod: Object) -> str:
    """The node a daemon pod is for: where it is bound, else its affinity's node name."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            if field.get("key") == "metadata.name" and field.get("values"):
                return str(field["values"][0])
    return ""


class DaemonSetController(QueueController):
    name = "daemonset"
    component = "daemonset-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.daemonsets = ctx.informers.get(DAEMONSETS)
        self.nodes = ctx.informers.get(NODES)
        self.pods = ctx.informers.get(PODS)
        self.daemonsets.add_handler(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue)
        self.nodes.add_handler(self._all, self._node_changed, self._all)
        self.pods.add_handler(self._pod_event, lambda _o, n: self._pod_event(n), self._pod_event)

    def _pod_event(self, pod: Object) -> None:
        self.enqueue_owner(pod, "DaemonSet")

    def _node_changed(self, old: Object, new: Object) -> None:
        # Status heartbeats arrive all the time; only labels and taints decide eligibility.
        def eligibility(node: Object) -> Any:
            return node["metadata"].get("labels"), (node.get("spec") or {}).get("taints")

        if eligibility(old) != eligibility(new):
            self._all(new)

    def _all(self, _node: Object | None) -> None:
        for ds in self.daemonsets.list():
            self.enqueue(ds)

    async def reconcile(self, key: str) -> float | None:
        ds = self.daemonsets.get_by_key(key)
        if ds is None or podutil.is_terminating(ds):
            return None
        now = self.clock.now()
        template = (ds.get("spec") or {}).get("template") or {}
        current_hash = rollout.template_hash(template)
        by_node: dict[str, list[Object]] = {}
        for pod in self.pods.by_index("owner", podutil.uid_of(ds)):
            if not podutil.is_terminating(pod):
                by_node.setdefault(target_node(pod), []).append(pod)
        nodes = {n["metadata"]["name"]: n for n in self.nodes.list()}
        eligible = {name for name, node in nodes.items() if should_run(ds, node)}
        for name in sorted(set(by_node) | eligible):
            pods = by_node.get(name, [])
            failed = [p for p in pods if podutil.phase(p) == "Failed"]
            live = [p for p in pods if podutil.phase(p) != "Failed"]
            for pod in failed:
                await podcontrol.delete_pod(self, ds, pod)
            if name in eligible and name in nodes:
                if not live:
                    await self._create(ds, name, current_hash)
                for extra in sorted(live, key=_created)[1:]:
                    await podcontrol.delete_pod(self, ds, extra)
            else:
                for pod in live:
                    await podcontrol.delete_pod(self, ds, pod)
        await self._roll(ds, eligible, current_hash, now)
        return await self._sync_status(ds, eligible, current_hash, now)

    def _pods_by_node(self, ds: Object) -> dict[str, list[Object]]:
        found: dict[str, list[Object]] = {}
        for pod in self.pods.by_index("owner", podutil.uid_of(ds)):
            if podutil.is_active(pod):
                found.setdefault(target_node(pod), []).append(pod)
        return found

    async def _roll(
        self, ds: Object, eligible: set[str], current_hash: str, now: datetime.datetime
    ) -> None:
        strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        max_unavailable = max(
            1,
            podutil.scaled_value(
                (strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1),
                len(eligible),
                round_up=False,
            ),
        )
        by_node = self._pods_by_node(ds)
        unavailable = 0
        outdated_ready: list[Object] = []
        for name in eligible:
            pods = by_node.get(name, [])
            if not any(podutil.is_available(p, min_ready, now) for p in pods):
                unavailable += 1
                for pod in pods:
                    if _hash(pod) != current_hash:
                        await podcontrol.delete_pod(
                            self, ds, pod
                        )  # not serving anyway: replace at once
                continue
            outdated_ready.extend(p for p in pods if _hash(p) != current_hash)
        for pod in sorted(outdated_ready, key=_created):
            if unavailable >= max_unavailable:
                break
            await podcontrol.delete_pod(self, ds, pod)
            unavailable += 1

    async def _create(self, ds: Object, node: str, current_hash: str) -> None:
        template = (ds.get("spec") or {}).get("template") or {}
        generation = str(podutil.meta(ds).get("generation", 1))
        pod = podutil.pod_from_template(
            template,
            ds,
            generate_name=f"{podutil.name_of(ds)}-",
            labels={REVISION_HASH: current_hash, TEMPLATE_GENERATION: generation},
        )
        pod["spec"] = daemon_pod_spec(template.get("spec") or {}, node)
        await podcontrol.create_pod(self, ds, pod)

    async def _sync_status(
        self, ds: Object, eligible: set[str], current_hash: str, now: datetime.datetime
    ) -> float | None:
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        by_node = self._pods_by_node(ds)
        scheduled = [n for n in eligible if by_node.get(n)]
        ready = available = updated = 0
        waits: list[float] = []
        for name in scheduled:
            pod = sorted(by_node[name], key=_created)[0]
            if podutil.is_ready(pod):
                ready += 1
            if podutil.is_available(pod, min_ready, now):
                available += 1
            elif (w := podutil.seconds_until_available(pod, min_ready, now)) is not None:
                waits.append(w)
            if _hash(pod) == current_hash:
                updated += 1
        status: Object = {
            "currentNumberScheduled": len(scheduled),
            "numberMisscheduled": len([n for n in by_node if n not in eligible]),
            "desiredNumberScheduled": len(eligible),
            "numberReady": ready,
            "observedGeneration": podutil.meta(ds).get("generation", 0),
            "updatedNumberScheduled": updated,
            "numberAvailable": available,
            "numberUnavailable": len(eligible) - available,
        }
        for key in ("updatedNumberScheduled", "numberAvailable", "numberUnavailable"):
            if not status[key]:
                del status[key]
        if status != (ds.get("status") or {}):
            updated_ds = await self.api.update(
                DAEMONSETS, {**ds, "status": status}, subresource="status"
            )
            self.daemonsets.assume(updated_ds)
        return min(waits) if waits else None


def _hash(pod: Object) -> str:
    return str((podutil.meta(pod).get("labels") or {}).get(REVISION_HASH, ""))


def _created(pod: Object) -> str:
    return str(podutil.meta(pod).get("creationTimestamp") or "")

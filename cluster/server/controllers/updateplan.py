"""The UpdatePlan controller: rolls a bundle out to the nodes a plan selects.

For each plan it reads the nodes its ``nodeSelector`` picks and the per-node phases in its
status (agents move their own entry from ``Downloading`` on), asks
:func:`k3py.cluster.ota.rollout.step` what to do, and writes the answer: nodes to start get
``Downloading`` (the agent's signal to act); Healthy nodes it drained are uncordoned; the plan's
phase and message follow. A paused plan is re-checked when its pause ends. Node changes
re-check every plan.

With ``drain`` a node is drained before it starts, as ``kubectl drain --ignore-daemonsets
--delete-emptydir-data --force`` would: cordoned, then every pod bound to it is evicted through
the Eviction API (so PodDisruptionBudgets are honoured) except DaemonSet and mirror pods, which
would come straight back. While an eviction is refused (429) or evicted pods are still
terminating, the node stays ``Pending`` with a ``draining`` message and is re-checked every
:data:`DRAIN_RECHECK_SECONDS`; its agent sees ``Downloading`` only once it is empty. A drain
still unfinished after ``progressDeadlineSeconds`` (as ``kubectl drain --timeout``) fails the
node, which is uncordoned and counts toward the failure threshold. Since the
rollout starts a batch's nodes in name order, a node being drained is always the one
:func:`step` picks again, so ``maxUnavailable`` bounds drained and updating nodes together.
"""

from __future__ import annotations

import logging
from typing import Any

from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.client.events import timestamp
from k3py.cluster.ota.rollout import (
    DOWNLOADING,
    FAILED,
    HALTED,
    PENDING,
    NodeState,
    PlanSpec,
    step,
)
from k3py.cluster.server.controllers import podutil
from k3py.cluster.server.controllers.base import NODES, PODS, ControllerContext, QueueController

logger = logging.getLogger("k3py.controllers.updateplan")

Object = dict[str, Any]
UPDATE_PLANS = by_kind("ota.k3py.io/v1", "UpdatePlan")
DRAINED_ANNOTATION = "ota.k3py.io/drained-by"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
DRAIN_RECHECK_SECONDS = 2.0


class UpdatePlanController(QueueController):
    name = "updateplan"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        assert UPDATE_PLANS is not None
        self.plans = ctx.informers.get(UPDATE_PLANS)
        self.nodes = ctx.informers.get(NODES)
        self.pods = ctx.informers.get(PODS)
        self.plans.add_handler(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue)
        self.nodes.add_handler(self._node_event, lambda _o, n: self._node_event(n),
                               self._node_event)  # fmt: skip

    def _node_event(self, _node: Object) -> None:
        for plan in self.plans.list():
            self.enqueue(plan)

    def _selected(self, plan: Object) -> list[Object]:
        selector = (plan.get("spec") or {}).get("nodeSelector") or {}
        return [
            n for n in self.nodes.list()
            if all((podutil.meta(n).get("labels") or {}).get(k) == v for k, v in selector.items())
        ]  # fmt: skip

    async def reconcile(self, key: str) -> float | None:
        assert UPDATE_PLANS is not None
        plan = self.plans.get_by_key(key)
        if plan is None or podutil.is_terminating(plan):
            return None
        name = podutil.name_of(plan)
        nodes = {podutil.name_of(n): n for n in self._selected(plan)}
        spec = PlanSpec.from_spec(plan.get("spec") or {}, len(nodes))
        old = plan.get("status") or {}
        listed = old.get("nodes")
        listed = listed if isinstance(listed, list) else []
        entries = {str(e["name"]): dict(e) for e in listed if isinstance(e, dict) and e.get("name")}
        now_text = timestamp(self.clock)
        states = {}
        for node in nodes:
            entry = entries.setdefault(node, {"name": node, "phase": PENDING,
                                              "lastTransitionTime": now_text})  # fmt: skip
            since = podutil.parse_time(entry.get("lastTransitionTime")) or self.clock.now()
            states[node] = NodeState(str(entry.get("phase", PENDING)), since.timestamp())
        now = self.clock.now().timestamp()
        decision = step(spec, list(nodes), states, now)
        recheck = _sooner(decision.wait_seconds, decision.deadline_seconds)
        for node in decision.stalled:
            phase = entries[node].get("phase")
            entries[node] = {"name": node, "phase": FAILED, "lastTransitionTime": now_text,
                             "message": f"no progress in {phase} for "
                                        f"{spec.progress_deadline_seconds:.0f}s: the node's agent "
                                        "does not report (is it started by the firmware launcher,"
                                        " or on a board with A/B boot state?)"}  # fmt: skip
        drain_failed = []
        for node in decision.start:
            if spec.drain:
                entry = entries[node]
                draining = str(entry.get("message", "")).removeprefix("draining: ")
                if draining != entry.get("message", "") and (
                    states[node].since + spec.progress_deadline_seconds <= now
                ):  # checked before draining again, so a failed node is never cordoned anew
                    entries[node] = {"name": node, "phase": FAILED, "lastTransitionTime": now_text,
                                     "message": "drain not finished within "
                                                f"{spec.progress_deadline_seconds:.0f}s: "
                                                f"{draining}"}  # fmt: skip
                    drain_failed.append(node)
                    continue
                waiting = await self._drain(nodes[node], name)
                if waiting:
                    if draining == entry.get("message", ""):
                        entry["lastTransitionTime"] = now_text  # the drain's start
                    entries[node] = {**entry, "message": f"draining: {waiting}"}
                    recheck = min(recheck or DRAIN_RECHECK_SECONDS, DRAIN_RECHECK_SECONDS)
                    continue
            entries[node] = {"name": node, "phase": DOWNLOADING, "lastTransitionTime": now_text}
        uncordon = [*decision.uncordon, *drain_failed]
        if decision.phase == HALTED:  # drained for a start that will not come
            uncordon += [n for n in nodes if entries[n].get("phase") == PENDING]
        for node in uncordon:
            if (podutil.meta(nodes[node]).get("annotations") or {}).get(DRAINED_ANNOTATION) == name:
                await self._cordon(nodes[node], name, False)
                if node not in drain_failed:
                    entries[node].pop("message", None)
        counts = decision.counts
        message = (f"{counts.get('Healthy', 0)}/{len(nodes)} healthy, batch {decision.batch}, "
                   f"{counts.get('Failed', 0) + counts.get('RolledBack', 0)} failed")  # fmt: skip
        if decision.wait_seconds is not None:
            message += f", next batch in {decision.wait_seconds:.0f}s"
        status = {
            "phase": decision.phase,
            "message": message,
            "nodes": [entries[n] for n in sorted(entries) if n in nodes],
        }
        if status != {k: old.get(k) for k in status}:
            if old.get("phase") != decision.phase:
                self.event(plan, "Normal", decision.phase, message)
            await self.api.update(UPDATE_PLANS, {**plan, "status": status}, subresource="status")
        return recheck

    async def _drain(self, node: Object, plan: str) -> str:
        """Cordon ``node`` and evict its pods; what it still waits for ("" once drained)."""
        if not (node.get("spec") or {}).get("unschedulable"):
            # Noted as this plan's, so that a node an operator cordoned is never uncordoned.
            await self._cordon(node, plan, True)
        left: list[str] = []
        blocked: list[str] = []
        for pod in self.pods.by_index("node", podutil.name_of(node)):
            owner = podutil.controller_ref(pod) or {}
            if owner.get("kind") == "DaemonSet" or MIRROR_ANNOTATION in (
                podutil.meta(pod).get("annotations") or {}
            ):
                continue
            pod_name = f"{podutil.namespace_of(pod)}/{podutil.name_of(pod)}"
            left.append(pod_name)
            if podutil.is_terminating(pod):
                continue  # evicted already: its kubelet is stopping it
            try:
                await self.api.create(PODS, self._eviction(pod), podutil.namespace_of(pod),
                                      subresource="eviction")  # fmt: skip
            except ApiError as err:
                if err.code == 404:
                    left.remove(pod_name)
                elif err.code == 429:  # a PodDisruptionBudget allows no disruption now
                    why = "; ".join(c.message for c in err.causes) or err.message
                    blocked.append(f"{pod_name}: {why}")
                else:
                    raise
        if not left:
            return ""
        note = f"{len(left)} pod{'s' if len(left) > 1 else ''} left"
        return f"{note}; {blocked[0]}" if blocked else note

    @staticmethod
    def _eviction(pod: Object) -> Object:
        return {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": podutil.name_of(pod),
                             "namespace": podutil.namespace_of(pod)}}  # fmt: skip

    async def _cordon(self, node: Object, plan: str, cordon: bool) -> None:
        annotations = {DRAINED_ANNOTATION: plan if cordon else None}
        patch = {"metadata": {"annotations": annotations}, "spec": {"unschedulable": cordon}}
        await self.api.patch(NODES, podutil.name_of(node), patch)


def _sooner(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)

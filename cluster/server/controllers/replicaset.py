"""The ReplicaSet controller: keeps ``spec.replicas`` pods of a template alive and reports them.

Pods are found through the owner index (their controller ownerReference); orphan pods that
match the selector are adopted. Missing pods are created in slow-start batches (1, 2, 4, …) so
a failing template costs few requests; surplus pods are deleted worst first (unscheduled,
pending, not ready, newest). Each write goes into the informer cache at once, so the next pass
never counts a pod twice. Orphans are looked for only when there may be one to adopt: the
ReplicaSet is new, its spec changed or it is being deleted, or an orphan pod its selector
matches appeared or changed (a pass caused by its own pods' changes or its own status write
skips the scan of every pod in the namespace, which dominated a large scale-up). Status
carries replicas, ready and available counts (available = ready for ``minReadySeconds``) and
``observedGeneration``.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

from k3py.cluster.api.selectors import LabelSelector
from k3py.cluster.api.status import ApiError
from k3py.cluster.client import object_key
from k3py.cluster.server.controllers import podcontrol, podutil
from k3py.cluster.server.controllers.base import (
    POD_EVENT_DELAY,
    PODS,
    REPLICASETS,
    ControllerContext,
    QueueController,
)

logger = logging.getLogger("k3py.controllers.replicaset")

Object = dict[str, Any]
BURST = 500


def owned_pods(ctx: ControllerContext, owner: Object) -> list[Object]:
    pods = ctx.informers.get(PODS)
    return list(pods.by_index("owner", podutil.uid_of(owner)))


def replica_status(
    rs: Object, pods: list[Object], now: datetime.datetime
) -> tuple[Object, float | None]:
    """The status the ReplicaSet should show, and when a pod will next become available."""
    spec = rs.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    counted = podutil.tally(pods, min_ready, now, template_labels)
    status: Object = {
        "replicas": counted.active,
        "fullyLabeledReplicas": counted.labelled,
        "readyReplicas": counted.ready,
        "availableReplicas": counted.available,
        "observedGeneration": podutil.meta(rs).get("generation", 0),
    }
    old = rs.get("status") or {}
    if old.get("conditions"):
        status["conditions"] = old["conditions"]
    for key in ("readyReplicas", "availableReplicas", "fullyLabeledReplicas"):
        if not status[key]:
            del status[key]  # omitted when zero, as the API server serialises it
    return status, counted.next_available


class ReplicaSetController(QueueController):
    name = "replicaset"
    component = "replicaset-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.replicasets = ctx.informers.get(REPLICASETS)
        self.pods = ctx.informers.get(PODS)
        # Keys whose next pass looks for orphans to adopt.
        self._claim_pending: set[str] = set()
        self.replicasets.add_handler(self._rs_event, self._rs_changed, self.enqueue)
        self.pods.add_handler(self._pod_event, self._pod_changed, self._pod_event)

    def _rs_event(self, rs: Object) -> None:
        self._claim_pending.add(object_key(rs))
        self.enqueue(rs)

    def _rs_changed(self, old: Object, new: Object) -> None:
        # A write of the status (this controller's own, after every pass) changes nothing an
        # adoption depends on: only a changed spec (selector, template) or deletion sends the
        # next pass through every pod of the namespace.
        spec_changed = old.get("spec") != new.get("spec")
        if spec_changed or podutil.is_terminating(old) != podutil.is_terminating(new):
            self._rs_event(new)
        else:
            self.enqueue(new)

    def _pod_event(self, pod: Object) -> None:
        self.enqueue_owner(pod, "ReplicaSet", delay=POD_EVENT_DELAY)
        if podutil.controller_ref(pod) is None:
            self._enqueue_selecting(pod)

    def _pod_changed(self, old: Object, new: Object) -> None:
        self._pod_event(new)
        if podutil.controller_ref(old) != podutil.controller_ref(new):
            self.enqueue_owner(old, "ReplicaSet", delay=POD_EVENT_DELAY)

    def _enqueue_selecting(self, pod: Object) -> None:
        labels = podutil.meta(pod).get("labels") or {}
        for rs in self.replicasets.list(podutil.namespace_of(pod)):
            selector = LabelSelector.from_object((rs.get("spec") or {}).get("selector"))
            if not selector.empty and selector.matches(labels):
                self._rs_event(rs)

    async def reconcile(self, key: str) -> float | None:
        rs = self.replicasets.get_by_key(key)
        if rs is None:
            self._claim_pending.discard(key)
            return None
        pods = owned_pods(self.ctx, rs)
        if key in self._claim_pending:
            self._claim_pending.discard(key)
            try:
                pods = await self._claim(rs, pods)
            except BaseException:
                self._claim_pending.add(key)
                raise
        if not podutil.is_terminating(rs):
            await self.manage_replicas(rs, pods)
            pods = owned_pods(self.ctx, rs)
        status, wait = replica_status(rs, pods, self.clock.now())
        if status != (rs.get("status") or {}):
            updated = await self.api.update(
                REPLICASETS, {**rs, "status": status}, subresource="status"
            )
            self.replicasets.assume(updated)
        return wait

    async def _claim(self, rs: Object, owned: list[Object]) -> list[Object]:
        """Adopt orphan pods the selector matches (as after ``delete --cascade=orphan``)."""
        if podutil.is_terminating(rs):
            return owned
        selector = LabelSelector.from_object((rs.get("spec") or {}).get("selector"))
        if selector.empty:
            return owned
        ref = podutil.owner_reference(rs)
        for pod in self.pods.list(podutil.namespace_of(rs)):
            if podutil.controller_ref(pod) is not None or not podutil.is_active(pod):
                continue
            if not selector.matches(podutil.meta(pod).get("labels") or {}):
                continue
            refs = [*(podutil.meta(pod).get("ownerReferences") or []), ref]
            patch = {
                "metadata": {
                    "ownerReferences": refs,
                    "resourceVersion": podutil.meta(pod).get("resourceVersion"),
                }
            }
            try:
                adopted = await self.api.patch(
                    PODS, podutil.name_of(pod), patch, podutil.namespace_of(pod)
                )
            except ApiError as err:
                if err.code in (404, 409):
                    continue
                raise
            self.pods.assume(adopted)
            owned.append(adopted)
        return owned

    async def manage_replicas(self, rs: Object, pods: list[Object]) -> None:
        wanted = int((rs.get("spec") or {}).get("replicas", 1) or 0)
        active = [p for p in pods if podutil.is_active(p)]
        diff = len(active) - wanted
        if diff < 0:
            await self.create_pods(rs, min(-diff, BURST))
        elif diff > 0:
            doomed = sorted(active, key=podutil.deletion_rank)[:diff]
            await asyncio.gather(*(podcontrol.delete_pod(self, rs, pod) for pod in doomed))

    async def create_pods(self, rs: Object, count: int) -> None:
        template = (rs.get("spec") or {}).get("template") or {}
        created = 0
        batch = 1
        while created < count:
            size = min(batch, count - created)
            results = await asyncio.gather(
                *(self._create_pod(rs, template) for _ in range(size)), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            created += size - len(failures)
            if failures:
                raise failures[0]  # podcontrol recorded each refusal as a FailedCreate Event
            batch *= 2

    async def _create_pod(self, rs: Object, template: Object) -> None:
        pod = podutil.pod_from_template(template, rs, generate_name=f"{podutil.name_of(rs)}-")
        await podcontrol.create_pod(self, rs, pod)

"""The Deployment controller: ReplicaSets per pod template, rollouts, history and status.

Each distinct pod template gets a ReplicaSet named ``<deployment>-<pod-template-hash>``; the
one matching the current template is *new*, the rest are *old*. ``RollingUpdate`` grows the new
one within ``maxSurge`` and shrinks old ones only while ``maxUnavailable`` holds (counting
available pods, see :mod:`.rollout`); ``Recreate`` removes every old pod before the new
ReplicaSet grows. Revisions are the ``deployment.kubernetes.io/revision`` annotation, which is
what ``kubectl rollout history`` and ``kubectl rollout undo`` read and write; going back to an
old template re-uses its ReplicaSet with the next revision. A paused Deployment only scales.
Status (counts, ``observedGeneration``, ``Available`` and ``Progressing`` conditions including
``ProgressDeadlineExceeded``) is what ``kubectl rollout status`` waits on.
"""

from __future__ import annotations

import copy
import datetime
import logging
from typing import Any

from k3py.cluster.api.status import ApiError
from k3py.cluster.client.events import timestamp
from k3py.cluster.server.controllers import podutil, rollout
from k3py.cluster.server.controllers.base import (
    DEPLOYMENTS,
    POD_EVENT_DELAY,
    PODS,
    REPLICASETS,
    ControllerContext,
    QueueController,
)
from k3py.cluster.server.controllers.rollout import Counts

logger = logging.getLogger("k3py.controllers.deployment")

Object = dict[str, Any]


class DeploymentController(QueueController):
    name = "deployment"
    component = "deployment-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.deployments = ctx.informers.get(DEPLOYMENTS)
        self.replicasets = ctx.informers.get(REPLICASETS)
        self.pods = ctx.informers.get(PODS)
        self.deployments.add_handler(self.enqueue, lambda _o, n: self.enqueue(n), self.enqueue)
        self.replicasets.add_handler(self._rs_event, self._rs_changed, self._rs_event)
        self.pods.add_handler(self._pod_event, lambda _o, n: self._pod_event(n), self._pod_event)

    def _rs_event(self, rs: Object) -> None:
        self.enqueue_owner(rs, "Deployment")

    def _rs_changed(self, old: Object, new: Object) -> None:
        # A ReplicaSet's status follows its pods, whose events already queue the Deployment
        # 50 ms later: a status write alone joins that pass rather than causing one more.
        same_spec = old.get("spec") == new.get("spec")
        status_only = same_spec and podutil.is_terminating(old) == podutil.is_terminating(new)
        self.enqueue_owner(new, "Deployment", delay=POD_EVENT_DELAY if status_only else 0.0)

    def _pod_event(self, pod: Object) -> None:
        ref = podutil.controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.replicasets.get(str(ref["name"]), podutil.namespace_of(pod))
        if rs is not None:
            self.enqueue_owner(rs, "Deployment", delay=POD_EVENT_DELAY)

    # -- reading ----------------------------------------------------------------------------------

    def _counts(
        self,
        rs: Object,
        now: datetime.datetime,
        tallies: dict[tuple[str, int], podutil.Tally] | None = None,
    ) -> Counts:
        """``rs``'s pods counted; ``tallies`` keeps the counts of one moment for reuse."""
        key = (podutil.uid_of(rs), rollout.min_ready_seconds(rs))
        counted = tallies.get(key) if tallies is not None else None
        if counted is None:
            counted = podutil.tally(self.pods.by_index("owner", key[0]), key[1], now)
            if tallies is not None:
                tallies[key] = counted
        return rollout.counts_from(rs, counted)

    def _owned(self, deployment: Object) -> list[Object]:
        return [
            rs
            for rs in self.replicasets.by_index("owner", podutil.uid_of(deployment))
            if not podutil.is_terminating(rs)
        ]

    # -- the loop --------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> float | None:
        deployment = self.deployments.get_by_key(key)
        if deployment is None or podutil.is_terminating(deployment):
            return None
        now = self.clock.now()
        owned = self._owned(deployment)
        template = (deployment.get("spec") or {}).get("template") or {}
        matching = sorted(
            (
                rs
                for rs in owned
                if rollout.same_template(rs["spec"].get("template") or {}, template)
            ),
            key=lambda rs: str(podutil.meta(rs).get("creationTimestamp") or ""),
        )
        new_rs = matching[0] if matching else None
        old_rs = [rs for rs in owned if rs is not new_rs]
        paused = bool((deployment.get("spec") or {}).get("paused"))
        created = False
        if new_rs is not None:
            new_rs = await self._ensure_revision(deployment, new_rs, old_rs)
        strategy = ((deployment.get("spec") or {}).get("strategy") or {}).get("type")
        if paused:
            # Paused: follow a changed replica count, roll nothing out.
            active = [r for r in owned if rollout.spec_replicas(r)] or (
                [new_rs] if new_rs is not None else []
            )
            if len(active) == 1:
                scaled = await self._scale(deployment, active[0], rollout.spec_replicas(deployment))
                if new_rs is not None and podutil.name_of(scaled) == podutil.name_of(new_rs):
                    new_rs = scaled
        elif strategy == "Recreate":
            new_rs, created = await self._recreate(deployment, new_rs, old_rs, now)
        else:
            new_rs, created = await self._rolling(deployment, new_rs, old_rs, now)
        return await self._sync_status(deployment, new_rs, paused, created)

    async def _recreate(
        self,
        deployment: Object,
        new_rs: Object | None,
        old_rs: list[Object],
        now: datetime.datetime,
    ) -> tuple[Object | None, bool]:
        for rs in old_rs:
            if rollout.spec_replicas(rs):
                await self._scale(deployment, rs, 0)
        for rs in old_rs:
            if any(
                podutil.phase(p) not in ("Succeeded", "Failed")
                for p in self.pods.by_index("owner", podutil.uid_of(rs))
            ):
                return new_rs, False  # old pods still exist (even terminating): wait
        created = False
        if new_rs is None:
            new_rs = await self._create_rs(deployment, old_rs, 0)
            created = True
        await self._scale(deployment, new_rs, rollout.spec_replicas(deployment))
        return new_rs, created

    async def _rolling(
        self,
        deployment: Object,
        new_rs: Object | None,
        old_rs: list[Object],
        now: datetime.datetime,
    ) -> tuple[Object | None, bool]:
        created = False
        old_counts = [self._counts(rs, now) for rs in old_rs]
        if new_rs is None:
            placeholder = {"metadata": {"name": ""}, "spec": {"replicas": 0}}
            size = rollout.new_replicas_for_rolling(
                deployment, old_counts, Counts(placeholder, 0, 0, 0, 0)
            )
            new_rs = await self._create_rs(deployment, old_rs, size)
            created = True
            if size:
                self._scaled(deployment, new_rs, 0, size)
        new = self._counts(new_rs, now)
        wanted = rollout.new_replicas_for_rolling(deployment, [*old_counts, new], new)
        if wanted != new.replicas:
            new_rs = await self._scale(deployment, new_rs, wanted)
            return new_rs, created
        sizes = rollout.old_scale_down(deployment, [*old_counts, new], new, old_counts)
        for rs in old_rs:
            if podutil.name_of(rs) in sizes:
                await self._scale(deployment, rs, sizes[podutil.name_of(rs)])
        return new_rs, created

    # -- writes ---------------------------------------------------------------------------------

    def _scaled(self, deployment: Object, rs: Object, before: int, after: int) -> None:
        direction = "up" if after > before else "down"
        self.event(
            deployment,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled {direction} replica set {podutil.name_of(rs)} from {before} to {after}",
        )

    async def _scale(self, deployment: Object, rs: Object, size: int) -> Object:
        before = rollout.spec_replicas(rs)
        surge, _ = rollout.surge_and_unavailable(deployment)
        desired = str(rollout.spec_replicas(deployment))
        most = str(rollout.spec_replicas(deployment) + surge)
        annotations = podutil.meta(rs).get("annotations") or {}
        if (
            before == size
            and annotations.get(rollout.DESIRED_REPLICAS) == desired
            and annotations.get(rollout.MAX_REPLICAS) == most
        ):
            return rs
        patch = {
            "metadata": {
                "resourceVersion": podutil.meta(rs).get("resourceVersion"),
                "annotations": {rollout.DESIRED_REPLICAS: desired, rollout.MAX_REPLICAS: most},
            },
            "spec": {"replicas": size},
        }
        updated = await self.api.patch(
            REPLICASETS, podutil.name_of(rs), patch, podutil.namespace_of(rs)
        )
        self.replicasets.assume(updated)
        if before != size:
            self._scaled(deployment, updated, before, size)
        return updated

    async def _ensure_revision(
        self, deployment: Object, new_rs: Object, old_rs: list[Object]
    ) -> Object:
        """The new ReplicaSet carries the highest revision (after an undo it gets the next)."""
        highest_old = max((rollout.revision(rs) for rs in old_rs), default=0)
        current = rollout.revision(new_rs)
        annotations: dict[str, str] = {}
        if current <= highest_old:
            annotations[rollout.REVISION] = str(highest_old + 1)
            history = (podutil.meta(new_rs).get("annotations") or {}).get(rollout.REVISION_HISTORY)
            if current:
                earlier = [h for h in (history or "").split(",") if h]
                annotations[rollout.REVISION_HISTORY] = ",".join([*earlier, str(current)])
        for key, value in rollout.copied_annotations(deployment).items():
            if (podutil.meta(new_rs).get("annotations") or {}).get(key) != value:
                annotations[key] = value
        if annotations:
            patch = {
                "metadata": {
                    "resourceVersion": podutil.meta(new_rs).get("resourceVersion"),
                    "annotations": annotations,
                }
            }
            new_rs = await self.api.patch(
                REPLICASETS, podutil.name_of(new_rs), patch, podutil.namespace_of(new_rs)
            )
            self.replicasets.assume(new_rs)
        return new_rs

    async def _create_rs(self, deployment: Object, old_rs: list[Object], size: int) -> Object:
        spec = deployment.get("spec") or {}
        collisions = int((deployment.get("status") or {}).get("collisionCount") or 0)
        template = copy.deepcopy(spec.get("template") or {})
        digest = rollout.template_hash(template, collisions)
        template.setdefault("metadata", {}).setdefault("labels", {})[rollout.HASH_LABEL] = digest
        selector = copy.deepcopy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[rollout.HASH_LABEL] = digest
        surge, _ = rollout.surge_and_unavailable(deployment)
        annotations = rollout.copied_annotations(deployment)
        annotations[rollout.REVISION] = str(
            max((rollout.revision(rs) for rs in old_rs), default=0) + 1
        )
        annotations[rollout.DESIRED_REPLICAS] = str(rollout.spec_replicas(deployment))
        annotations[rollout.MAX_REPLICAS] = str(rollout.spec_replicas(deployment) + surge)
        name = f"{podutil.name_of(deployment)}-{digest}"
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": podutil.namespace_of(deployment),
                "labels": dict(template["metadata"]["labels"]),
                "annotations": annotations,
                "ownerReferences": [podutil.owner_reference(deployment)],
            },
            "spec": {
                "replicas": size,
                "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                "selector": selector,
                "template": template,
            },
        }
        try:
            created = await self.api.create(REPLICASETS, rs, podutil.namespace_of(deployment))
        except ApiError as err:
            if err.code != 409 or err.reason != "AlreadyExists":
                raise
            existing = await self.api.get(REPLICASETS, name, podutil.namespace_of(deployment))
            ref = podutil.controller_ref(existing)
            if (
                ref is not None
                and ref.get("uid") == podutil.uid_of(deployment)
                and rollout.same_template(existing["spec"]["template"], template)
            ):
                self.replicasets.assume(existing)
                return existing
            # A different ReplicaSet holds the name: change the hash and try again.
            await self.api.patch(
                DEPLOYMENTS,
                podutil.name_of(deployment),
                {"status": {"collisionCount": collisions + 1}},
                podutil.namespace_of(deployment),
                subresource="status",
            )
            raise
        self.replicasets.assume(created)
        return created

    # -- status ---------------------------------------------------------------------------------

    async def _sync_status(
        self, deployment: Object, new_rs: Object | None, paused: bool, created: bool
    ) -> float | None:
        now = self.clock.now()
        owned = self._owned(deployment)
        tallies: dict[tuple[str, int], podutil.Tally] = {}  # the new ReplicaSet is counted once
        new_counts = self._counts(new_rs, now, tallies) if new_rs is not None else None
        all_counts = [self._counts(rs, now, tallies) for rs in owned]
        if new_counts is not None and not any(c.name == new_counts.name for c in all_counts):
            all_counts.append(new_counts)
        status = rollout.deployment_status(deployment, all_counts, new_counts)
        old = deployment.get("status") or {}
        conditions = [dict(c) for c in old.get("conditions") or []]
        stamp = timestamp(self.clock)
        replicas = rollout.spec_replicas(deployment)
        _, max_unavailable = rollout.surge_and_unavailable(deployment)
        if status.get("availableReplicas", 0) >= replicas - max_unavailable:
            available = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        else:
            available = (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        conditions = rollout.set_condition(
            conditions,
            rollout.make_condition(
                "Available", *available, stamp, podutil.condition(deployment, "Available")
            ),
        )
        progressing = podutil.condition(deployment, "Progressing")
        rs_name = podutil.name_of(new_rs) if new_rs is not None else ""
        wait: float | None = None
        progressed = False
        complete = rollout.is_complete(deployment, status)
        if paused:
            cond = ("Unknown", "DeploymentPaused", "Deployment is paused")
        elif progressing is not None and progressing.get("reason") == "DeploymentPaused":
            cond = ("Unknown", "DeploymentResumed", "Deployment is resumed")
        elif complete:
            cond = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif created:
            cond = ("True", "NewReplicaSetCreated", f'Created new replica set "{rs_name}"')
        elif progressing is None:
            cond = ("True", "FoundNewReplicaSet", f'Found new replica set "{rs_name}"')
        elif rollout.made_progress(old, status) or progressing.get("reason") in (
            "DeploymentResumed",
        ):
            cond = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
            progressed = True
        else:
            cond = (
                str(progressing.get("status")),
                str(progressing.get("reason")),
                str(progressing.get("message")),
            )
            deadline = (deployment.get("spec") or {}).get("progressDeadlineSeconds")
            last = podutil.parse_time(progressing.get("lastUpdateTime"))
            if deadline is not None and last is not None and cond[0] == "True":
                left = (last + datetime.timedelta(seconds=int(deadline)) - now).total_seconds()
                if left <= 0:
                    cond = (
                        "False",
                        "ProgressDeadlineExceeded",
                        f'ReplicaSet "{rs_name}" has timed out progressing.',
                    )
                else:
                    wait = left
        new_cond = rollout.make_condition("Progressing", *cond, stamp, progressing)
        if progressed:
            new_cond["lastUpdateTime"] = stamp  # progress resets the deadline
            conditions = [c for c in conditions if c.get("type") != "Progressing"] + [new_cond]
        else:
            conditions = rollout.set_condition(conditions, new_cond)
        deadline = (deployment.get("spec") or {}).get("progressDeadlineSeconds")
        if wait is None and deadline is not None and not complete and cond[0] == "True":
            wait = float(deadline)  # look again when this progress would time out
        status["conditions"] = conditions
        if status != old:
            updated = await self.api.update(
                DEPLOYMENTS, {**deployment, "status": status}, subresource="status"
            )
            self.deployments.assume(updated)
            deployment = updated
        await self._note_revision(deployment, new_rs)
        if complete and not paused:
            await self._clean_history(deployment)
        return wait

    async def _note_revision(self, deployment: Object, new_rs: Object | None) -> None:
        if new_rs is None:
            return
        wanted = str(rollout.revision(new_rs))
        annotations = podutil.meta(deployment).get("annotations") or {}
        if annotations.get(rollout.REVISION) == wanted:
            return
        updated = await self.api.patch(
            DEPLOYMENTS,
            podutil.name_of(deployment),
            {"metadata": {"annotations": {rollout.REVISION: wanted}}},
            podutil.namespace_of(deployment),
        )
        self.deployments.assume(updated)

    async def _clean_history(self, deployment: Object) -> None:
        limit = (deployment.get("spec") or {}).get("revisionHistoryLimit")
        if limit is None:
            return
        template = (deployment.get("spec") or {}).get("template") or {}
        idle = [
            rs
            for rs in self._owned(deployment)
            if rollout.spec_replicas(rs) == 0
            and not (rs.get("status") or {}).get("replicas")
            and not rollout.same_template(rs["spec"].get("template") or {}, template)
            and not self.pods.by_index("owner", podutil.uid_of(rs))
        ]
        idle.sort(key=rollout.revision)
        for rs in idle[: max(0, len(idle) - int(limit))]:
            try:
                await self.api.delete(
                    REPLICASETS,
                    podutil.name_of(rs),
                    podutil.namespace_of(rs),
                    preconditions={"uid": podutil.uid_of(rs)},
                )
            except ApiError as err:
                if err.code not in (404, 409):
                    raise
            self.replicasets.assume_deleted(rs)

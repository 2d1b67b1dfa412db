"""The arithmetic of Deployment rollouts, as pure functions over ReplicaSets and pod counts.

Template hashes (``pod-template-hash``), revisions, maxSurge/maxUnavailable resolution, how far
a rolling update may scale the new ReplicaSet up and the old ones down, the Deployment's status
and its ``Available``/``Progressing`` conditions with kube-controller-manager's reasons and
messages. The controller in :mod:`.deployment` reads caches, calls these, and writes.
Availability is counted from pods, capped by each ReplicaSet's ``spec.replicas`` — pods beyond
that are about to go, so they never let a rollout take down more than ``maxUnavailable``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from k3py.cluster.server.controllers import podutil

Object = dict[str, Any]

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_NOT_COPIED = frozenset(
    {LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS,
     "deprecated.deployment.rollback.to"}
)  # fmt: skip
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def template_hash(template: Object, collision_count: int = 0) -> str:
    """FNV-1a of the template (and the collision count), spelt in kube's safe alphabet."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[int(digit) % len(_SAFE)] for digit in str(value))


def without_hash(template: Object) -> Object:
    clean = copy.deepcopy(template)
    labels = (clean.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
        if not labels:
            clean["metadata"].pop("labels")
    if clean.get("metadata") == {}:
        clean.pop("metadata")
    return clean


def same_template(a: Object, b: Object) -> bool:
    return without_hash(a) == without_hash(b)


def revision(rs: Object) -> int:
    try:
        return int((podutil.meta(rs).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def spec_replicas(obj: Object) -> int:
    return int((obj.get("spec") or {}).get("replicas", 0) or 0)


def copied_annotations(deployment: Object) -> dict[str, str]:
    annotations = podutil.meta(deployment).get("annotations") or {}
    return {k: v for k, v in annotations.items() if k not in _NOT_COPIED}


def surge_and_unavailable(deployment: Object) -> tuple[int, int]:
    """maxSurge (rounded up) and maxUnavailable (rounded down); both 0 means 1 unavailable."""
    replicas = spec_replicas(deployment)
    strategy = (deployment.get("spec") or {}).get("strategy") or {}
    rolling = strategy.get("rollingUpdate") or {}
    surge = podutil.scaled_value(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = podutil.scaled_value(
        rolling.get("maxUnavailable", "25%"), replicas, round_up=False
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


@dataclass(frozen=True)
class Counts:
    """One ReplicaSet as a rollout decision sees it."""

    rs: Object
    replicas: int  # spec.replicas
    available: int  # available pods, at most ``replicas``
    active: int  # pods not terminating and not finished
    ready: int

    @property
    def name(self) -> str:
        return podutil.name_of(self.rs)


def min_ready_seconds(rs: Object) -> int:
    return int((rs.get("spec") or {}).get("minReadySeconds") or 0)


def counts_from(rs: Object, counted: podutil.Tally) -> Counts:
    """``rs``'s counts from its pods' tally (:func:`podutil.tally` with its
    ``minReadySeconds``: one pass that runs on every change of every pod a Deployment owns)."""
    replicas = spec_replicas(rs)
    return Counts(rs, replicas, min(counted.available, replicas), counted.active, counted.ready)


def new_replicas_for_rolling(deployment: Object, all_rs: list[Counts], new: Counts) -> int:
    """How large the new ReplicaSet may be now (kube's NewRSNewReplicas)."""
    wanted = spec_replicas(deployment)
    if new.replicas >= wanted:
        return wanted
    surge, _ = surge_and_unavailable(deployment)
    current = sum(c.replicas for c in all_rs)
    room = wanted + surge - current
    if room <= 0:
        return new.replicas
    return new.replicas + min(room, wanted - new.replicas)


def old_scale_down(
    deployment: Object, all_rs: list[Counts], new: Counts | None, old: list[Counts]
) -> dict[str, int]:
    """New sizes for old ReplicaSets that may shrink now without breaking maxUnavailable."""
    if sum(c.replicas for c in old) == 0:
        return {}
    _, max_unavailable = surge_and_unavailable(deployment)
    min_available = spec_replicas(deployment) - max_unavailable
    total = sum(c.replicas for c in all_rs)
    new_unavailable = max(0, new.replicas - new.available) if new else 0
    budget = total - min_available - new_unavailable
    if budget <= 0:
        return {}
    sizes = {c.name: c.replicas for c in old}
    # First the old pods that are not available anyway: removing them costs nothing.
    for c in sorted(old, key=_oldest_first):
        if budget <= 0:
            break
        unhealthy = c.replicas - c.available
        cut = min(unhealthy, budget)
        if cut > 0:
            sizes[c.name] -= cut
            budget -= cut
    available = sum(c.available for c in all_rs)
    spare = available - min_available
    for c in sorted(old, key=_oldest_first):
        if spare <= 0:
            break
        cut = min(sizes[c.name], c.available, spare)
        if cut > 0:
            sizes[c.name] -= cut
            spare -= cut
    return {name: size for name, size in sizes.items() if size != _replicas_of(old, name)}


def _replicas_of(items: list[Counts], name: str) -> int:
    return next(c.replicas for c in items if c.name == name)


def _oldest_first(c: Counts) -> tuple[int, str]:
    return revision(c.rs), str(podutil.meta(c.rs).get("creationTimestamp") or "")


# -- status and conditions ----------------------------------------------------------------------


def make_condition(
    kind: str, status: str, reason: str, message: str, now: str, old: Object | None
) -> Object:
    transition = now
    if old is not None and old.get("status") == status:
        transition = str(old.get("lastTransitionTime") or now)
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }


def set_condition(conditions: list[Object], cond: Object) -> list[Object]:
    """Replace the condition of the same type; keep lastUpdateTime if nothing else changed."""
    out = []
    placed = False
    for existing in conditions:
        if existing.get("type") != cond["type"]:
            out.append(existing)
            continue
        placed = True
        same = all(existing.get(k) == cond[k] for k in ("status", "reason", "message"))
        out.append(existing if same else cond)
    if not placed:
        out.append(cond)
    return out


def deployment_status(deployment: Object, all_rs: list[Counts], new: Counts | None) -> Object:
    """Counts part of the status (conditions are added by the controller)."""
    old = deployment.get("status") or {}
    status: Object = {
        "observedGeneration": podutil.meta(deployment).get("generation", 0),
        "replicas": sum(c.active for c in all_rs),
        "updatedReplicas": new.active if new else 0,
        "readyReplicas": sum(c.ready for c in all_rs),
        "availableReplicas": sum(c.available for c in all_rs),
    }
    status["unavailableReplicas"] = max(
        0, sum(c.replicas for c in all_rs) - status["availableReplicas"]
    )
    if old.get("collisionCount"):
        status["collisionCount"] = old["collisionCount"]
    for key in ("updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas",
                "replicas"):  # fmt: skip
        if not status[key]:
            del status[key]  # zero counts are omitted on the wire
    return status


def is_complete(deployment: Object, status: Object) -> bool:
    replicas = spec_replicas(deployment)
    return bool(
        status.get("updatedReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
        and status.get("availableReplicas", 0) == replicas
        and status.get("observedGeneration", 0) >= podutil.meta(deployment).get("generation", 0)
    )


def made_progress(old: Object, new: Object) -> bool:
    """kube's DeploymentProgressing: any step forward since the last status."""
    return bool(
        new.get("updatedReplicas", 0) > old.get("updatedReplicas", 0)
        or new.get("replicas", 0) < old.get("replicas", 0)
        or new.get("readyReplicas", 0) > old.get("readyReplicas", 0)
        or new.get("availableReplicas", 0) > old.get("availableReplicas", 0)
    )

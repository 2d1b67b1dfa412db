"""Small shared facts about pods and owners, as the controllers judge them.

Whether a pod is active, ready or available (ready for ``minReadySeconds``); the
ownerReference a controller puts on what it creates; a pod made from a template; the ordering
in which a shrinking ReplicaSet or Job gives up pods (unscheduled, pending and not-ready ones
first); times in Kubernetes' RFC 3339 form; ``IntOrString`` values like ``25%``.
"""

from __future__ import annotations

import copy
import datetime
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Object = dict[str, Any]


def meta(obj: Object) -> Object:
    found = obj.get("metadata")
    return found if isinstance(found, dict) else {}


def name_of(obj: Object) -> str:
    return str(meta(obj).get("name", ""))


def namespace_of(obj: Object) -> str:
    return str(meta(obj).get("namespace", ""))


def uid_of(obj: Object) -> str:
    return str(meta(obj).get("uid", ""))


def parse_time(text: Any) -> datetime.datetime | None:
    if not text or not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_terminating(obj: Object) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def phase(pod: Object) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def is_active(pod: Object) -> bool:
    """Counted toward a controller's replicas: not being deleted, not finished."""
    return not is_terminating(pod) and phase(pod) not in ("Succeeded", "Failed")


def condition(obj: Object, kind: str) -> Object | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def _stored_condition(obj: Object, kind: str) -> Object | None:
    # Read-only look-up: the controllers' status sums ask this of every pod on every change,
    # so it does not copy as ``condition`` does.
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == kind:
            return cond  # type: ignore[no-any-return]
    return None


def is_ready(pod: Object) -> bool:
    cond = _stored_condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def ready_since(pod: Object) -> datetime.datetime | None:
    cond = _stored_condition(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    return parse_time(cond.get("lastTransitionTime"))


def is_available(pod: Object, min_ready_seconds: int, now: datetime.datetime) -> bool:
    if not is_ready(pod) or is_terminating(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    return since is not None and since + datetime.timedelta(seconds=min_ready_seconds) <= now


def seconds_until_available(
    pod: Object, min_ready_seconds: int, now: datetime.datetime
) -> float | None:
    """For a ready pod not yet available, how long until it is (None: not applicable)."""
    since = ready_since(pod)
    if since is None or min_ready_seconds <= 0:
        return None
    left = (since + datetime.timedelta(seconds=min_ready_seconds) - now).total_seconds()
    return left if left > 0 else None


@dataclass(frozen=True, slots=True)
class Tally:
    """What a controller's status counts of its pods (see :func:`tally`)."""

    active: int
    ready: int
    available: int
    labelled: int
    next_available: float | None  # seconds until a ready pod becomes available, if one will


def tally(
    pods: Iterable[Object],
    min_ready_seconds: int,
    now: datetime.datetime,
    labels: Mapping[str, str] | None = None,
) -> Tally:
    """Active, ready, available pods and those carrying ``labels``, in one pass.

    The same judgement as :func:`is_active`, :func:`is_ready`, :func:`is_available` and
    :func:`seconds_until_available`, written out inline: the ReplicaSet and Deployment status
    sums run it over every owned pod on every change of one of them, and the calls per pod
    dominated a large scale-up.
    """
    active = ready = available = labelled = 0
    waits: list[float] = []
    wanted = list(labels.items()) if labels else []
    for pod in pods:
        pod_meta = pod.get("metadata")
        if not isinstance(pod_meta, dict):
            pod_meta = {}
        if pod_meta.get("deletionTimestamp"):
            continue
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            continue
        active += 1
        if wanted:
            pod_labels = pod_meta.get("labels") or {}
            if all(pod_labels.get(k) == v for k, v in wanted):
                labelled += 1
        else:
            labelled += 1
        ready_condition = None
        for cond in status.get("conditions") or ():
            if cond.get("type") == "Ready":
                ready_condition = cond
                break
        if ready_condition is None or ready_condition.get("status") != "True":
            continue
        ready += 1
        if min_ready_seconds <= 0:
            available += 1
            continue
        since = parse_time(ready_condition.get("lastTransitionTime"))
        if since is None:
            continue
        left = (since + datetime.timedelta(seconds=min_ready_seconds) - now).total_seconds()
        if left > 0:
            waits.append(left)
        else:
            available += 1
    return Tally(active, ready, available, labelled, min(waits) if waits else None)


def controller_ref(obj: Object) -> Object | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_reference(owner: Object) -> Object:
    return {
        "apiVersion": owner.get("apiVersion", ""),
        "kind": owner.get("kind", ""),
        "name": name_of(owner),
        "uid": uid_of(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_from_template(
    template: Object,
    owner: Object,
    *,
    generate_name: str,
    labels: dict[str, str] | None = None,
    node_name: str | None = None,
) -> Object:
    template_meta = template.get("metadata") or {}
    pod_labels = dict(template_meta.get("labels") or {})
    pod_labels.update(labels or {})
    pod_meta: Object = {
        "generateName": generate_name,
        "namespace": namespace_of(owner),
        "labels": pod_labels,
        "ownerReferences": [owner_reference(owner)],
    }
    if template_meta.get("annotations"):
        pod_meta["annotations"] = dict(template_meta["annotations"])
    if template_meta.get("finalizers"):
        pod_meta["finalizers"] = list(template_meta["finalizers"])
    spec = copy.deepcopy(template.get("spec") or {})
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec}


def deletion_rank(pod: Object) -> tuple[int, int, int, str]:
    """Sort key: pods to give up first come first (kube's ActivePods ordering, simplified)."""
    spec = pod.get("spec") or {}
    assigned = 1 if spec.get("nodeName") else 0
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(phase(pod), 0)
    ready = 1 if is_ready(pod) else 0
    # Newer pods go first among equals: reverse the creation time's order.
    created = str(meta(pod).get("creationTimestamp") or "")
    inverted = "".join(chr(0x10FFFF - ord(c)) for c in created)
    return assigned, phase_rank, ready, inverted


def scaled_value(value: Any, total: int, *, round_up: bool) -> int:
    """An ``IntOrString`` (3 or "25%") against ``total``."""
    if isinstance(value, int):
        return value
    if value is None:
        return 0
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = int(text[:-1])
        except ValueError:
            return 0
        exact = percent * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    try:
        return int(text)
    except ValueError:
        return 0

"""A pod's status as the kubelet reports it, computed from what the runtime shows.

Each container's status comes from its latest instance (running, terminated, or waiting with
the reason the pod worker gave: ``ContainerCreating``, ``CrashLoopBackOff``, ``ErrImagePull``…);
``lastState`` is the instance before it; ``restartCount`` is the latest attempt number. The
phase follows the kubelet's rules (a crash-looping container keeps a ``Running`` pod running;
all containers done makes it ``Succeeded`` or ``Failed`` by restart policy), and conditions keep
their ``lastTransitionTime`` while their status does not change.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from k3py.cluster.agent.podsync.spec import Pod, spec
from k3py.cluster.agent.runtime import ContainerInfo


def timestamp(moment: datetime.datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerView:
    """What the pod worker knows of one spec container."""

    name: str
    image: str
    instances: Sequence[ContainerInfo] = ()
    waiting: tuple[str, str] | None = None
    ready: bool = False
    started: bool = False

    @property
    def latest(self) -> ContainerInfo | None:
        return self.instances[-1] if self.instances else None

    @property
    def previous(self) -> ContainerInfo | None:
        return self.instances[-2] if len(self.instances) > 1 else None


@dataclass
class PodView:
    init: list[ContainerView] = field(default_factory=list)
    app: list[ContainerView] = field(default_factory=list)
    pod_ip: str = ""
    host_ip: str = ""
    sandbox_ready: bool = False
    failed_reason: str = ""
    failed_message: str = ""


def _terminated(info: ContainerInfo, scheme: str) -> dict[str, Any]:
    code = info.exit_code if info.exit_code is not None else 0
    reason = "OOMKilled" if info.oom_killed else ("Completed" if code == 0 else "Error")
    state: dict[str, Any] = {
        "exitCode": code,
        "reason": reason,
        "startedAt": timestamp(info.started_at),
        "finishedAt": timestamp(info.finished_at),
        "containerID": f"{scheme}://{info.id}",
    }
    if info.error:
        state["message"] = info.error
    return {"terminated": state}


def container_status(view: ContainerView, scheme: str) -> dict[str, Any]:
    latest = view.latest
    status: dict[str, Any] = {
        "name": view.name,
        "image": view.image,
        "imageID": "",
        "ready": view.ready,
        "restartCount": latest.attempt if latest else 0,
        "started": view.started,
        "state": {},
        "lastState": {},
    }
    last: ContainerInfo | None = view.previous
    if latest is not None:
        status["containerID"] = f"{scheme}://{latest.id}"
        status["imageID"] = latest.image_id
    if view.waiting is not None and (latest is None or latest.status != "running"):
        reason, message = view.waiting
        status["state"] = {
            "waiting": {"reason": reason, **({"message": message} if message else {})}
        }
        if latest is not None and latest.status == "exited":
            last = latest
    elif latest is None or latest.status == "created":
        status["state"] = {"waiting": {"reason": "ContainerCreating"}}
    elif latest.status == "running":
        status["state"] = {"running": {"startedAt": timestamp(latest.started_at)}}
    else:
        status["state"] = _terminated(latest, scheme)
    if last is not None and last.status == "exited":
        status["lastState"] = _terminated(last, scheme)
    if status["state"].get("running") is None:
        status["started"] = False
    return status


def _phase(pod: Pod, view: PodView, statuses: list[dict[str, Any]]) -> str:
    if view.failed_reason:
        return "Failed"
    policy = spec(pod).get("restartPolicy", "Always")
    if any(not _init_done(c) for c in view.init):
        return "Pending"
    running = stopped = succeeded = waiting = 0
    for status in statuses:
        state = status["state"]
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            succeeded += state["terminated"]["exitCode"] == 0
        elif status["lastState"].get("terminated"):
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _init_done(view: ContainerView) -> bool:
    latest = view.latest
    return latest is not None and latest.status == "exited" and latest.exit_code == 0


def _condition(
    kind: str, value: bool, previous: Mapping[str, dict[str, Any]], now: str, reason: str = ""
) -> dict[str, Any]:
    status = "True" if value else "False"
    old = previous.get(kind)
    transition = old.get("lastTransitionTime") if old and old.get("status") == status else now
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": transition,
    }
    if reason and not value:
        condition["reason"] = reason
    return condition


def qos_class(pod: Pod) -> str:
    containers = [*(spec(pod).get("initContainers") or []), *(spec(pod).get("containers") or [])]
    requests_any = limits_any = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        requests_any |= bool(requests)
        limits_any |= bool(limits)
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                guaranteed = False
    if not requests_any and not limits_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def pod_status(pod: Pod, view: PodView, *, scheme: str, now: datetime.datetime) -> dict[str, Any]:
    """The pod's ``status`` (the whole object, ready for a status update)."""
    old: dict[str, Any] = pod.get("status") or {}
    previous = {c.get("type", ""): c for c in old.get("conditions") or [] if isinstance(c, dict)}
    stamp = timestamp(now) or ""
    init_statuses = [container_status(c, scheme) for c in view.init]
    statuses = [container_status(c, scheme) for c in view.app]
    phase = _phase(pod, view, statuses)
    initialized = all(_init_done(c) for c in view.init)
    containers_ready = bool(view.app) and all(s["ready"] for s in statuses)
    if phase in {"Succeeded", "Failed"}:
        containers_ready = False
        for entry in statuses:
            entry["ready"] = False
    not_ready = [s["name"] for s in statuses if not s["ready"]]
    unready_reason = "PodCompleted" if phase in {"Succeeded", "Failed"} else "ContainersNotReady"
    conditions = [
        _condition("PodReadyToStartContainers", view.sandbox_ready, previous, stamp),
        _condition(
            "Initialized",
            initialized,
            previous,
            stamp,
            "PodCompleted" if phase in {"Succeeded", "Failed"} else "ContainersNotInitialized",
        ),
        _condition("Ready", containers_ready, previous, stamp, unready_reason),
        _condition("ContainersReady", containers_ready, previous, stamp, unready_reason),
        previous.get("PodScheduled")
        or {
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": stamp,
        },
    ]
    for condition in conditions:
        if condition["type"] in {"Ready", "ContainersReady"} and not_ready and not containers_ready:
            condition["message"] = f"containers with unready status: [{' '.join(not_ready)}]"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}] if view.host_ip else [],
        "startTime": old.get("startTime") or stamp,
        "containerStatuses": statuses,
        "qosClass": old.get("qosClass") or qos_class(pod),
    }
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    if view.failed_reason:
        status["reason"] = view.failed_reason
        status["message"] = view.failed_message
    for key in ("nominatedNodeName",):
        if key in old:
            status[key] = old[key]
    return status


def same_status(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Equal apart from what the server adds on its own (ordering of keys)."""
    return (a or {}) == (b or {})

"""Table printers for Pods and Nodes: READY, STATUS and RESTARTS as kubectl derives them.

A pod's STATUS is its phase unless something more telling applies, checked in kubectl's order:
a failing or waiting init container (``Init:CrashLoopBackOff``, ``Init:1/2``), then the first
waiting or terminated container (``ContainerCreating``, ``CrashLoopBackOff``, ``Completed``,
``ExitCode:1``), and ``Terminating`` once a deletion has started. A node's STATUS comes from its
Ready condition and ``spec.unschedulable``; its ROLES from ``node-role.kubernetes.io/*`` labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from k3py.cluster.api.printing import (
    AGE,
    NAME,
    Cells,
    Column,
    Obj,
    as_dict,
    as_int,
    as_list,
    human_duration,
    name_of,
    object_age,
    parse_time,
)

# --- pods ---------------------------------------------------------------------------------------

POD_COLUMNS = [
    NAME,
    Column("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
    Column("Status", description="The aggregate status of the containers in this pod."),
    Column(
        "Restarts",
        description="The number of times the containers in this pod have been restarted and "
        "when the last container in this pod has restarted.",
    ),
    AGE,
    Column("IP", description="podIP address allocated to the pod.", priority=1),
    Column(
        "Node", description="NodeName indicates in which node this pod is scheduled.", priority=1
    ),
    Column(
        "Nominated Node",
        description="nominatedNodeName is set when this pod preempts other pods on the node.",
        priority=1,
    ),
    Column(
        "Readiness Gates",
        description="If specified, all readiness gates will be evaluated for pod readiness.",
        priority=1,
    ),
]


def pod_status_reason(pod: Obj) -> str:
    """The STATUS column of ``kubectl get pods``."""
    return _pod_summary(pod, datetime.now(UTC))[1]


def _pod_summary(pod: Obj, now: datetime) -> tuple[str, str, str]:
    """READY, STATUS and RESTARTS of a pod, derived as kubectl's printer derives them."""
    spec = as_dict(pod.get("spec"))
    status = as_dict(pod.get("status"))
    meta = as_dict(pod.get("metadata"))
    containers = as_list(spec.get("containers"))
    init_specs = {
        str(as_dict(c).get("name")): as_dict(c) for c in as_list(spec.get("initContainers"))
    }
    total = len(containers) + sum(1 for c in init_specs.values() if _restartable(c))
    ready = 0
    restarts = 0
    sidecar_restarts = 0
    last_restart: datetime | None = None
    last_sidecar_restart: datetime | None = None
    phase = str(status.get("phase") or "")
    reason = str(status.get("reason") or "") or phase
    conditions = [as_dict(c) for c in as_list(status.get("conditions"))]
    for condition in conditions:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    initializing = False
    init_statuses = [as_dict(c) for c in as_list(status.get("initContainerStatuses"))]
    for i, container in enumerate(init_statuses):
        restarts += as_int(container.get("restartCount"))
        finished = _finished_at(container)
        if finished and (last_restart is None or finished > last_restart):
            last_restart = finished
        sidecar = _restartable(init_specs.get(str(container.get("name")), {}))
        if sidecar:
            sidecar_restarts += as_int(container.get("restartCount"))
            if finished and (last_sidecar_restart is None or finished > last_sidecar_restart):
                last_sidecar_restart = finished
        state = as_dict(container.get("state"))
        terminated, waiting = as_dict(state.get("terminated")), as_dict(state.get("waiting"))
        if state.get("terminated") is not None and as_int(terminated.get("exitCode")) == 0:
            continue
        if sidecar and container.get("started") is True:
            if container.get("ready"):
                ready += 1
            continue
        if state.get("terminated") is not None:
            if not terminated.get("reason"):
                signal = as_int(terminated.get("signal"))
                reason = (
                    f"Init:Signal:{signal}"
                    if signal
                    else f"Init:ExitCode:{as_int(terminated.get('exitCode'))}"
                )
            else:
                reason = f"Init:{terminated['reason']}"
        elif waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    initialized = any(
        c.get("type") == "Initialized" and c.get("status") == "True" for c in conditions
    )
    if not initializing or initialized:
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for container in reversed([as_dict(c) for c in as_list(status.get("containerStatuses"))]):
            restarts += as_int(container.get("restartCount"))
            finished = _finished_at(container)
            if finished and (last_restart is None or finished > last_restart):
                last_restart = finished
            state = as_dict(container.get("state"))
            terminated, waiting = as_dict(state.get("terminated")), as_dict(state.get("waiting"))
            if waiting.get("reason"):
                reason = str(waiting["reason"])
            elif state.get("terminated") is not None and terminated.get("reason"):
                reason = str(terminated["reason"])
            elif state.get("terminated") is not None:
                signal = as_int(terminated.get("signal"))
                reason = (
                    f"Signal:{signal}"
                    if signal
                    else f"ExitCode:{as_int(terminated.get('exitCode'))}"
                )
            elif container.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
            )
            reason = "Running" if pod_ready else "NotReady"

    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"
    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    return f"{ready}/{total}", reason, restarts_text


def _restartable(container: Mapping[str, Any]) -> bool:
    return container.get("restartPolicy") == "Always"


def _finished_at(container: Mapping[str, Any]) -> datetime | None:
    last = as_dict(as_dict(container.get("lastState")).get("terminated"))
    return parse_time(last.get("finishedAt"))


def print_pod(pod: Obj, now: datetime) -> Cells:
    spec = as_dict(pod.get("spec"))
    status = as_dict(pod.get("status"))
    ready, reason, restarts = _pod_summary(pod, now)
    pod_ips = [as_dict(p) for p in as_list(status.get("podIPs"))]
    ip = str(pod_ips[0].get("ip") or "") if pod_ips else str(status.get("podIP") or "")
    gates = "<none>"
    readiness_gates = [as_dict(g) for g in as_list(spec.get("readinessGates"))]
    if readiness_gates:
        conditions = [as_dict(c) for c in as_list(status.get("conditions"))]
        passed = 0
        for gate in readiness_gates:
            for condition in conditions:
                if condition.get("type") == gate.get("conditionType"):
                    passed += condition.get("status") == "True"
                    break
        gates = f"{passed}/{len(readiness_gates)}"
    cells = [
        name_of(pod),
        ready,
        reason,
        restarts,
        object_age(pod, now),
        ip or "<none>",
        str(spec.get("nodeName") or "") or "<none>",
        str(status.get("nominatedNodeName") or "") or "<none>",
        gates,
    ]
    phase = status.get("phase")
    row_conditions: list[dict[str, str]] = []
    if phase in ("Succeeded", "Failed"):
        message = (
            "The pod has completed successfully." if phase == "Succeeded" else "The pod failed."
        )
        row_conditions = [
            {"type": "Completed", "status": "True", "reason": str(phase), "message": message}
        ]
    return cells, row_conditions


# --- nodes --------------------------------------------------------------------------------------

NODE_COLUMNS = [
    NAME,
    Column("Status", description="The status of the node"),
    Column("Roles", description="The roles of the node"),
    AGE,
    Column("Version", description="Kubelet Version reported by the node."),
    Column("Internal-IP", description="List of addresses reachable to the node.", priority=1),
    Column("External-IP", description="List of addresses reachable to the node.", priority=1),
    Column("OS-Image", description="OS Image reported by the node.", priority=1),
    Column("Kernel-Version", description="Kernel Version reported by the node.", priority=1),
    Column(
        "Container-Runtime",
        description="ContainerRuntime Version reported by the node.",
        priority=1,
    ),
]


def print_node(node: Obj, now: datetime) -> Cells:
    spec, status = as_dict(node.get("spec")), as_dict(node.get("status"))
    states = []
    for condition in (as_dict(c) for c in as_list(status.get("conditions"))):
        if condition.get("type") == "Ready":
            states = ["Ready" if condition.get("status") == "True" else "NotReady"]
    if not states:
        states = ["Unknown"]
    if spec.get("unschedulable"):
        states.append("SchedulingDisabled")
    roles = set()
    for key, value in as_dict(as_dict(node.get("metadata")).get("labels")).items():
        if key.startswith("node-role.kubernetes.io/") and key[len("node-role.kubernetes.io/") :]:
            roles.add(key[len("node-role.kubernetes.io/") :])
        elif key == "kubernetes.io/role" and value:
            roles.add(str(value))
    info = as_dict(status.get("nodeInfo"))
    addresses = [as_dict(a) for a in as_list(status.get("addresses"))]

    def address(kind: str) -> str:
        return next((str(a.get("address")) for a in addresses if a.get("type") == kind), "<none>")

    cells = [
        name_of(node),
        ",".join(states),
        ",".join(sorted(roles)) or "<none>",
        object_age(node, now),
        str(info.get("kubeletVersion") or ""),
        address("InternalIP"),
        address("ExternalIP"),
        str(info.get("osImage") or "") or "<unknown>",
        str(info.get("kernelVersion") or "") or "<unknown>",
        str(info.get("containerRuntimeVersion") or "") or "<unknown>",
    ]
    return cells, []

"""What the scheduler knows about nodes and asks of them: node state, filters and scores.

:class:`NodeInfo` is a node plus the pods placed on it (requested cpu, memory, pod count, host
ports, pods per owner). The filters are kube-scheduler's default plugins in its order —
NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit — and
answer with kube-scheduler's own words, so ``FailedScheduling`` events read the same. The
scores are least-allocated resources and spreading one owner's pods across nodes. Everything
here is pure: the DaemonSet controller uses the same taint and affinity rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from k3py.cluster.api.quantity import QuantityError, parse_quantity

Object = dict[str, Any]

NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"

# kube-scheduler scores pods without requests as if they asked for this much.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
DEFAULT_MAX_PODS = 110

REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_NODE_NAME = "node(s) didn't match the requested node name"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_PORTS = "node(s) didn't have free ports for the requested pod ports"
REASON_TOO_MANY_PODS = "Too many pods"


def _quantity(value: Any) -> Decimal:
    try:
        return parse_quantity(value)
    except (QuantityError, ValueError, TypeError):
        return Decimal(0)


@dataclass
class Resources:
    milli_cpu: int = 0
    memory: int = 0
    pods: int = 0

    def add(self, other: Resources) -> None:
        self.milli_cpu += other.milli_cpu
        self.memory += other.memory
        self.pods += other.pods

    def sub(self, other: Resources) -> None:
        self.milli_cpu -= other.milli_cpu
        self.memory -= other.memory
        self.pods -= other.pods


def resource_list(values: Mapping[str, Any] | None) -> Resources:
    values = values or {}
    cpu = values.get("cpu")
    memory = values.get("memory")
    pods = values.get("pods")
    return Resources(
        int((_quantity(cpu) * 1000).to_integral_value(rounding="ROUND_CEILING")) if cpu else 0,
        int(_quantity(memory)) if memory else 0,
        int(_quantity(pods)) if pods else 0,
    )


def pod_requests(pod: Object, *, non_zero: bool = False) -> Resources:
    """What a pod asks for: the sum of its containers, at least its largest init container."""
    spec = pod.get("spec") or {}
    total = Resources(pods=1)
    for container in spec.get("containers") or []:
        req = resource_list((container.get("resources") or {}).get("requests"))
        if non_zero:
            req.milli_cpu = req.milli_cpu or DEFAULT_MILLI_CPU_REQUEST
            req.memory = req.memory or DEFAULT_MEMORY_REQUEST
        total.milli_cpu += req.milli_cpu
        total.memory += req.memory
    for container in spec.get("initContainers") or []:
        req = resource_list((container.get("resources") or {}).get("requests"))
        total.milli_cpu = max(total.milli_cpu, req.milli_cpu)
        total.memory = max(total.memory, req.memory)
    overhead = resource_list(spec.get("overhead"))
    total.milli_cpu += overhead.milli_cpu
    total.memory += overhead.memory
    return total


def host_ports(pod: Object) -> set[tuple[str, str, int]]:
    ports: set[tuple[str, str, int]] = set()
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                ip = port.get("hostIP") or "0.0.0.0"
                ports.add((ip, port.get("protocol") or "TCP", int(port["hostPort"])))
    return ports


def controller_uid(obj: Object) -> str:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid", ""))
    return ""


def pod_key(pod: Object) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def node_ready(node: Object) -> str:
    """The Ready condition's status: "True", "False" or "Unknown" (no condition: Unknown)."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status") or "Unknown")
    return "Unknown"


@dataclass
class NodeInfo:
    node: Object
    allocatable: Resources = field(default_factory=Resources)
    requested: Resources = field(default_factory=Resources)
    non_zero_requested: Resources = field(default_factory=Resources)
    ports: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    owners: Counter[str] = field(default_factory=Counter)
    pods: dict[str, Object] = field(default_factory=dict)
    unschedulable: bool = False
    taints: list[Object] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.set_node(self.node)

    @property
    def name(self) -> str:
        return str(self.node["metadata"]["name"])

    def set_node(self, node: Object) -> None:
        self.node = node
        status = node.get("status") or {}
        self.allocatable = resource_list(status.get("allocatable") or status.get("capacity"))
        if not self.allocatable.pods:
            self.allocatable.pods = DEFAULT_MAX_PODS
        # Worked out once per node change, not once per pod and node: filtering is the hot path.
        self.unschedulable = bool((node.get("spec") or {}).get("unschedulable"))
        self.taints = [
            t for t in effective_taints(node) if t.get("effect") in ("NoSchedule", "NoExecute")
        ]

    def add_pod(self, pod: Object) -> None:
        key = pod_key(pod)
        if key in self.pods:
            self.remove_pod(self.pods[key])
        self.pods[key] = pod
        self.requested.add(pod_requests(pod))
        self.non_zero_requested.add(pod_requests(pod, non_zero=True))
        self.ports.update(host_ports(pod))
        owner = controller_uid(pod)
        if owner:
            self.owners[owner] += 1

    def remove_pod(self, pod: Object) -> None:
        key = pod_key(pod)
        stored = self.pods.pop(key, None)
        if stored is None:
            return
        self.requested.sub(pod_requests(stored))
        self.non_zero_requested.sub(pod_requests(stored, non_zero=True))
        self.ports.subtract(host_ports(stored))
        self.ports += Counter()  # drop zero counts
        owner = controller_uid(stored)
        if owner:
            self.owners[owner] -= 1
            if self.owners[owner] <= 0:
                del self.owners[owner]


# -- taints, tolerations and affinity (shared with the DaemonSet controller) ------------------


def tolerates(tolerations: Iterable[Object], taint: Object) -> bool:
    for tol in tolerations:
        effect = tol.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        operator = tol.get("operator") or "Equal"
        key = tol.get("key") or ""
        if not key:
            if operator == "Exists":
                return True
            continue
        if key != taint.get("key"):
            continue
        if operator == "Exists" or (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def effective_taints(node: Object) -> list[Object]:
    """The node's taints, plus not-ready for a node that has not reported Ready yet.

    The node lifecycle controller puts the not-ready and unreachable taints on nodes; a node
    that registered a moment ago may not carry them yet, and must not receive pods either.
    """
    taints = list((node.get("spec") or {}).get("taints") or [])
    if node_ready(node) != "True" and not any(
        t.get("key") in (NOT_READY_TAINT, UNREACHABLE_TAINT) for t in taints
    ):
        taints.append({"key": NOT_READY_TAINT, "effect": "NoSchedule"})
    return taints


def untolerated_taint(pod_spec: Object, node: Object) -> Object | None:
    tolerations = pod_spec.get("tolerations") or []
    for taint in effective_taints(node):
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not tolerates(tolerations, taint):
            return taint
    return None


def _expression_matches(expr: Object, value: str | None) -> bool:
    operator = expr.get("operator")
    values = [str(v) for v in expr.get("values") or []]
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    if operator in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            have, want = int(value), int(values[0])
        except ValueError:
            return False
        return have > want if operator == "Gt" else have < want
    return False


def node_selector_term_matches(term: Object, node: Object) -> bool:
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches nothing
    labels = node["metadata"].get("labels") or {}
    for expr in exprs:
        if not _expression_matches(expr, labels.get(expr.get("key"))):
            return False
    for expr in fields:
        value = node["metadata"]["name"] if expr.get("key") == "metadata.name" else None
        if not _expression_matches(expr, value):
            return False
    return True


def matches_node_affinity(pod_spec: Object, node: Object) -> bool:
    labels = node["metadata"].get("labels") or {}
    for key, value in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    affinity = (pod_spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required:
        terms = required.get("nodeSelectorTerms") or []
        if not any(node_selector_term_matches(t, node) for t in terms):
            return False
    return True


# -- filters ----------------------------------------------------------------------------------


def taint_reason(taint: Object) -> str:
    return f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"


@dataclass(frozen=True)
class PodFacts:
    """What the filters ask of one pod, read once per scheduling attempt."""

    requests: Resources
    tolerations: tuple[Object, ...]
    node_name: str
    needs_affinity: bool
    spec: Object
    ports: frozenset[tuple[str, str, int]]

    @classmethod
    def of(cls, pod: Object, requests: Resources | None = None) -> PodFacts:
        spec = pod.get("spec") or {}
        return cls(
            requests if requests is not None else pod_requests(pod),
            tuple(spec.get("tolerations") or ()),
            str(spec.get("nodeName") or ""),
            bool(spec.get("nodeSelector") or (spec.get("affinity") or {}).get("nodeAffinity")),
            spec,
            frozenset(host_ports(pod)),
        )


def filter_node(pod: Object, requests: Resources, info: NodeInfo) -> list[str]:
    """Why ``pod`` cannot go to this node (empty: it fits), in kube-scheduler's words."""
    return check_node(PodFacts.of(pod, requests), info)


def check_node(facts: PodFacts, info: NodeInfo) -> list[str]:
    if info.unschedulable and not tolerates(
        facts.tolerations, {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
    ):
        return [REASON_UNSCHEDULABLE]
    if facts.node_name and facts.node_name != info.name:
        return [REASON_NODE_NAME]
    for taint in info.taints:
        if not tolerates(facts.tolerations, taint):
            return [taint_reason(taint)]
    if facts.needs_affinity and not matches_node_affinity(facts.spec, info.node):
        return [REASON_AFFINITY]
    if facts.ports and _ports_conflict(set(facts.ports), info.ports):
        return [REASON_PORTS]
    requests, requested, alloc = facts.requests, info.requested, info.allocatable
    reasons = []
    if requested.pods + 1 > alloc.pods:
        reasons.append(REASON_TOO_MANY_PODS)
    if requests.milli_cpu and requested.milli_cpu + requests.milli_cpu > alloc.milli_cpu:
        reasons.append("Insufficient cpu")
    if requests.memory and requested.memory + requests.memory > alloc.memory:
        reasons.append("Insufficient memory")
    return reasons


def _ports_conflict(wanted: set[tuple[str, str, int]], used: Counter[tuple[str, str, int]]) -> bool:
    for ip, protocol, port in wanted:
        for used_ip, used_protocol, used_port in used:
            if used_port != port or used_protocol != protocol:
                continue
            if "0.0.0.0" in (ip, used_ip) or ip == used_ip:
                return True
    return False


def failure_message(total_nodes: int, reasons: Counter[str]) -> str:
    """kube-scheduler's FailedScheduling message for a pod that fits nowhere."""
    if total_nodes == 0:
        return "no nodes available to schedule pods"
    parts = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    return (
        f"0/{total_nodes} nodes are available: {parts}. preemption: 0/{total_nodes} nodes are"
        f" available: {total_nodes} Preemption is not helpful for scheduling."
    )


# -- scores -----------------------------------------------------------------------------------

SPREAD_WEIGHT = 2
RESOURCES_WEIGHT = 1


def least_allocated(info: NodeInfo, non_zero: Resources) -> float:
    score = 0.0
    for alloc, used, wanted in (
        (info.allocatable.milli_cpu, info.non_zero_requested.milli_cpu, non_zero.milli_cpu),
        (info.allocatable.memory, info.non_zero_requested.memory, non_zero.memory),
    ):
        if alloc <= 0:
            continue
        score += max(0.0, (alloc - used - wanted) * 100.0 / alloc)
    return score / 2


def score_nodes(pod: Object, infos: list[NodeInfo]) -> list[float]:
    """One score per feasible node: least-allocated plus spreading of the pod's owner.

    The same sum as :func:`least_allocated` per node, written out over locals: with 1,000
    nodes this loop runs for several hundred of them per pod and was the scheduler's hot spot.
    """
    non_zero = pod_requests(pod, non_zero=True)
    cpu, memory = non_zero.milli_cpu, non_zero.memory
    owner = controller_uid(pod)
    counts = [info.owners.get(owner, 0) for info in infos] if owner else [0] * len(infos)
    most = max(counts, default=0)
    scores: list[float] = []
    append = scores.append
    for info, count in zip(infos, counts, strict=True):
        alloc, used = info.allocatable, info.non_zero_requested
        resources = 0.0
        if alloc.milli_cpu > 0:
            free = (alloc.milli_cpu - used.milli_cpu - cpu) * 100.0 / alloc.milli_cpu
            resources += free if free > 0.0 else 0.0
        if alloc.memory > 0:
            free = (alloc.memory - used.memory - memory) * 100.0 / alloc.memory
            resources += free if free > 0.0 else 0.0
        spread = 100.0 if most == 0 else (most - count) * 100.0 / most
        append(RESOURCES_WEIGHT * (resources / 2) + SPREAD_WEIGHT * spread)
    return scores


def nodes_to_find(total: int) -> int:
    """kube-scheduler's adaptive percentageOfNodesToScore: stop filtering once this many fit."""
    if total < 100:
        return total
    percentage = max(5, 50 - total // 125)
    return max(100, total * percentage // 100)

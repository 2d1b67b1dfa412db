"""The scheduler: kube-scheduler's filters and wording, spreading, and retry without polling."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from k3py.cluster.api.status import ApiError
from k3py.cluster.server.controllers.base import PODS
from k3py.cluster.server.scheduler.predicates import (
    NodeInfo,
    PodFacts,
    check_node,
    failure_message,
    filter_node,
    nodes_to_find,
    pod_requests,
)
from tests.controllers.harness import Cluster, node

Object = dict[str, Any]


def pod(name: str = "p", **spec: Any) -> Object:
    containers = spec.pop("containers", [{"name": "c", "image": "busybox"}])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": {"containers": containers, **spec},
    }


def with_requests(name: str, cpu: str = "", memory: str = "", **spec: Any) -> Object:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    containers = [{"name": "c", "image": "busybox", "resources": {"requests": requests}}]
    return pod(name, containers=containers, **spec)


def reasons(p: Object, n: Object, placed: list[Object] | None = None) -> list[str]:
    info = NodeInfo(n)
    for other in placed or []:
        info.add_pod(other)
    return filter_node(p, pod_requests(p), info)


def test_filters_answer_in_kube_schedulers_words() -> None:
    assert reasons(pod(), node("a")) == []
    assert reasons(pod(), {**node("a"), "spec": {"unschedulable": True}}) == [
        "node(s) were unschedulable"
    ]
    assert reasons(pod(nodeSelector={"disk": "ssd"}), node("a")) == [
        "node(s) didn't match Pod's node affinity/selector"
    ]
    assert reasons(pod(nodeSelector={"disk": "ssd"}), node("a", labels={"disk": "ssd"})) == []
    tainted = node("a", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    assert reasons(pod(), tainted) == ["node(s) had untolerated taint {dedicated: gpu}"]
    tolerating = pod(tolerations=[{"key": "dedicated", "operator": "Exists"}])
    assert reasons(tolerating, tainted) == []
    assert reasons(pod(), node("a", ready="False")) == [
        "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
    ]
    assert reasons(with_requests("big", cpu="5", memory="9Gi"), node("a")) == [
        "Insufficient cpu",
        "Insufficient memory",
    ]
    full = [with_requests(f"x{i}", cpu="1") for i in range(4)]
    assert reasons(with_requests("one", cpu="100m"), node("a"), full) == ["Insufficient cpu"]
    assert reasons(pod(), node("a", pods="2"), [pod("x"), pod("y")]) == ["Too many pods"]


def test_required_node_affinity_and_host_ports() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]},
                ]
            }
        }
    }
    assert reasons(pod(affinity=affinity), node("n1", labels={"zone": "a"})) == []
    assert reasons(pod(affinity=affinity), node("n9")) == []
    assert reasons(pod(affinity=affinity), node("n2", labels={"zone": "b"})) == [
        "node(s) didn't match Pod's node affinity/selector"
    ]
    web = [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]
    assert reasons(pod("b", containers=web), node("a"), [pod("a", containers=web)]) == [
        "node(s) didn't have free ports for the requested pod ports"
    ]
    assert reasons(pod("b", nodeName="other"), node("a")) == [
        "node(s) didn't match the requested node name"
    ]


def test_failure_message_counts_reasons_per_node_like_kube_scheduler() -> None:
    counted = Counter({"Insufficient cpu": 2, "node(s) had untolerated taint {a: b}": 1})
    assert failure_message(3, counted) == (
        "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {a: b}."
        " preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    )
    assert failure_message(0, Counter()) == "no nodes available to schedule pods"
    assert nodes_to_find(50) == 50
    assert nodes_to_find(1000) == 420
    assert nodes_to_find(5000) == 500


def owned_pod(name: str, owner: str, **spec: Any) -> Object:
    p = pod(name, **spec)
    del p["metadata"]["uid"]
    p["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "uid": owner,
         "controller": True},
    ]  # fmt: skip
    return p


async def test_pods_of_one_owner_spread_and_get_scheduled_events(cluster: Cluster) -> None:
    cluster.with_scheduler()
    for name in ("n1", "n2", "n3"):
        await cluster.create(node(name))
    await cluster.start()
    for i in range(6):
        await cluster.create(owned_pod(f"web-{i}", "rs-1"))
    await cluster.settle()
    placed = Counter(p["spec"]["nodeName"] for p in cluster.pods())
    assert placed == {"n1": 2, "n2": 2, "n3": 2}
    scheduled = cluster.events("Scheduled")
    assert len(scheduled) == 6
    assert scheduled[0]["message"].startswith("Successfully assigned default/web-")
    assert scheduled[0]["source"] == {"component": "test"}


async def test_an_unschedulable_pod_waits_without_polling_and_fits_when_a_node_arrives(
    cluster: Cluster,
) -> None:
    cluster.with_scheduler()
    await cluster.create(node("small", cpu="1"))
    await cluster.start()
    await cluster.create(with_requests("big", cpu="2"))
    await cluster.settle()
    [stuck] = cluster.pods()
    assert "nodeName" not in stuck["spec"]
    [cond] = stuck["status"]["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == (
        "PodScheduled",
        "False",
        "Unschedulable",
    )
    assert cond["message"].startswith("0/1 nodes are available: 1 Insufficient cpu.")
    [failed] = cluster.events("FailedScheduling")
    assert failed["type"] == "Warning"

    # Almost five virtual minutes of quiet: the scheduler asks the API server nothing.
    requests_before = len(cluster.api.requests)
    await cluster.clock.advance(290)
    assert len(cluster.api.requests) == requests_before

    await cluster.create(node("large", cpu="8"))
    await cluster.settle(2)
    [placed] = cluster.pods()
    assert placed["spec"]["nodeName"] == "large"


async def test_a_freed_node_takes_the_waiting_pod_and_assumed_pods_hold_resources(
    cluster: Cluster,
) -> None:
    cluster.with_scheduler()
    await cluster.create(node("only", cpu="2"))
    await cluster.start()
    await cluster.create(with_requests("first", cpu="1500m"))
    await cluster.create(with_requests("second", cpu="1500m"))
    await cluster.settle()
    bound = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in cluster.pods()}
    assert sorted(bound.values(), key=lambda n: n or "") == [None, "only"]  # never both on 2 CPUs
    first = next(name for name, n in bound.items() if n)
    await cluster.api.delete(PODS, first, "default")
    await cluster.settle(2)
    # Terminating, the pod still holds its CPUs; only its node's kubelet finishing it frees them.
    assert sorted(p["spec"].get("nodeName") or "" for p in cluster.pods()) == ["", "only"]
    await cluster.kubelet()
    await cluster.settle(2)
    assert [(p["metadata"]["name"], p["spec"].get("nodeName")) for p in cluster.pods()] == [
        (next(n for n in bound if n != first), "only")
    ]


async def test_pods_waiting_together_are_bound_together_each_on_its_own(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pods queued at once are placed in one turn of the event loop, so that their
    bindings reach the datastore together; each is still its own Binding, and one refused
    does not hold back the others."""
    cluster.with_scheduler()
    for name in ("n1", "n2"):
        await cluster.create(node(name, cpu="4"))
    for i in range(8):
        await cluster.create(with_requests(f"p{i}", cpu="100m"))
    create = cluster.api.create
    in_flight = peak = 0
    bindings: list[str] = []

    async def counting_create(info: Any, obj: Object, *args: Any, **kw: Any) -> Object:
        nonlocal in_flight, peak
        if kw.get("subresource") != "binding":
            return await create(info, obj, *args, **kw)
        bindings.append(obj["metadata"]["name"])
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0)  # one datastore hand-over: the others join it meanwhile
            if obj["metadata"]["name"] == "p3":
                raise ApiError(409, "Conflict", "pod p3 is already assigned")
            return await create(info, obj, *args, **kw)
        finally:
            in_flight -= 1

    monkeypatch.setattr(cluster.api, "create", counting_create)
    await cluster.start()
    await cluster.settle()
    assert sorted(bindings) == [f"p{i}" for i in range(8)]  # one Binding per pod
    assert peak == 8  # all under way together, not one per turn of the loop
    nodes = {p["metadata"]["name"]: p["spec"].get("nodeName") for p in cluster.pods()}
    assert nodes.pop("p3") is None  # refused: the watch says who placed it
    assert all(nodes.values())
    assert len(cluster.events("Scheduled")) == 7


async def test_the_resource_only_shortcut_finds_what_the_filters_find(cluster: Cluster) -> None:
    """find_nodes skips the filter call for pods and nodes with nothing but resources to
    compare; it must keep the same nodes, and the same reasons for the others."""
    scheduler = cluster.with_scheduler()
    for n in (
        node("plain"),
        node("small", cpu="100m", memory="64Mi"),
        node("full", pods="1"),
        node("tainted", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
        {**node("cordoned"), "spec": {"unschedulable": True}},
    ):
        await cluster.create(n)
    await cluster.create(pod("there", nodeName="full"))
    await cluster.start()
    infos = list(scheduler.infos.values())
    toleration = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    for p in (
        pod("none"),
        with_requests("cpu", cpu="500m"),
        with_requests("memory", memory="1Gi"),
        with_requests("tolerant", cpu="50m", tolerations=[toleration]),
        pod("named", nodeName="small"),
    ):
        scheduler._next_start = 0
        feasible, why = scheduler.find_nodes(p)
        facts = PodFacts.of(p)
        assert [i.name for i in feasible] == [i.name for i in infos if not check_node(facts, i)]
        assert why == Counter(r for i in infos for r in check_node(facts, i))

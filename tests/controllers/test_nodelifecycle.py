"""Node lifecycle, leader election and orphan collection on a virtual clock."""

from __future__ import annotations

from typing import Any

from k3py.cluster.client import FakeClock
from k3py.cluster.client.fake import FakeApi
from k3py.cluster.server.controllers.base import LEASES, NODES, PODS, REPLICASETS
from k3py.cluster.server.controllers.garbage import GarbageCollector
from k3py.cluster.server.controllers.leader import ElectionConfig, LeaderElector
from k3py.cluster.server.controllers.nodelifecycle import NodeLifecycleController
from k3py.cluster.server.controllers.replicaset import ReplicaSetController
from tests.controllers.harness import Cluster, node, template

Object = dict[str, Any]


async def renew(cluster: Cluster, name: str) -> None:
    stamp = cluster.clock.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": stamp},
    }
    try:
        await cluster.api.patch(LEASES, name, {"spec": {"renewTime": stamp}}, "kube-node-lease")
    except Exception:
        await cluster.api.create(LEASES, lease, "kube-node-lease")


def stored_node(cluster: Cluster, name: str) -> Object:
    return next(n for n in cluster.api.objects(NODES) if n["metadata"]["name"] == name)


def ready(n: Object) -> str:
    return str(next(c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"))


def taint_keys(n: Object) -> list[tuple[str, str]]:
    return sorted((t["key"], t["effect"]) for t in (n.get("spec") or {}).get("taints") or [])


async def test_pod_cidrs_are_allocated_once_and_never_twice(cluster: Cluster) -> None:
    cluster.add(NodeLifecycleController)
    await cluster.create({**node("old"), "spec": {"podCIDR": "10.42.0.0/24",
                                                   "podCIDRs": ["10.42.0.0/24"]}})  # fmt: skip
    await cluster.start()
    for name in ("a", "b", "c"):
        await cluster.create(node(name))
    await cluster.settle()
    cidrs = {n["metadata"]["name"]: n["spec"]["podCIDR"] for n in cluster.api.objects(NODES)}
    assert cidrs == {
        "old": "10.42.0.0/24",
        "a": "10.42.1.0/24",
        "b": "10.42.2.0/24",
        "c": "10.42.3.0/24",
    }
    assert stored_node(cluster, "a")["spec"]["podCIDRs"] == ["10.42.1.0/24"]


async def test_a_silent_node_goes_unknown_is_tainted_its_pods_evicted_and_it_comes_back(
    cluster: Cluster,
) -> None:
    cluster.add(NodeLifecycleController)
    for name in ("n1", "n2"):
        await cluster.create(node(name))
        await renew(cluster, name)
    await cluster.start()
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
    }
    await cluster.create(pod)  # the API server's defaults give the 300 s tolerations
    tolerations = cluster.pods()[0]["spec"]["tolerations"]
    assert {t["key"]: t["tolerationSeconds"] for t in tolerations} == {
        "node.kubernetes.io/not-ready": 300,
        "node.kubernetes.io/unreachable": 300,
    }
    for _ in range(8):  # n2 keeps renewing, n1 is silent
        await cluster.clock.advance(5)
        await renew(cluster, "n2")
    assert ready(stored_node(cluster, "n1")) == "True"  # 40 s: still within the grace period
    for _ in range(3):
        await cluster.clock.advance(5)
        await renew(cluster, "n2")
    n1 = stored_node(cluster, "n1")
    assert ready(n1) == "Unknown"
    reason = next(c for c in n1["status"]["conditions"] if c["type"] == "Ready")
    assert reason["message"] == "Kubelet stopped posting node status."
    assert taint_keys(n1) == [
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoSchedule"),
    ]
    assert ready(stored_node(cluster, "n2")) == "True"
    assert taint_keys(stored_node(cluster, "n2")) == []

    await cluster.clock.advance(280)  # 290 s after the taint
    [still] = cluster.pods()
    assert "deletionTimestamp" not in still["metadata"]
    await cluster.clock.advance(15)
    [evicted] = cluster.pods()
    assert "deletionTimestamp" in evicted["metadata"]
    assert any(c["type"] == "DisruptionTarget" for c in evicted["status"]["conditions"])
    assert [e["message"] for e in cluster.events("TaintManagerEviction")] == [
        "Marking for deletion Pod default/web"
    ]

    # The node comes back: it renews and posts Ready again, and loses the taints.
    await renew(cluster, "n1")
    await cluster.api.patch(NODES, "n1", {"status": node("n1")["status"]}, subresource="status")
    await cluster.settle()
    assert taint_keys(stored_node(cluster, "n1")) == []


async def test_pods_that_do_not_tolerate_no_execute_leave_at_once(cluster: Cluster) -> None:
    cluster.add(NodeLifecycleController)
    taint = {"key": "maintenance", "effect": "NoExecute"}
    await cluster.create(node("n1"))
    await cluster.start()
    await cluster.create(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
         "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}
    )  # fmt: skip
    await cluster.api.patch(NODES, "n1", {"spec": {"taints": [taint]}})
    await cluster.settle()
    assert "deletionTimestamp" in cluster.pods()[0]["metadata"]


async def test_one_of_two_candidates_leads_and_the_other_takes_over_when_it_stops() -> None:
    clock = FakeClock()
    api = FakeApi(clock)

    def elector(identity: str) -> LeaderElector:
        return LeaderElector(api, clock, ElectionConfig("kube-system", "cp", identity))

    first, second = elector("server-a"), elector("server-b")
    assert await first.try_acquire_or_renew()
    assert not await second.try_acquire_or_renew()
    await clock.advance(10)
    assert await first.try_acquire_or_renew()  # renewed
    await clock.advance(10)
    assert not await second.try_acquire_or_renew()  # it saw a renewal 10 s ago
    await clock.advance(16)  # server-a is silent for longer than the lease duration
    assert await second.try_acquire_or_renew()
    assert not await first.try_acquire_or_renew()
    [lease] = api.objects(LEASES)
    assert lease["spec"]["holderIdentity"] == "server-b"
    assert lease["spec"]["leaseTransitions"] == 1
    await second.release()
    assert await first.try_acquire_or_renew()  # a released lease is free at once


async def test_a_replicaset_whose_deployment_is_gone_is_collected(cluster: Cluster) -> None:
    cluster.add(GarbageCollector, ReplicaSetController)
    await cluster.start()
    orphan = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "web-abc",
            "namespace": "default",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                 "uid": "gone", "controller": True}],
        },
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": template("nginx:1", {"app": "web"})},
    }  # fmt: skip
    await cluster.create(orphan)
    await cluster.settle(3)
    assert cluster.api.objects(REPLICASETS) == []
    assert [p["metadata"]["deletionTimestamp"] for p in cluster.api.objects(PODS)] == []

"""The UpdatePlan controller over hollow nodes: agents advance their own entries, the
controller starts nodes by the plan's rules and writes progress."""

from __future__ import annotations

import random
from typing import Any

from k3py.cluster.ota.rollout import IN_FLIGHT
from k3py.cluster.server.controllers.base import NODES
from k3py.cluster.server.controllers.updateplan import UPDATE_PLANS, UpdatePlanController
from tests.controllers.harness import Cluster, node

Object = dict[str, Any]
PATH = ["Downloading", "Verifying", "Installing", "Rebooting", "Healthy"]


def plan(**spec: Any) -> Object:
    return {"apiVersion": "ota.k3py.io/v1", "kind": "UpdatePlan",
            "metadata": {"name": "fw"}, "spec": {"version": "0.2.0", **spec}}  # fmt: skip


def entries(cluster: Cluster) -> dict[str, str]:
    (got,) = cluster.objects("ota.k3py.io/v1", "UpdatePlan")
    return {e["name"]: e["phase"] for e in (got.get("status") or {}).get("nodes") or []}


async def agents_step(cluster: Cluster, rng: random.Random, fail: set[str]) -> None:
    """One agent moves its entry one phase on (as a node would patch its own entry)."""
    assert UPDATE_PLANS is not None
    (got,) = cluster.objects("ota.k3py.io/v1", "UpdatePlan")
    nodes = list((got.get("status") or {}).get("nodes") or [])
    moving = [e for e in nodes if e["phase"] in IN_FLIGHT]
    if not moving:
        return
    entry = rng.choice(moving)
    following = PATH[PATH.index(entry["phase"]) + 1]
    if entry["name"] in fail and following == "Installing":
        following = "RolledBack"
    entry.update(phase=following, lastTransitionTime="2026-01-01T00:00:00Z")
    await cluster.api.update(UPDATE_PLANS, got, subresource="status")


async def test_five_nodes_max_unavailable_one_never_two_at_once(cluster: Cluster) -> None:
    cluster.add(UpdatePlanController)
    for number in range(5):
        await cluster.create(node(f"n{number}", labels={"ring": "field"}))
    await cluster.create(node("lab"))  # not selected
    await cluster.create(plan(nodeSelector={"ring": "field"}, maxUnavailable=1))
    await cluster.start()
    rng = random.Random(5)
    most = 0
    for _ in range(60):
        await agents_step(cluster, rng, set())
        await cluster.settle(0.3)
        phases = entries(cluster)
        assert "lab" not in phases
        most = max(most, sum(p in IN_FLIGHT for p in phases.values()))
    assert most == 1
    assert set(entries(cluster).values()) == {"Healthy"}
    (got,) = cluster.objects("ota.k3py.io/v1", "UpdatePlan")
    assert got["status"]["phase"] == "Complete"
    assert got["status"]["message"].startswith("5/5 healthy")


async def test_a_rolled_back_canary_halts_the_plan(cluster: Cluster) -> None:
    cluster.add(UpdatePlanController)
    for number in range(4):
        await cluster.create(node(f"n{number}"))
    await cluster.create(plan(maxUnavailable=2, canary=1, drain=True))
    await cluster.start()
    assert entries(cluster) == {"n0": "Downloading", "n1": "Pending", "n2": "Pending",
                                "n3": "Pending"}  # fmt: skip
    (n0,) = [n for n in cluster.api.objects(NODES) if n["metadata"]["name"] == "n0"]
    assert n0["spec"]["unschedulable"] is True  # drained before its update
    rng = random.Random(1)
    for _ in range(6):
        await agents_step(cluster, rng, {"n0"})
        await cluster.settle(0.3)
    assert entries(cluster)["n0"] == "RolledBack"
    assert set(list(entries(cluster).values())[1:]) == {"Pending"}
    (got,) = cluster.objects("ota.k3py.io/v1", "UpdatePlan")
    assert got["status"]["phase"] == "Halted"


def bound_pod(name: str, node_name: str, **meta: Any) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}, **meta},
        "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "x:1"}]},
    }


async def test_drain_evicts_all_but_daemonset_and_mirror_pods_then_starts(
    cluster: Cluster,
) -> None:
    cluster.add(UpdatePlanController)
    for number in range(2):
        await cluster.create(node(f"n{number}"))
    await cluster.create(bound_pod("web", "n0"))
    owner = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "u1",
             "controller": True}  # fmt: skip
    await cluster.create(bound_pod("ds-n0", "n0", ownerReferences=[owner]))
    await cluster.create(bound_pod("static-n0", "n0",
                                   annotations={"kubernetes.io/config.mirror": "x"}))  # fmt: skip
    await cluster.create(bound_pod("other", "n1"))
    await cluster.create(plan(maxUnavailable=1, drain=True))
    await cluster.start()
    # Evicted: the pod is terminating on n0, whose agent has not started yet.
    (got,) = cluster.objects("ota.k3py.io/v1", "UpdatePlan")
    entry = got["status"]["nodes"][0]
    assert entry["phase"] == "Pending"
    assert entry["message"] == "draining: 1 pod left"
    assert got["status"]["phase"] == "Progressing"
    await cluster.kubelet()  # n0's kubelet stops it
    await cluster.settle(2.5)
    assert entries(cluster) == {"n0": "Downloading", "n1": "Pending"}
    names = {p["metadata"]["name"] for p in cluster.pods()}
    assert names == {"ds-n0", "static-n0", "other"}
    (n0,) = [n for n in cluster.api.objects(NODES) if n["metadata"]["name"] == "n0"]
    assert n0["spec"]["unschedulable"] is True


async def test_a_node_an_operator_cordoned_stays_cordoned(cluster: Cluster) -> None:
    assert UPDATE_PLANS is not None
    cluster.add(UpdatePlanController)
    cordoned = node("n0")
    cordoned["spec"] = {"unschedulable": True}
    await cluster.create(cordoned)
    await cluster.create(plan(drain=True))
    await cluster.start()
    assert entries(cluster) == {"n0": "Downloading"}
    (got,) = cluster.objects("ota.k3py.io/v1", "UpdatePlan")
    got["status"]["nodes"][0].update(phase="Healthy")
    await cluster.api.update(UPDATE_PLANS, got, subresource="status")
    await cluster.settle(0.5)
    (n0,) = cluster.api.objects(NODES)
    assert n0["spec"]["unschedulable"] is True
    assert cluster.objects("ota.k3py.io/v1", "UpdatePlan")[0]["status"]["phase"] == "Complete"


async def test_a_node_whose_agent_never_reports_fails_at_the_progress_deadline(
    cluster: Cluster,
) -> None:
    # An agent not started by the firmware launcher takes no update and says nothing.
    cluster.add(UpdatePlanController)
    for number in range(3):
        await cluster.create(node(f"n{number}"))
    await cluster.create(plan(maxUnavailable=1, failureThreshold=2, progressDeadlineSeconds=30))
    await cluster.start()
    assert entries(cluster) == {"n0": "Downloading", "n1": "Pending", "n2": "Pending"}
    await cluster.settle(20)
    assert entries(cluster)["n0"] == "Downloading"
    await cluster.settle(12)
    assert entries(cluster) == {"n0": "Failed", "n1": "Downloading", "n2": "Pending"}
    (got,) = cluster.objects("ota.k3py.io/v1", "UpdatePlan")
    (n0,) = [e for e in got["status"]["nodes"] if e["name"] == "n0"]
    assert "no progress in Downloading for 30s" in n0["message"]
    await cluster.settle(32)  # the second silent node reaches the threshold
    (got,) = cluster.objects("ota.k3py.io/v1", "UpdatePlan")
    assert got["status"]["phase"] == "Halted"
    assert entries(cluster)["n2"] == "Pending"

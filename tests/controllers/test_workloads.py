"""DaemonSets, Jobs and Endpoints over the fake API, on a virtual clock."""

from __future__ import annotations

from collections import Counter
from typing import Any

from k3py.cluster.server.controllers.base import DAEMONSETS, ENDPOINTS, JOBS, SERVICES
from k3py.cluster.server.controllers.daemonset import DaemonSetController
from k3py.cluster.server.controllers.endpoints import EndpointsController, endpoint_subsets
from k3py.cluster.server.controllers.job import JobController
from tests.controllers.harness import Cluster, node, template

Object = dict[str, Any]


def live(cluster: Cluster, **labels: str) -> list[Object]:
    return [p for p in cluster.pods(**labels) if not p["metadata"].get("deletionTimestamp")]


async def test_daemonset_runs_one_pod_per_eligible_node_and_follows_new_nodes(
    cluster: Cluster,
) -> None:
    cluster.add(DaemonSetController)
    cluster.with_scheduler()
    await cluster.create(node("n1"))
    await cluster.create(node("n2"))
    await cluster.create(
        node("gpu", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    )
    await cluster.start()
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "kube-system"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": template("agent:1", {"app": "agent"}),
        },
    }
    await cluster.create(ds)
    await cluster.settle()
    await cluster.kubelet()
    assert Counter(p["spec"]["nodeName"] for p in live(cluster)) == {"n1": 1, "n2": 1}
    assert all("controller-revision-hash" in p["metadata"]["labels"] for p in live(cluster))
    [stored] = cluster.api.objects(DAEMONSETS)
    assert stored["status"]["desiredNumberScheduled"] == 2
    assert stored["status"]["numberReady"] == 2

    await cluster.create(node("n3"))
    await cluster.settle()
    await cluster.kubelet()
    assert sorted(p["spec"]["nodeName"] for p in live(cluster)) == ["n1", "n2", "n3"]

    # Rolling update: at most one node without an available pod at any time.
    await cluster.api.patch(
        DAEMONSETS,
        "agent",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "agent:2"}]}}}},
        "kube-system",
        patch_type="strategic",
    )
    for _ in range(10):
        await cluster.settle()
        ready_nodes = {
            p["spec"].get("nodeName")
            for p in live(cluster)
            if (p.get("status") or {}).get("phase") == "Running"
        }
        assert len(ready_nodes) >= 2
        await cluster.kubelet()
    assert sorted(p["spec"]["containers"][0]["image"] for p in live(cluster)) == ["agent:2"] * 3
    [stored] = cluster.api.objects(DAEMONSETS)
    assert stored["status"]["updatedNumberScheduled"] == 3


def job(name: str, **spec: Any) -> Object:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": template("task:1", {"job": name}, restartPolicy="Never"), **spec},
    }


def condition_types(cluster: Cluster, name: str) -> list[str]:
    stored = next(j for j in cluster.api.objects(JOBS) if j["metadata"]["name"] == name)
    return [c["type"] for c in (stored.get("status") or {}).get("conditions") or []]


async def test_job_runs_to_completions_with_parallelism(cluster: Cluster) -> None:
    cluster.add(JobController)
    cluster.with_scheduler()
    await cluster.create(node("n1"))
    await cluster.start()
    await cluster.create(job("batch", completions=3, parallelism=2))
    await cluster.settle()
    assert len(live(cluster)) == 2
    for _ in range(3):
        await cluster.kubelet()
        running = [p for p in live(cluster) if p["status"]["phase"] == "Running"]
        if not running:
            break
        await cluster.set_pod_status(running[0], "Succeeded")
        await cluster.settle()
        assert len([p for p in live(cluster) if p["status"].get("phase") != "Succeeded"]) <= 2
    assert condition_types(cluster, "batch") == ["SuccessCriteriaMet", "Complete"]
    stored = next(j for j in cluster.api.objects(JOBS) if j["metadata"]["name"] == "batch")
    assert stored["status"]["succeeded"] == 3
    assert "completionTime" in stored["status"]


async def test_job_fails_after_its_backoff_limit_with_growing_delays(cluster: Cluster) -> None:
    cluster.add(JobController)
    cluster.with_scheduler()
    await cluster.create(node("n1"))
    await cluster.start()
    await cluster.create(job("flaky", backoffLimit=1))
    await cluster.settle()
    await cluster.kubelet()
    [first] = live(cluster)
    await cluster.set_pod_status(first, "Failed")
    await cluster.settle()
    assert len(cluster.pods()) == 1  # the replacement waits for the 10 s back-off
    await cluster.clock.advance(10)
    await cluster.settle()
    assert len(cluster.pods()) == 2
    await cluster.kubelet()
    second = next(p for p in cluster.pods() if p["status"]["phase"] == "Running")
    await cluster.set_pod_status(second, "Failed")
    await cluster.settle()
    await cluster.clock.advance(60)
    assert len(cluster.pods()) == 2  # no third attempt
    assert condition_types(cluster, "flaky") == ["FailureTarget", "Failed"]
    stored = next(j for j in cluster.api.objects(JOBS) if j["metadata"]["name"] == "flaky")
    failed = next(c for c in stored["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert stored["status"]["failed"] == 2


async def test_job_active_deadline_stops_its_pods(cluster: Cluster) -> None:
    cluster.add(JobController)
    cluster.with_scheduler()
    await cluster.create(node("n1"))
    await cluster.start()
    await cluster.create(job("slow", activeDeadlineSeconds=30))
    await cluster.settle()
    await cluster.kubelet()
    await cluster.clock.advance(27)  # 28 s after the start
    assert condition_types(cluster, "slow") == []
    await cluster.clock.advance(3)
    await cluster.settle()
    assert condition_types(cluster, "slow") == ["FailureTarget", "Failed"]
    assert live(cluster) == []  # its pod is being deleted


def pod(name: str, ip: str, ready: bool, ports: list[Object] | None = None) -> Object:
    return {
        "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports or []}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_endpoint_subsets_split_ready_from_not_ready_and_resolve_named_ports() -> None:
    service = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}],
        },
    }
    named = [{"name": "web", "containerPort": 8080, "protocol": "TCP"}]
    subsets = endpoint_subsets(
        service,
        [
            pod("b", "10.42.0.9", True, named),
            pod("a", "10.42.0.3", True, named),
            pod("c", "10.42.0.5", False, named),
            {**pod("d", "", True, named), "status": {"phase": "Pending"}},
        ],
    )
    assert subsets == [
        {
            "addresses": [
                {"ip": "10.42.0.3", "nodeName": "n1", "targetRef": {
                    "kind": "Pod", "namespace": "default", "name": "a", "uid": "a"}},
                {"ip": "10.42.0.9", "nodeName": "n1", "targetRef": {
                    "kind": "Pod", "namespace": "default", "name": "b", "uid": "b"}},
            ],
            "notReadyAddresses": [
                {"ip": "10.42.0.5", "nodeName": "n1", "targetRef": {
                    "kind": "Pod", "namespace": "default", "name": "c", "uid": "c"}},
            ],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }
    ]  # fmt: skip


async def test_endpoints_follow_pods_and_go_with_their_service(cluster: Cluster) -> None:
    cluster.add(EndpointsController)
    cluster.with_scheduler()
    await cluster.create(node("n1"))
    await cluster.start()
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    await cluster.create(service)
    await cluster.create(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "default",
         "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    )  # fmt: skip
    await cluster.settle()
    [ep] = cluster.api.objects(ENDPOINTS)
    assert ep["metadata"]["labels"] == {"tier": "front"}
    assert ep.get("subsets", []) == []
    await cluster.kubelet()
    [ep] = cluster.api.objects(ENDPOINTS)
    [subset] = ep["subsets"]
    assert [a["targetRef"]["name"] for a in subset["addresses"]] == ["p1"]
    assert subset["ports"] == [{"port": 8080, "protocol": "TCP"}]
    await cluster.api.delete(SERVICES, "web", "default")
    await cluster.settle()
    assert cluster.api.objects(ENDPOINTS) == []


def _orphan(name: str, labels: dict[str, str]) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "web:1"}]},
    }


async def test_replicaset_adopts_orphans_present_at_creation_and_arriving_later(
    cluster: Cluster,
) -> None:
    from k3py.cluster.server.controllers.replicaset import ReplicaSetController

    cluster.add(ReplicaSetController)
    await cluster.create(_orphan("early", {"app": "web"}))
    await cluster.create(_orphan("stranger", {"app": "other"}))
    await cluster.start()
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template("web:1", {"app": "web"}),
        },
    }
    await cluster.create(rs)
    await cluster.settle()

    def owned() -> list[str]:
        return sorted(
            p["metadata"]["name"]
            for p in live(cluster, app="web")
            if any(r.get("kind") == "ReplicaSet" for r in p["metadata"].get("ownerReferences", []))
        )

    assert "early" in owned()
    assert len(owned()) == 3
    assert not cluster.pods(app="other")[0]["metadata"].get("ownerReferences")
    # An orphan that appears while the ReplicaSet is already full is adopted (then, as the
    # newest unscheduled pod, it is the one too many that goes): no web pod stays an orphan.
    await cluster.create(_orphan("late", {"app": "web"}))
    await cluster.settle()
    assert len(owned()) == 3
    assert len(live(cluster, app="web")) == 3

    # Its pods becoming Ready change only its status: no pass looks through the namespace's
    # pods for orphans again.
    [controller] = [c for c in cluster._loops if isinstance(c, ReplicaSetController)]
    scans = 0
    listing = controller.pods.list

    def counted_list(namespace: str | None = None) -> list[dict[str, Any]]:
        nonlocal scans
        scans += 1
        return listing(namespace)

    controller.pods.list = counted_list  # type: ignore[method-assign]
    for pod in live(cluster, app="web"):
        await cluster.set_pod_status(pod, "Running")
    await cluster.settle()
    status = cluster.objects("apps/v1", "ReplicaSet")[0]["status"]
    assert status.get("readyReplicas") == 3
    assert scans == 0

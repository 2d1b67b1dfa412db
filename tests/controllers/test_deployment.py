"""ReplicaSets and Deployments over the fake API: replicas, rollouts, history, undo, pause."""

from __future__ import annotations

import datetime
from typing import Any

from k3py.cluster.server.controllers import podutil, rollout
from k3py.cluster.server.controllers.base import DEPLOYMENTS, PODS, REPLICASETS
from k3py.cluster.server.controllers.deployment import DeploymentController
from k3py.cluster.server.controllers.replicaset import ReplicaSetController
from tests.controllers.harness import Cluster, node, template

Object = dict[str, Any]


def deployment(
    name: str = "web", replicas: int = 3, image: str = "nginx:1", **strategy: Any
) -> Object:
    spec: Object = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": template(image, {"app": name}),
    }
    if strategy:
        spec["strategy"] = strategy
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


async def start(cluster: Cluster, nodes: int = 3) -> None:
    cluster.add(DeploymentController, ReplicaSetController)
    cluster.with_scheduler()
    for i in range(nodes):
        await cluster.create(node(f"n{i + 1}"))
    await cluster.start()


def available(cluster: Cluster) -> int:
    return sum(
        1
        for p in cluster.pods()
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    )


def images(cluster: Cluster) -> list[str]:
    return sorted(
        p["spec"]["containers"][0]["image"]
        for p in cluster.pods()
        if not p["metadata"].get("deletionTimestamp")
    )


def get_deployment(cluster: Cluster, name: str = "web") -> Object:
    return next(d for d in cluster.api.objects(DEPLOYMENTS) if d["metadata"]["name"] == name)


def test_template_hash_is_stable_and_changes_with_the_template() -> None:
    first = rollout.template_hash(template("nginx:1"))
    assert first == rollout.template_hash(template("nginx:1"))
    assert first != rollout.template_hash(template("nginx:2"))
    assert first != rollout.template_hash(template("nginx:1"), collision_count=1)
    assert set(first) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_status_tally_judges_pods_as_the_single_checks_do() -> None:
    now = datetime.datetime(2026, 1, 1, 12, 0, 30, tzinfo=datetime.UTC)

    def stub(phase: str, ready: str | None, since: str = "", **meta: Any) -> dict[str, Any]:
        conditions = [{"type": "PodScheduled", "status": "True"}]
        if ready is not None:
            conditions.append({"type": "Ready", "status": ready, "lastTransitionTime": since})
        return {"metadata": meta, "status": {"phase": phase, "conditions": conditions}}

    pods = [
        stub("Running", "True", "2026-01-01T12:00:00Z", labels={"app": "a"}),  # available
        stub("Running", "True", "2026-01-01T12:00:25Z", labels={"app": "a"}),  # in 5 s
        stub("Running", "True", "", labels={"app": "a"}),  # ready, no time: never available
        stub("Running", "False", labels={"app": "b"}),
        stub("Pending", None),
        stub("Succeeded", "True", "2026-01-01T12:00:00Z"),
        stub("Running", "True", "2026-01-01T12:00:00Z", deletionTimestamp="x"),
        {"metadata": "broken", "status": None},
    ]
    for min_ready in (0, 10):
        counted = podutil.tally(pods, min_ready, now, {"app": "a"})
        active = [p for p in pods if podutil.is_active(p)]
        ready = [p for p in active if podutil.is_ready(p)]
        waits = [w for p in ready if (w := podutil.seconds_until_available(p, min_ready, now))]
        assert counted == podutil.Tally(
            active=len(active),
            ready=len(ready),
            available=sum(podutil.is_available(p, min_ready, now) for p in ready),
            labelled=sum((podutil.meta(p).get("labels") or {}).get("app") == "a" for p in active),
            next_available=min(waits) if waits else None,
        )
    assert podutil.tally(pods, 10, now) == podutil.Tally(6, 3, 1, 6, 5.0)


def test_surge_and_unavailable_round_as_kubernetes() -> None:
    d = deployment(replicas=10, type="RollingUpdate")
    d["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert rollout.surge_and_unavailable(d) == (3, 2)
    d["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": 0, "maxUnavailable": 0}
    assert rollout.surge_and_unavailable(d) == (0, 1)


async def test_replicaset_keeps_its_replicas_and_reports_status(cluster: Cluster) -> None:
    cluster.add(ReplicaSetController)
    await cluster.start()
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "cache", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "cache"}},
            "template": template("redis:7", {"app": "cache"}),
        },
    }
    await cluster.create(rs)
    await cluster.settle()
    pods = cluster.pods(app="cache")
    assert len(pods) == 3
    assert all(p["metadata"]["name"].startswith("cache-") for p in pods)
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" for p in pods)
    # Two become ready; the third never does and is the one given up on a scale-down.
    for p in pods[:2]:
        await cluster.set_pod_status(p, "Running")
    await cluster.settle()
    [stored] = cluster.api.objects(REPLICASETS)
    assert stored["status"]["replicas"] == 3
    assert stored["status"]["readyReplicas"] == 2
    assert stored["status"]["observedGeneration"] == 1
    await cluster.api.patch(REPLICASETS, "cache", {"spec": {"replicas": 2}}, "default")
    await cluster.settle()
    survivors = {p["metadata"]["name"] for p in cluster.pods(app="cache")}
    assert survivors == {p["metadata"]["name"] for p in pods[:2]}
    # A pod deleted behind its back is replaced.
    await cluster.api.delete(PODS, pods[0]["metadata"]["name"], "default")
    await cluster.settle()
    assert len(cluster.pods(app="cache")) == 2
    assert len(cluster.events("SuccessfulCreate")) == 4


async def test_deployment_rolls_out_within_max_unavailable_at_every_step(
    cluster: Cluster,
) -> None:
    await start(cluster)
    d = deployment(replicas=4, type="RollingUpdate")
    d["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": 1, "maxUnavailable": 1}
    await cluster.create(d)
    await cluster.settle()
    await cluster.kubelet()
    assert images(cluster) == ["nginx:1"] * 4
    status = get_deployment(cluster)["status"]
    assert status["availableReplicas"] == 4
    assert get_deployment(cluster)["metadata"]["annotations"][rollout.REVISION] == "1"

    await cluster.api.patch(
        DEPLOYMENTS,
        "web",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}}},
        "default",
        patch_type="strategic",
    )
    seen = []
    for _ in range(20):
        await cluster.settle()
        seen.append(available(cluster))
        assert available(cluster) >= 3, seen
        assert len([p for p in cluster.pods() if not p["metadata"].get("deletionTimestamp")]) <= 5
        await cluster.kubelet()
        if images(cluster) == ["nginx:2"] * 4:
            break
    assert images(cluster) == ["nginx:2"] * 4
    await cluster.settle()
    final = get_deployment(cluster)
    assert final["metadata"]["annotations"][rollout.REVISION] == "2"
    assert final["status"]["updatedReplicas"] == 4
    assert final["status"]["observedGeneration"] == final["metadata"]["generation"]
    progressing = next(c for c in final["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "NewReplicaSetAvailable"
    assert progressing["message"].endswith("has successfully progressed.")
    sets = {
        rs["metadata"]["name"]: rs["spec"]["replicas"] for rs in cluster.api.objects(REPLICASETS)
    }
    assert sorted(sets.values()) == [0, 4]
    scaling = [e["message"] for e in cluster.events("ScalingReplicaSet")]
    assert scaling[0].startswith("Scaled up replica set web-")
    assert scaling[0].endswith("from 0 to 4")

    # Undo: the old template comes back, its ReplicaSet is reused as revision 3.
    old_rs = next(rs for rs in cluster.api.objects(REPLICASETS) if rs["spec"]["replicas"] == 0)
    await cluster.api.patch(
        DEPLOYMENTS,
        "web",
        [{"op": "replace", "path": "/spec/template", "value": rollout.without_hash(
            old_rs["spec"]["template"])}],
        "default",
        patch_type="json",
    )  # fmt: skip
    for _ in range(20):
        await cluster.settle()
        assert available(cluster) >= 3
        await cluster.kubelet()
        if images(cluster) == ["nginx:1"] * 4:
            break
    reused = next(
        rs
        for rs in cluster.api.objects(REPLICASETS)
        if rs["metadata"]["name"] == old_rs["metadata"]["name"]
    )
    assert reused["spec"]["replicas"] == 4
    assert reused["metadata"]["annotations"][rollout.REVISION] == "3"
    assert reused["metadata"]["annotations"][rollout.REVISION_HISTORY] == "1"
    assert len(cluster.api.objects(REPLICASETS)) == 2


async def test_recreate_removes_old_pods_before_new_ones_start(cluster: Cluster) -> None:
    await start(cluster)
    await cluster.create(deployment(replicas=2, type="Recreate"))
    await cluster.settle()
    await cluster.kubelet()
    await cluster.api.patch(
        DEPLOYMENTS,
        "web",
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}}},
        "default",
        patch_type="strategic",
    )
    await cluster.settle()
    # Old pods are being deleted; no new pod may exist while any old one does.
    assert images(cluster) == []
    await cluster.kubelet()  # the kubelets finish the deletions
    await cluster.settle()
    assert images(cluster) == ["nginx:2", "nginx:2"]


async def test_paused_deployment_scales_but_does_not_roll_out(cluster: Cluster) -> None:
    await start(cluster)
    await cluster.create(deployment(replicas=2))
    await cluster.settle()
    await cluster.kubelet()
    await cluster.api.patch(DEPLOYMENTS, "web", {"spec": {"paused": True}}, "default")
    await cluster.api.patch(
        DEPLOYMENTS,
        "web",
        {"spec": {"replicas": 3, "template": {"metadata": {"labels": {"v": "2"}}}}},
        "default",
    )
    await cluster.settle()
    await cluster.kubelet()
    assert len(cluster.api.objects(REPLICASETS)) == 1
    assert len(cluster.pods(app="web")) == 3
    cond = next(
        c for c in get_deployment(cluster)["status"]["conditions"] if c["type"] == "Progressing"
    )
    assert (cond["status"], cond["reason"]) == ("Unknown", "DeploymentPaused")
    await cluster.api.patch(DEPLOYMENTS, "web", {"spec": {"paused": False}}, "default")
    for _ in range(10):
        await cluster.settle()
        await cluster.kubelet()
    assert len(cluster.pods(v="2")) == 3


async def test_a_rollout_that_stalls_exceeds_its_progress_deadline(cluster: Cluster) -> None:
    await start(cluster)
    d = deployment(replicas=1)
    d["spec"]["progressDeadlineSeconds"] = 60
    await cluster.create(d)
    await cluster.settle()
    await cluster.kubelet(ready=False)  # the pod runs but never becomes ready
    await cluster.clock.advance(30)
    cond = next(
        c for c in get_deployment(cluster)["status"]["conditions"] if c["type"] == "Progressing"
    )
    assert cond["status"] == "True"
    await cluster.clock.advance(40)
    await cluster.settle()
    cond = next(
        c for c in get_deployment(cluster)["status"]["conditions"] if c["type"] == "Progressing"
    )
    assert (cond["status"], cond["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert cond["message"].endswith("has timed out progressing.")

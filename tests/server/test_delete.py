"""Delete: finalizers, preconditions, grace periods, propagation and namespace termination."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tests.server.conftest import Api
from tests.server.test_crud import CM, configmap

RS = "/apis/apps/v1/namespaces/default/replicasets"
PODS = "/api/v1/namespaces/default/pods"


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def pod(name: str, owner: dict[str, Any] | None = None, node: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app": "rs"}}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


async def replica_set(api: Api, name: str) -> dict[str, Any]:
    labels = {"app": "rs"}
    body = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    reply = await api.post(RS, body)
    assert reply.status == 201, reply.body
    owner: dict[str, Any] = reply.body
    return owner


async def gone(api: Api, path: str) -> bool:
    return (await api.get(path)).status == 404


async def test_delete_returns_a_success_status(api: Api) -> None:
    created = await api.post(CM, configmap("bye"))
    reply = await api.delete(f"{CM}/bye")
    assert reply.body["status"] == "Success"
    assert reply.body["details"]["uid"] == created.body["metadata"]["uid"]
    assert await gone(api, f"{CM}/bye")
    assert (await api.delete(f"{CM}/bye")).status == 404


async def test_preconditions(api: Api) -> None:
    await api.post(CM, configmap("pre"))
    wrong_uid = await api.delete(f"{CM}/pre", {"preconditions": {"uid": "nope"}})
    assert wrong_uid.status == 409
    wrong_rv = await api.delete(f"{CM}/pre", {"preconditions": {"resourceVersion": "1"}})
    assert wrong_rv.status == 409
    bad_policy = await api.delete(f"{CM}/pre?propagationPolicy=Sideways")
    assert bad_policy.status == 422
    assert (await api.get(f"{CM}/pre")).status == 200


async def test_finalizers_hold_an_object_until_removed(api: Api) -> None:
    body = configmap("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await api.post(CM, body)
    pending = await api.delete(f"{CM}/held")
    assert pending.status == 200
    assert pending.body["metadata"]["deletionTimestamp"]
    assert (await api.get(f"{CM}/held")).status == 200
    released = await api.patch(f"{CM}/held", {"metadata": {"finalizers": None}})
    assert released.status == 200
    assert await gone(api, f"{CM}/held")


async def test_pods_on_a_node_get_a_grace_period(api: Api) -> None:
    await api.post(PODS, pod("running", node="node1"))
    graceful = await api.delete(f"{PODS}/running")
    assert graceful.body["metadata"]["deletionGracePeriodSeconds"] == 30
    assert (await api.get(f"{PODS}/running")).status == 200
    forced = await api.delete(f"{PODS}/running?gracePeriodSeconds=0")
    assert forced.body["kind"] == "Pod"
    assert await gone(api, f"{PODS}/running")
    await api.post(PODS, pod("pending"))
    await api.delete(f"{PODS}/pending")
    assert await gone(api, f"{PODS}/pending")


async def test_background_propagation_deletes_dependents(api: Api) -> None:
    owner = await replica_set(api, "bg")
    await api.post(PODS, pod("bg-1", owner))
    await api.delete(f"{RS}/bg?propagationPolicy=Background")
    assert await gone(api, f"{RS}/bg")
    await eventually(lambda: gone(api, f"{PODS}/bg-1"))


async def test_orphan_propagation_keeps_dependents(api: Api) -> None:
    owner = await replica_set(api, "orphan")
    await api.post(PODS, pod("orphan-1", owner))
    await api.delete(f"{RS}/orphan", {"kind": "DeleteOptions", "propagationPolicy": "Orphan"})
    assert await gone(api, f"{RS}/orphan")
    left = await api.get(f"{PODS}/orphan-1")
    assert left.status == 200
    assert "ownerReferences" not in left.body["metadata"]


async def test_foreground_propagation_deletes_dependents_first(api: Api) -> None:
    owner = await replica_set(api, "fg")
    dependent = pod("fg-1", owner)
    dependent["metadata"]["finalizers"] = ["example.com/slow"]
    await api.post(PODS, dependent)
    waiting = await api.delete(f"{RS}/fg?propagationPolicy=Foreground")
    assert "foregroundDeletion" in waiting.body["metadata"]["finalizers"]
    await eventually(lambda: _has_deletion_timestamp(api, f"{PODS}/fg-1"))
    assert (await api.get(f"{RS}/fg")).status == 200  # held while its dependent exists
    await api.patch(f"{PODS}/fg-1", {"metadata": {"finalizers": None}})
    await eventually(lambda: gone(api, f"{RS}/fg"))


async def _has_deletion_timestamp(api: Api, path: str) -> bool:
    reply = await api.get(path)
    return reply.status == 200 and bool(reply.body["metadata"].get("deletionTimestamp"))


async def test_namespace_deletion_removes_its_content_then_itself(api: Api) -> None:
    await api.post("/api/v1/namespaces", {"metadata": {"name": "doomed"}})
    await api.post("/api/v1/namespaces/doomed/configmaps", configmap("inside"))
    await api.post("/api/v1/namespaces/doomed/pods", pod("on-missing-node", node="gone"))
    terminating = await api.delete("/api/v1/namespaces/doomed")
    assert terminating.body["status"]["phase"] == "Terminating"
    refused = await api.post("/api/v1/namespaces/doomed/configmaps", configmap("late"))
    assert (refused.status, refused.body["reason"]) == (403, "Forbidden")
    await eventually(lambda: gone(api, "/api/v1/namespaces/doomed"))
    assert (await api.get("/api/v1/namespaces/doomed/configmaps")).body["items"] == []
    assert (await api.get("/api/v1/namespaces/doomed/pods")).body["items"] == []


async def test_delete_collection_by_label(api: Api) -> None:
    for name, team in (("x1", "x"), ("x2", "x"), ("y1", "y")):
        body = configmap(name)
        body["metadata"]["labels"] = {"team": team}
        await api.post(CM, body)
    reply = await api.delete(f"{CM}?labelSelector=team%3Dx")
    assert [i["metadata"]["name"] for i in reply.body["items"]] == ["x1", "x2"]
    left = (await api.get(CM)).body["items"]
    assert [i["metadata"]["name"] for i in left] == ["y1"]

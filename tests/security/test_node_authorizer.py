"""The Node authorizer on a real server: a node credential reads only the Secrets, ConfigMaps
and ServiceAccounts of the pods bound to it, one object at a time, and may not give itself role
labels; the agent's pod source still gets what its pods use."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from k3py.cluster.agent.autonomy.store import LocalStore
from k3py.cluster.agent.podsource import ClusterPods
from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.client import EventRecorder, KubeClient, RealClock
from k3py.cluster.server.app import create_app
from k3py.cluster.server.auth import UserInfo
from k3py.cluster.server.rest.context import REST
from k3py.cluster.server.store import MemoryDatastore
from tests.server.conftest import ADMIN, Api, TokenAuthenticator, serving, settings_for

NODE1 = UserInfo("system:node:node1", ("system:nodes", "system:authenticated"))
NS = "/api/v1/namespaces/default"


def _pod(name: str, node: str, *, secret: str = "", config_map: str = "") -> dict[str, Any]:
    env = []
    if config_map:
        env.append(
            {"name": "C", "valueFrom": {"configMapKeyRef": {"name": config_map, "key": "k"}}}
        )
    volumes = [{"name": "s", "secret": {"secretName": secret}}] if secret else []
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "serviceAccountName": "default",
            "volumes": volumes,
            "containers": [{"name": "c", "image": "busybox", "env": env}],
        },
    }


def _secret(name: str, value: str = "aGk=") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"k": value}}


def _config_map(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    users = {"admin": ADMIN, "node1": NODE1}
    app = create_app(settings_for(tmp_path), MemoryDatastore(), TokenAuthenticator(users))
    async with serving(app) as served:
        for path, body in (
            (f"{NS}/secrets", _secret("mine")),
            (f"{NS}/secrets", _secret("other")),
            (f"{NS}/secrets", _secret("elsewhere")),
            (f"{NS}/configmaps", _config_map("mine-cm")),
            (f"{NS}/configmaps", _config_map("other-cm")),
            (f"{NS}/pods", _pod("p1", "node1", secret="mine", config_map="mine-cm")),
            (f"{NS}/pods", _pod("p2", "node2", secret="elsewhere")),
        ):
            reply = await served.post(path, body)
            assert reply.status == 201, reply.body
        yield served


async def test_node_cannot_list_or_watch_secrets_and_configmaps(api: Api) -> None:
    for path in (
        "/api/v1/secrets",
        f"{NS}/secrets",
        "/api/v1/secrets?watch=true",
        f"{NS}/secrets?watch=true",
        "/api/v1/configmaps",
        f"{NS}/configmaps?watch=true",
        "/api/v1/serviceaccounts",
        # A name selector is one object only inside a namespace.
        "/api/v1/secrets?fieldSelector=metadata.name%3Dmine",
    ):
        reply = await api.get(path, token="node1")
        assert reply.status == 403, path
        assert reply.body["reason"] == "Forbidden"


async def test_node_gets_only_what_its_pods_refer_to(api: Api) -> None:
    assert (await api.get(f"{NS}/secrets/mine", token="node1")).status == 200
    assert (await api.get(f"{NS}/configmaps/mine-cm", token="node1")).status == 200
    assert (await api.get(f"{NS}/serviceaccounts/default", token="node1")).status == 200
    for path in (f"{NS}/secrets/other", f"{NS}/secrets/elsewhere", f"{NS}/configmaps/other-cm"):
        reply = await api.get(path, token="node1")
        assert reply.status == 403, path
        assert "no relationship found" in reply.body["message"]
    # The same object in another namespace is not referenced.
    other_ns = "/api/v1/namespaces/kube-system/secrets/mine"
    assert (await api.get(other_ns, token="node1")).status == 403


async def test_node_lists_and_watches_one_referenced_object(api: Api) -> None:
    one = f"{NS}/secrets?fieldSelector=metadata.name%3Dmine"
    listed = await api.get(one, token="node1")
    assert listed.status == 200
    assert [i["metadata"]["name"] for i in listed.body["items"]] == ["mine"]
    other = f"{NS}/secrets?fieldSelector=metadata.name%3Dother&watch=true"
    assert (await api.get(other, token="node1")).status == 403
    headers = {"Authorization": "Bearer node1"}
    watch = f"{one}&watch=true&resourceVersion={listed.body['metadata']['resourceVersion']}"
    async with api.client.get(watch, headers=headers) as response:
        assert response.status == 200
        patched = await api.patch(f"{NS}/secrets/mine", {"data": {"k": "Ynll"}})
        assert patched.status == 200
        line = await asyncio.wait_for(response.content.readline(), 5)
        event = json.loads(line)
        assert event["type"] == "MODIFIED"
        assert event["object"]["data"] == {"k": "Ynll"}


async def test_node_may_not_give_itself_role_labels(api: Api) -> None:
    meta: dict[str, Any] = {
        "name": "node1",
        "labels": {"node-role.kubernetes.io/control-plane": ""},
    }
    node = {"apiVersion": "v1", "kind": "Node", "metadata": meta}
    refused = await api.post("/api/v1/nodes", node, token="node1")
    assert refused.status == 403
    assert "node-role.kubernetes.io/" in refused.body["message"]
    del meta["labels"]
    assert (await api.post("/api/v1/nodes", node, token="node1")).status == 201
    label = {"metadata": {"labels": {"node-role.kubernetes.io/worker": "true"}}}
    assert (await api.patch("/api/v1/nodes/node1", label, token="node1")).status == 403
    assert (await api.patch("/api/v1/nodes/node1", label)).status == 200  # the admin may
    ordinary = {"metadata": {"labels": {"example.com/rack": "3"}}}
    assert (await api.patch("/api/v1/nodes/node1", ordinary, token="node1")).status == 200


class _Sync:
    """The part of the pod sync loop that the pod source drives."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}

    def apply(self, pod: dict[str, Any]) -> None:
        self.pods[pod["metadata"]["uid"]] = pod

    def replace_all(self, pods: list[dict[str, Any]]) -> None:
        self.pods = {p["metadata"]["uid"]: p for p in pods}

    def forget(self, uid: str) -> None:
        self.pods.pop(uid, None)

    def worker(self, uid: str) -> None:
        return None


async def _eventually(check: Any, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_agent_pod_source_reads_its_pods_objects_as_a_node(api: Api, tmp_path: Path) -> None:
    url = str(api.client.make_url("")).rstrip("/")
    client = KubeClient(url, ssl_context=None, token="node1")
    clock = RealClock()
    store = LocalStore(tmp_path / "cache")
    pods = ClusterPods(client, store, clock, "node1", EventRecorder(client, clock, "kubelet"))
    pods.objects_followed.refresh_seconds = 0.2
    pods.start(_Sync())  # type: ignore[arg-type]
    try:
        await _eventually(lambda: pods.objects.secret("default", "mine") is not None)
        await _eventually(lambda: pods.objects.config_map("default", "mine-cm") is not None)
        assert store.get_object("secrets", "default", "mine") is not None
        await api.patch(f"{NS}/secrets/mine", {"data": {"k": "bmV3"}})
        await _eventually(
            lambda: (pods.objects.secret("default", "mine") or {}).get("data") == {"k": "bmV3"}
        )
        # A new pod's secret is followed too; the unreferenced one never reaches the node.
        assert (await api.post(f"{NS}/pods", _pod("p3", "node1", secret="other"))).status == 201
        await _eventually(lambda: pods.objects.secret("default", "other") is not None)
        assert pods.objects.secret("default", "elsewhere") is None
    finally:
        await pods.stop()
        await client.close()


async def test_many_referenced_objects_leave_a_small_connection_pool_free(
    api: Api, tmp_path: Path
) -> None:
    """A board's agent keeps a few connections; following what its pods use must not hold
    one per object (watches would), or status writes and lease renewals would wait forever."""
    names = [f"many-{n}" for n in range(6)]
    for name in names:
        assert (await api.post(f"{NS}/secrets", _secret(name))).status == 201
    pod = _pod("p-many", "node1")
    pod["spec"]["volumes"] = [{"name": n, "secret": {"secretName": n}} for n in names]
    assert (await api.post(f"{NS}/pods", pod)).status == 201
    url = str(api.client.make_url("")).rstrip("/")
    client = KubeClient(url, ssl_context=None, token="node1", max_connections=2)
    clock = RealClock()
    pods = ClusterPods(
        client, LocalStore(tmp_path / "c"), clock, "node1", EventRecorder(client, clock, "k")
    )
    pods.objects_followed.refresh_seconds = 0.2
    pods.start(_Sync())  # type: ignore[arg-type]
    try:
        await _eventually(lambda: all(pods.objects.secret("default", n) for n in names))
        info = by_kind("v1", "Node")
        assert info is not None
        with pytest.raises(ApiError) as missing:
            await asyncio.wait_for(client.get(info, "node1"), 5)
        assert missing.value.code == 404  # answered: the pool is not held by the objects
    finally:
        await pods.stop()
        await client.close()


async def test_the_authorizer_graph_follows_pods_as_they_come_and_go(api: Api) -> None:
    assert (await api.get(f"{NS}/secrets/mine", token="node1")).status == 200
    graph = api.app[REST].node_graph
    await _eventually(lambda: graph.synced)
    assert (await api.post(f"{NS}/secrets", _secret("later"))).status == 201
    assert (await api.get(f"{NS}/secrets/later", token="node1")).status == 403
    assert (await api.post(f"{NS}/pods", _pod("p9", "node1", secret="later"))).status == 201
    assert (await api.get(f"{NS}/secrets/later", token="node1")).status == 200
    gone = await api.delete(f"{NS}/pods/p9", {"gracePeriodSeconds": 0})
    assert gone.status == 200
    await _eventually(lambda: not graph.refers("node1", ("secrets", "default", "later")))
    assert (await api.get(f"{NS}/secrets/later", token="node1")).status == 403

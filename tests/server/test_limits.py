"""Limits and failure modes: 429 with Retry-After, 403 for the unauthorised, NodeRestriction,
and an unexpected failure that still answers with a Status and no traceback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from k3py.cluster.server.app import create_app
from k3py.cluster.server.store import KeyValue, MemoryDatastore
from tests.server.conftest import ADMIN, Api, TokenAuthenticator, serving, settings_for
from tests.server.test_crud import CM, configmap


async def test_too_many_requests_in_flight_get_429(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, max_mutating_requests_inflight=1)
    app = create_app(settings, MemoryDatastore(), TokenAuthenticator({"admin": ADMIN}))
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"metadata": {"name": "slow"},'
        await release.wait()
        yield b' "data": {}}'

    headers = {"Authorization": "Bearer admin", "Content-Type": "application/json"}
    async with serving(app) as api:
        client = api.client
        first = asyncio.ensure_future(client.post(CM, data=slow_body(), headers=headers))
        await asyncio.sleep(0.2)  # the first create is now in flight, reading its body
        async with client.post(CM, json=configmap("fast"), headers=headers) as second:
            assert second.status == 429
            assert second.headers["Retry-After"] == "1"
            assert (await second.json())["reason"] == "TooManyRequests"
        async with client.get(CM, headers=headers) as read:
            assert read.status == 200  # reads have their own limit
        release.set()
        response = await first
        assert response.status == 201
        response.release()


async def test_users_without_a_grant_are_forbidden(api: Api) -> None:
    reply = await api.get(CM, token="jane")
    assert reply.status == 403
    assert reply.body["reason"] == "Forbidden"
    assert 'User "jane" cannot list resource "configmaps"' in reply.body["message"]


async def test_a_node_may_change_only_its_own_objects(api: Api) -> None:
    for name in ("node1", "node2"):
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
        assert (await api.post("/api/v1/nodes", node)).status == 201
    own = await api.patch(
        "/api/v1/nodes/node1", {"metadata": {"labels": {"a": "b"}}}, token="node1"
    )
    assert own.status == 200
    other = await api.patch(
        "/api/v1/nodes/node2", {"metadata": {"labels": {"a": "b"}}}, token="node1"
    )
    assert other.status == 403
    spoof = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node3"}}
    assert (await api.post("/api/v1/nodes", spoof, token="node1")).status == 403


class FailingDatastore(MemoryDatastore):
    """A datastore whose reads fail in a way nobody planned for."""

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        if "configmaps" in key:
            raise ZeroDivisionError("simulated fault")
        return await super().get(key, revision=revision)


async def test_unexpected_failures_are_500_statuses_without_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(
        settings_for(tmp_path), FailingDatastore(), TokenAuthenticator({"admin": ADMIN})
    )
    async with serving(app) as api:
        reply = await api.get(f"{CM}/anything")
        assert reply.status == 500
        assert reply.body["kind"] == "Status"
        assert "Traceback" not in reply.text
        assert "simulated" not in reply.text
        assert (await api.get("/api/v1/namespaces")).status == 200
    assert any("request failed" in r.getMessage() for r in caplog.records)


async def test_scale_subresource(api: Api) -> None:
    from tests.server.test_crud import DEPLOYMENTS, deployment

    await api.post(DEPLOYMENTS, deployment("sc", replicas=2))
    scale = await api.get(f"{DEPLOYMENTS}/sc/scale")
    assert scale.body["kind"] == "Scale"
    assert scale.body["apiVersion"] == "autoscaling/v1"
    assert scale.body["spec"]["replicas"] == 2
    assert scale.body["status"]["selector"] == "app=sc"
    patched = await api.patch(f"{DEPLOYMENTS}/sc/scale", {"spec": {"replicas": 5}})
    assert patched.body["spec"]["replicas"] == 5
    body = {**patched.body, "spec": {"replicas": 1}}
    assert (await api.put(f"{DEPLOYMENTS}/sc/scale", body)).body["spec"]["replicas"] == 1
    assert (
        await api.put(f"{DEPLOYMENTS}/sc/scale", {**body, "spec": {"replicas": 4}})
    ).status == 409
    deployment_now = await api.get(f"{DEPLOYMENTS}/sc")
    assert deployment_now.body["spec"]["replicas"] == 1
    negative = await api.patch(f"{DEPLOYMENTS}/sc/scale", {"spec": {"replicas": -1}})
    assert negative.status == 422


async def test_binding_assigns_a_pod_once(api: Api) -> None:
    from tests.server.test_delete import PODS, pod

    await api.post(PODS, pod("unbound"))
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "unbound"},
        "target": {"apiVersion": "v1", "kind": "Node", "name": "node1"},
    }
    assert (await api.post(f"{PODS}/unbound/binding", binding)).status == 201
    bound = await api.get(f"{PODS}/unbound")
    assert bound.body["spec"]["nodeName"] == "node1"
    assert bound.body["status"]["conditions"][0]["type"] == "PodScheduled"
    again = await api.post("/api/v1/namespaces/default/bindings", binding)
    assert again.status == 409

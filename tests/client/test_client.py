"""KubeClient over HTTP: paths, pages, watch streams, Status errors, TLS and tokens."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.client import client as client_module
from k3py.cluster.client.client import KubeClient, Unreachable, error_from_status, resource_path
from k3py.cluster.client.fake import FakeApi, info_of
from k3py.cluster.client.kubeconfig import read_kubeconfig
from k3py.cluster.client.protocol import KubeApi
from k3py.cluster.server.kubeconfig import write_kubeconfig
from k3py.cluster.server.pki import ensure_pki
from tests.client.httpfront import SEEN, make_app

CONFIGMAPS = info_of("v1", "ConfigMap")
PODS = info_of("v1", "Pod")
NODES = info_of("v1", "Node")
DEPLOYMENTS = info_of("apps/v1", "Deployment")


def configmap(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeApi, TestServer]]:
    fake = FakeApi()
    server = TestServer(make_app(fake), host="127.0.0.1")
    await server.start_server()
    yield fake, server
    await server.close()


@pytest.fixture(params=[False, True], ids=["aiohttp", "light-start"])
async def kube(
    served: tuple[FakeApi, TestServer], request: pytest.FixtureRequest
) -> AsyncIterator[KubeClient]:
    # light-start: the requests go over the standard library until the first watch.
    _, server = served
    client = KubeClient(
        str(server.make_url("")), ssl_context=None, token="s3cret", light_start=request.param
    )
    yield client
    await client.close()


def test_the_client_and_the_fake_meet_one_protocol() -> None:
    apis: list[KubeApi] = [FakeApi(), KubeClient("http://127.0.0.1:1", ssl_context=None)]
    assert len(apis) == 2


def test_paths_follow_the_kubernetes_url_scheme() -> None:
    assert resource_path(NODES, None, "n1", "status") == "/api/v1/nodes/n1/status"
    assert resource_path(PODS, "ns", "p", "binding") == "/api/v1/namespaces/ns/pods/p/binding"
    assert resource_path(PODS) == "/api/v1/pods"
    assert resource_path(DEPLOYMENTS, "a") == "/apis/apps/v1/namespaces/a/deployments"


async def test_crud_round_trip_with_status_errors(kube: KubeClient) -> None:
    created = await kube.create(CONFIGMAPS, configmap("one", app="x"), "default")
    assert created["metadata"]["uid"]
    await kube.create(CONFIGMAPS, configmap("two", app="y"), "default")
    got = await kube.get(CONFIGMAPS, "one", "default")
    assert got["data"] == {"k": "v"}

    items, version = await kube.list(CONFIGMAPS, "default", label_selector="app=x")
    assert [i["metadata"]["name"] for i in items] == ["one"]
    assert items[0]["kind"] == "ConfigMap"  # filled in although list items lack it
    assert int(version) >= 2

    got["data"] = {"k": "w"}
    updated = await kube.update(CONFIGMAPS, got)
    with pytest.raises(ApiError) as stale:
        await kube.update(CONFIGMAPS, got)  # got still carries the old resourceVersion
    assert (stale.value.code, stale.value.reason) == (409, "Conflict")
    assert stale.value.name == "one"

    patched = await kube.patch(CONFIGMAPS, "one", {"data": {"extra": "1"}}, "default")
    assert patched["data"] == {"k": "w", "extra": "1"}
    assert int(patched["metadata"]["resourceVersion"]) > int(updated["metadata"]["resourceVersion"])
    ops = [{"op": "replace", "path": "/data/k", "value": "z"}]
    patched = await kube.patch(CONFIGMAPS, "one", ops, "default", patch_type="json")
    assert patched["data"]["k"] == "z"

    assert await kube.delete(CONFIGMAPS, "one", "default") is None
    with pytest.raises(ApiError) as missing:
        await kube.get(CONFIGMAPS, "one", "default")
    assert (missing.value.code, missing.value.reason) == (404, "NotFound")
    assert str(missing.value) == 'configmaps "one" not found'


async def test_requests_carry_the_bearer_token_and_content_types(
    kube: KubeClient, served: tuple[FakeApi, TestServer]
) -> None:
    _, server = served
    await kube.create(CONFIGMAPS, configmap("one"), "default")
    await kube.patch(CONFIGMAPS, "one", {"data": {}}, "default", patch_type="strategic")
    seen = server.app[SEEN]
    assert {r.headers["Authorization"] for r in seen} == {"Bearer s3cret"}
    assert seen[-1].content_type == "application/strategic-merge-patch+json"


async def test_list_follows_continue_across_pages(
    kube: KubeClient, served: tuple[FakeApi, TestServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, server = served
    monkeypatch.setattr(client_module, "LIST_PAGE_SIZE", 2)
    for i in range(5):
        await fake.create(CONFIGMAPS, configmap(f"cm{i}"), "default")
    items, _ = await kube.list(CONFIGMAPS)
    assert sorted(i["metadata"]["name"] for i in items) == [f"cm{i}" for i in range(5)]
    assert [r.query.get("continue") for r in server.app[SEEN]] == [None, "2", "4"]


async def test_watch_streams_events_from_a_resource_version(
    kube: KubeClient, served: tuple[FakeApi, TestServer]
) -> None:
    fake, _ = served
    await fake.create(CONFIGMAPS, configmap("before"), "default")
    _, version = await kube.list(CONFIGMAPS, "default")
    events: list[tuple[str, str]] = []

    async def follow() -> None:
        async for kind, obj in kube.watch(CONFIGMAPS, "default", resource_version=version):
            events.append((kind, obj["metadata"]["name"]))
            if kind == "DELETED":
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    await fake.create(CONFIGMAPS, configmap("a"), "default")
    await fake.patch(CONFIGMAPS, "a", {"data": {"x": "y"}}, "default")
    await fake.delete(CONFIGMAPS, "a", "default")
    await asyncio.wait_for(task, 5)
    assert events == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


async def test_watch_from_a_compacted_version_raises_expired(
    kube: KubeClient, served: tuple[FakeApi, TestServer]
) -> None:
    fake, _ = served
    await fake.create(CONFIGMAPS, configmap("a"), "default")
    await fake.create(CONFIGMAPS, configmap("b"), "default")
    fake.compact()
    with pytest.raises(ApiError) as expired:
        async for _ in kube.watch(CONFIGMAPS, resource_version="1"):
            pass
    assert (expired.value.code, expired.value.reason) == (410, "Expired")


def test_status_bodies_become_api_errors_with_causes() -> None:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": 'Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1',
        "reason": "Invalid",
        "code": 422,
        "details": {
            "name": "web",
            "group": "apps",
            "kind": "Deployment",
            "causes": [
                {"reason": "FieldValueInvalid", "message": "Invalid value: -1", "field": "x"}
            ],
        },
    }
    err = error_from_status(422, body)
    assert (err.code, err.reason, err.name, err.group, err.kind) == (
        422,
        "Invalid",
        "web",
        "apps",
        "Deployment",
    )
    assert err.causes[0].field == "x"
    assert err.to_status() == {**body, "metadata": {}}
    plain = error_from_status(502, None, "Bad Gateway")
    assert (plain.code, plain.reason, plain.message) == (502, "Unknown", "Bad Gateway")


@pytest.mark.parametrize("light_start", [False, True])
async def test_an_absent_server_is_unreachable(light_start: bool) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    async with KubeClient(url, ssl_context=None, light_start=light_start) as kube:
        with pytest.raises(Unreachable, match="cannot reach the API server"):
            await kube.get(NODES, "n1")


async def test_from_kubeconfig_authenticates_with_the_embedded_client_certificate(
    tmp_path: Path,
) -> None:
    pki = ensure_pki(tmp_path / "data", [], hostname="board1", addresses=["127.0.0.1"])
    users: list[str] = []
    peers: list[object] = []

    async def whoami(request: web.Request) -> web.Response:
        transport = request.transport
        assert transport is not None
        peers.append(transport.get_extra_info("peername"))
        cert = transport.get_extra_info("peercert") or {}
        subject = dict(x[0] for x in cert.get("subject", ()))
        users.append(str(subject.get("commonName", "")))
        return web.json_response({"kind": "Node", "metadata": {"name": "n1"}})

    app = web.Application()
    app.router.add_get("/api/v1/nodes/n1", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_ssl_context())
    await site.start()
    try:
        port = runner.addresses[0][1]
        path = tmp_path / "k3py.yaml"
        write_kubeconfig(path, 0o600, f"https://127.0.0.1:{port}", pki)
        async with KubeClient.from_kubeconfig(path) as kube:
            node = await kube.get(NODES, "n1")
        assert node["metadata"]["name"] == "n1"
        assert users == ["system:admin"]
        # The same over the standard library, as the agent registers.
        creds = read_kubeconfig(path, None)
        light = KubeClient(creds.server_url, ssl_context=creds.ssl_context, light_start=True)
        async with light:
            await light.get(NODES, "n1")
            await light.get(NODES, "n1")
        assert users == ["system:admin"] * 3
        assert peers[1] == peers[2]  # one keep-alive connection
        # The server's certificate is checked against the kubeconfig's CA, not trusted blindly.
        for light_start in (False, True):
            untrusting = KubeClient(
                f"https://127.0.0.1:{port}",
                ssl_context=ssl.create_default_context(),
                light_start=light_start,
            )
            async with untrusting:
                with pytest.raises(Unreachable):
                    await untrusting.get(NODES, "n1")
    finally:
        await runner.cleanup()


def test_every_served_kind_has_a_path() -> None:
    info = by_kind("coordination.k8s.io/v1", "Lease")
    assert info is not None
    assert (
        resource_path(info, "kube-node-lease", "n1")
        == "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
    )

"""The server's own control plane reaches the API in process: same checks, same watches, copies."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from k3py.cluster.api.resources import by_kind
from k3py.cluster.api.status import ApiError
from k3py.cluster.server.app import create_app
from k3py.cluster.server.rest.context import REST
from k3py.cluster.server.rest.inprocess import InProcessApi
from k3py.cluster.server.settings import ServerSettings
from k3py.cluster.server.store import SQLiteDatastore
from tests.server.conftest import ADMIN, Api, TokenAuthenticator, serving

_PODS = by_kind("v1", "Pod")
assert _PODS is not None
PODS = _PODS


def pod(name: str = "", generate: str = "") -> dict[str, Any]:
    meta = {"name": name} if name else {"generateName": generate}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
    }


async def test_writes_get_defaults_validation_and_are_served_over_http(api: Api) -> None:
    client = InProcessApi(api.app[REST])
    sent = pod(generate="web-")
    created = await client.create(PODS, sent, "default")
    assert sent["metadata"] == {"generateName": "web-"}  # the caller's object is its own
    name = created["metadata"]["name"]
    assert name.startswith("web-")
    assert created["spec"]["restartPolicy"] == "Always"
    reply = await api.get(f"/api/v1/namespaces/default/pods/{name}")
    assert reply.status == 200
    assert reply.body["metadata"]["uid"] == created["metadata"]["uid"]

    with pytest.raises(ApiError) as invalid:
        await client.create(PODS, {**pod("bad"), "spec": {"containers": []}}, "default")
    assert invalid.value.code == 422
    with pytest.raises(ApiError) as missing:
        await client.create(PODS, pod("p"), "no-such-namespace")
    assert missing.value.code == 404
    stale = {**created, "metadata": {**created["metadata"], "resourceVersion": "1"}}
    with pytest.raises(ApiError) as conflict:
        await client.update(PODS, stale)
    assert conflict.value.code == 409

    patched = await client.patch(PODS, name, {"metadata": {"labels": {"a": "b"}}}, "default")
    assert patched["metadata"]["labels"] == {"a": "b"}
    await client.create(PODS, {"target": {"name": "n1"}, "metadata": {"name": name}},
                        "default", subresource="binding")  # fmt: skip
    assert (await client.get(PODS, name, "default"))["spec"]["nodeName"] == "n1"
    with pytest.raises(ApiError) as bound:
        await client.create(PODS, {"target": {"name": "n2"}, "metadata": {"name": name}},
                            "default", subresource="binding")  # fmt: skip
    assert bound.value.code == 409
    items, _ = await client.list(PODS, "default", label_selector="a=b")
    assert [i["metadata"]["name"] for i in items] == [name]

    terminating = await client.delete(PODS, name, "default")
    assert terminating is not None
    assert terminating["metadata"]["deletionTimestamp"]
    gone = await client.delete(PODS, name, "default", grace_period_seconds=0)
    assert gone is not None
    assert gone["metadata"]["name"] == name
    assert (await api.get(f"/api/v1/namespaces/default/pods/{name}")).status == 404


async def test_watchers_get_their_own_copies_of_each_change(api: Api) -> None:
    client = InProcessApi(api.app[REST])
    _, version = await client.list(PODS, "default")
    streams = [
        client.watch(PODS, "default", resource_version=version, timeout_seconds=5),
        client.watch(PODS, "default", resource_version=version, field_selector="metadata.name=w"),
    ]
    assert (await api.post("/api/v1/namespaces/default/pods", pod("w"))).status == 201
    first = await asyncio.wait_for(anext(streams[0]), 5)
    first[1]["metadata"]["name"] = "changed by a controller"
    second = await asyncio.wait_for(anext(streams[1]), 5)
    assert first[0] == second[0] == "ADDED"
    assert second[1]["metadata"]["name"] == "w"
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]

    with pytest.raises(ApiError) as future:
        await client.list(PODS, "default", resource_version=str(10**9))
    assert future.value.code == 504


async def test_bindings_made_together_share_a_transaction_and_fail_alone(
    settings: ServerSettings, tmp_path: Path
) -> None:
    """The scheduler's binds of one turn reach SQLite as one transaction; each pod still gets
    its own checks, its own 409/404 and its own MODIFIED event."""
    store = SQLiteDatastore(tmp_path / "state.db")
    app = create_app(settings, store, TokenAuthenticator({"admin": ADMIN}))
    async with serving(app) as api:
        client = InProcessApi(api.app[REST])
        for name in ("a", "b", "c", "d"):
            await client.create(PODS, pod(name), "default")
        binding = {"target": {"name": "n0"}, "metadata": {"name": "b"}}
        await client.create(PODS, binding, "default", subresource="binding")
        _, version = await client.list(PODS, "default")
        events = client.watch(PODS, "default", resource_version=version, timeout_seconds=5)
        before = store.stats
        results = await asyncio.gather(
            *(
                client.create(
                    PODS,
                    {"target": {"name": f"n-{name}"}, "metadata": {"name": name}},
                    "default",
                    subresource="binding",
                )
                for name in ("a", "b", "c", "missing", "d")
            ),
            return_exceptions=True,
        )
        codes = [
            r.code if isinstance(r, ApiError) else r["code"] if isinstance(r, dict) else r
            for r in results
        ]
        assert codes == [201, 409, 201, 404, 201]
        after = store.stats
        assert (after.writes - before.writes, after.transactions - before.transactions) == (3, 1)
        seen = [await asyncio.wait_for(anext(events), 5) for _ in range(3)]
        assert [kind for kind, _ in seen] == ["MODIFIED"] * 3
        placed = {o["metadata"]["name"]: o["spec"]["nodeName"] for _, o in seen}
        assert placed == {"a": "n-a", "c": "n-c", "d": "n-d"}
        assert len({o["metadata"]["resourceVersion"] for _, o in seen}) == 3
        await events.aclose()  # type: ignore[attr-defined]

"""Get and list: selectors, pagination, resourceVersion semantics and Table responses."""

from __future__ import annotations

import pytest

from k3py.cluster.server.store import MemoryDatastore, Retention
from tests.server.conftest import Api
from tests.server.test_crud import CM, configmap

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


@pytest.fixture
def datastore() -> MemoryDatastore:
    """A datastore whose compaction keeps only the latest revision, on demand."""
    return MemoryDatastore(retention=Retention(min_revisions=1, min_age_seconds=0.0))


async def _seed(api: Api, count: int) -> None:
    for i in range(count):
        body = configmap(f"cm-{i}")
        body["metadata"]["labels"] = {"parity": "even" if i % 2 == 0 else "odd", "n": str(i)}
        assert (await api.post(CM, body)).status == 201


async def test_label_and_field_selectors(api: Api) -> None:
    await _seed(api, 6)
    even = await api.get(f"{CM}?labelSelector=parity%3Deven")
    assert [i["metadata"]["name"] for i in even.body["items"]] == ["cm-0", "cm-2", "cm-4"]
    in_set = await api.get(f"{CM}?labelSelector=n+in+(1,5),parity!%3Deven")
    assert [i["metadata"]["name"] for i in in_set.body["items"]] == ["cm-1", "cm-5"]
    by_name = await api.get(f"{CM}?fieldSelector=metadata.name%3Dcm-3")
    assert [i["metadata"]["name"] for i in by_name.body["items"]] == ["cm-3"]
    everywhere = await api.get("/api/v1/configmaps?fieldSelector=metadata.namespace%3Ddefault")
    assert len(everywhere.body["items"]) == 6
    assert (await api.get(f"{CM}?labelSelector=a%3D%3D%3D")).status == 400
    assert (await api.get(f"{CM}?fieldSelector=spec.nothing%3Dx")).status == 400


async def test_pages_join_up_at_one_revision(api: Api) -> None:
    await _seed(api, 5)
    first = await api.get(f"{CM}?limit=2")
    assert [i["metadata"]["name"] for i in first.body["items"]] == ["cm-0", "cm-1"]
    token = first.body["metadata"]["continue"]
    revision = first.body["metadata"]["resourceVersion"]
    await api.post(CM, configmap("cm-10"))  # after the first page: not in this list
    second = await api.get(f"{CM}?limit=2&continue={token}")
    assert [i["metadata"]["name"] for i in second.body["items"]] == ["cm-2", "cm-3"]
    assert second.body["metadata"]["resourceVersion"] == revision
    third = await api.get(f"{CM}?limit=2&continue={second.body['metadata']['continue']}")
    assert [i["metadata"]["name"] for i in third.body["items"]] == ["cm-4"]
    assert "continue" not in third.body["metadata"]
    filtered = await api.get(f"{CM}?limit=1&labelSelector=parity%3Dodd")
    assert [i["metadata"]["name"] for i in filtered.body["items"]] == ["cm-1"]
    assert (await api.get(f"{CM}?continue=garbage")).status == 400


async def test_exact_resource_version_lists_the_past(api: Api) -> None:
    created = await api.post(CM, configmap("old", v="1"))
    revision = created.body["metadata"]["resourceVersion"]
    await api.patch(f"{CM}/old", {"data": {"v": "2"}})
    past = await api.get(f"{CM}?resourceVersion={revision}&resourceVersionMatch=Exact")
    assert past.body["items"][0]["data"] == {"v": "1"}
    latest = await api.get(f"{CM}?resourceVersion={revision}&resourceVersionMatch=NotOlderThan")
    assert latest.body["items"][0]["data"] == {"v": "2"}
    future = await api.get(f"{CM}?resourceVersion=999999")
    assert future.status == 504
    assert (await api.get(f"{CM}?resourceVersionMatch=Exact")).status == 400


async def test_compacted_continue_token_is_gone(api: Api, datastore: MemoryDatastore) -> None:
    await _seed(api, 3)
    first = await api.get(f"{CM}?limit=1")
    token = first.body["metadata"]["continue"]
    for i in range(3):
        await api.patch(f"{CM}/cm-2", {"data": {"i": str(i)}})
    assert await datastore.compact() > int(first.body["metadata"]["resourceVersion"])
    reply = await api.get(f"{CM}?limit=1&continue={token}")
    assert (reply.status, reply.body["reason"]) == (410, "Expired")


async def test_tables_for_kubectl_get(api: Api) -> None:
    await _seed(api, 2)
    listed = await api.get(CM, accept=TABLE)
    assert listed.body["kind"] == "Table"
    columns = [c["name"] for c in listed.body["columnDefinitions"]]
    assert columns[:2] == ["Name", "Data"]
    assert [r["cells"][0] for r in listed.body["rows"]] == ["cm-0", "cm-1"]
    assert listed.body["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert listed.body["metadata"]["resourceVersion"]
    one = await api.get(f"{CM}/cm-1?includeObject=Object", accept=TABLE)
    assert one.body["rows"][0]["object"]["data"] == {}
    partial = await api.get(
        CM, accept="application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
    )
    assert partial.body["kind"] == "PartialObjectMetadataList"


async def test_accept_negotiation(api: Api) -> None:
    fallback = await api.get(CM, accept="application/vnd.kubernetes.protobuf, application/json")
    assert (fallback.status, fallback.body["kind"]) == (200, "ConfigMapList")
    refused = await api.get(CM, accept="application/vnd.kubernetes.protobuf")
    assert (refused.status, refused.body["reason"]) == (406, "NotAcceptable")

"""Watch: event order, start revisions, selectors on both sides of a change, bookmarks, 410."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import ClientResponse

from k3py.cluster.server.store import MemoryDatastore, Retention
from tests.server.conftest import Api
from tests.server.test_crud import CM, configmap


@pytest.fixture
def datastore() -> MemoryDatastore:
    return MemoryDatastore(retention=Retention(min_revisions=1, min_age_seconds=0.0))


class Stream:
    def __init__(self, response: ClientResponse) -> None:
        self.response = response

    async def next(self, within: float = 5.0) -> dict[str, Any]:
        line = await asyncio.wait_for(self.response.content.readline(), within)
        assert line, "the watch ended"
        event: dict[str, Any] = json.loads(line)
        return event

    async def events(self, count: int) -> list[tuple[str, str]]:
        found = []
        for _ in range(count):
            event = await self.next()
            found.append((event["type"], event["object"]["metadata"].get("name", "")))
        return found


@asynccontextmanager
async def watching(api: Api, query: str, accept: str | None = None) -> AsyncIterator[Stream]:
    headers = {"Authorization": "Bearer admin"}
    if accept:
        headers["Accept"] = accept
    async with api.client.get(f"{CM}?watch=1&{query}", headers=headers) as response:
        assert response.status == 200
        yield Stream(response)


async def test_changes_arrive_in_order_from_a_resource_version(api: Api) -> None:
    existing = await api.post(CM, configmap("before"))
    revision = existing.body["metadata"]["resourceVersion"]
    async with watching(api, f"resourceVersion={revision}") as stream:
        await api.post(CM, configmap("w"))
        await api.patch(f"{CM}/w", {"data": {"a": "1"}})
        await api.delete(f"{CM}/w")
        events = await stream.events(3)
    assert events == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


async def test_watch_from_a_past_revision_replays(api: Api) -> None:
    created = await api.post(CM, configmap("replayed"))
    revision = int(created.body["metadata"]["resourceVersion"])
    await api.patch(f"{CM}/replayed", {"data": {"x": "1"}})
    async with watching(api, f"resourceVersion={revision - 1}") as stream:
        assert await stream.events(2) == [("ADDED", "replayed"), ("MODIFIED", "replayed")]


async def test_watch_without_a_revision_starts_with_the_current_state(api: Api) -> None:
    await api.post(CM, configmap("a"))
    await api.post(CM, configmap("b"))
    async with watching(api, "resourceVersion=0") as stream:
        assert await stream.events(2) == [("ADDED", "a"), ("ADDED", "b")]
        await api.patch(f"{CM}/a", {"data": {"k": "v"}})
        event = await stream.next()
    assert (event["type"], event["object"]["data"]) == ("MODIFIED", {"k": "v"})


async def test_selectors_apply_to_both_sides_of_a_change(api: Api) -> None:
    body = configmap("moving")
    body["metadata"]["labels"] = {"team": "a"}
    revision = (await api.post(CM, body)).body["metadata"]["resourceVersion"]
    async with watching(api, f"resourceVersion={revision}&labelSelector=team%3Da") as stream:
        await api.patch(f"{CM}/moving", {"metadata": {"labels": {"team": "b"}}})
        await api.patch(f"{CM}/moving", {"metadata": {"labels": {"other": "x"}}})
        await api.patch(f"{CM}/moving", {"metadata": {"labels": {"team": "a"}}})
        assert await stream.events(2) == [("DELETED", "moving"), ("ADDED", "moving")]


async def test_bookmarks_carry_the_latest_revision(api: Api) -> None:
    revision = (await api.post(CM, configmap("bm"))).body["metadata"]["resourceVersion"]
    async with watching(api, f"resourceVersion={revision}&allowWatchBookmarks=true") as stream:
        event = await stream.next()
    assert event["type"] == "BOOKMARK"
    assert event["object"]["metadata"]["resourceVersion"] == revision
    assert event["object"]["kind"] == "ConfigMap"


async def test_send_initial_events_ends_with_a_marked_bookmark(api: Api) -> None:
    await api.post(CM, configmap("init"))
    query = (
        "sendInitialEvents=true&allowWatchBookmarks=true"
        "&resourceVersionMatch=NotOlderThan&resourceVersion="
    )
    async with watching(api, query) as stream:
        added = await stream.next()
        bookmark = await stream.next()
    assert (added["type"], added["object"]["metadata"]["name"]) == ("ADDED", "init")
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_a_compacted_start_revision_ends_with_410(
    api: Api, datastore: MemoryDatastore
) -> None:
    first = await api.post(CM, configmap("old"))
    for i in range(3):
        await api.patch(f"{CM}/old", {"data": {"i": str(i)}})
    await datastore.compact()
    async with watching(
        api, f"resourceVersion={first.body['metadata']['resourceVersion']}"
    ) as stream:
        event = await stream.next()
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


async def test_timeout_seconds_ends_the_stream(api: Api) -> None:
    async with watching(api, "resourceVersion=1&timeoutSeconds=1") as stream:
        line = await asyncio.wait_for(stream.response.content.readline(), 5)
    assert line == b""


async def test_table_watch_for_kubectl_get_w(api: Api) -> None:
    revision = (await api.post(CM, configmap("t"))).body["metadata"]["resourceVersion"]
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io"
    async with watching(api, f"resourceVersion={revision}", accept) as stream:
        await api.patch(f"{CM}/t", {"data": {"a": "b"}})
        event = await stream.next()
    assert event["type"] == "MODIFIED"
    assert event["object"]["kind"] == "Table"
    assert event["object"]["rows"][0]["cells"][:2] == ["t", 1]

"""Creates check their namespace through the followed names, and still refuse at once.

The namespace check of a create is answered from memory once the names are followed; these
tests make sure the answers stay those of the stored Namespace: a namespace being deleted or
gone refuses a create that comes right after the delete was acknowledged, on the in-memory and
on the SQLite datastore (whose writes are acknowledged from its writer thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from k3py.cluster.server.app import create_app
from k3py.cluster.server.rest.context import REST
from k3py.cluster.server.settings import ServerSettings
from k3py.cluster.server.store import Datastore, MemoryDatastore, SQLiteDatastore
from tests.server.conftest import ADMIN, Api, TokenAuthenticator, serving
from tests.server.test_crud import configmap

NS = "/api/v1/namespaces"


@pytest.fixture(params=["memory", "sqlite"])
async def store_api(
    request: pytest.FixtureRequest, settings: ServerSettings, tmp_path: Path
) -> AsyncIterator[Api]:
    store: Datastore = (
        MemoryDatastore() if request.param == "memory" else SQLiteDatastore(tmp_path / "state.db")
    )
    async with serving(create_app(settings, store, TokenAuthenticator({"admin": ADMIN}))) as api:
        yield api


async def _followed(api: Api, namespace: str) -> None:
    """Until the server answers ``namespace``'s check from memory."""
    ctx = api.app[REST]
    for _ in range(100):
        if ctx.namespaces.active(ctx, namespace):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"namespace {namespace} was not followed")


async def test_create_right_after_namespace_delete_is_refused(store_api: Api) -> None:
    api = store_api
    assert (await api.post(NS, {"metadata": {"name": "shortlived"}})).status == 201
    await _followed(api, "shortlived")
    path = f"{NS}/shortlived/configmaps"
    held = configmap("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]  # keeps the namespace Terminating
    assert (await api.post(path, held)).status == 201
    deleting = await api.delete(f"{NS}/shortlived")
    assert deleting.status == 200, deleting.body
    refused = await api.post(path, configmap("after"))
    assert (refused.status, refused.body["reason"]) == (403, "Forbidden")
    assert refused.body["details"]["causes"][0]["reason"] == "NamespaceTerminating"


async def test_namespace_created_a_moment_ago_accepts_and_missing_one_refuses(
    store_api: Api,
) -> None:
    api = store_api
    assert (await api.post(NS, {"metadata": {"name": "first"}})).status == 201
    await _followed(api, "first")
    for name in ("second", "third"):
        assert (await api.post(NS, {"metadata": {"name": name}})).status == 201
        created = await api.post(f"{NS}/{name}/configmaps", configmap("at-once"))
        assert created.status == 201, created.body
    missing = await api.post(f"{NS}/nowhere/configmaps", configmap("lost"))
    assert (missing.status, missing.body["reason"]) == (404, "NotFound")

"""PATCH without a resourceVersion never reports a conflict to its caller: the server patches
the newer object until the request's deadline, as kube-apiserver does."""

from __future__ import annotations

import asyncio
from pathlib import Path

from k3py.cluster.server.app import create_app
from k3py.cluster.server.store import open_datastore
from tests.server.conftest import ADMIN, TokenAuthenticator, serving, settings_for

CM = "/api/v1/namespaces/default/configmaps"
WRITERS = 16
PATCHES = 25


async def test_concurrent_patches_without_resource_version_all_succeed(tmp_path: Path) -> None:
    app = create_app(
        settings_for(tmp_path),
        open_datastore("", tmp_path),
        TokenAuthenticator({"admin": ADMIN}),
    )
    async with serving(app) as api:
        assert (await api.post(CM, {"metadata": {"name": "counter"}, "data": {}})).status == 201

        async def writer(number: int) -> list[int]:
            codes = []
            for step in range(PATCHES):
                body = {"data": {f"w{number}-{step}": "x"}}
                codes.append((await api.patch(f"{CM}/counter", body)).status)
            return codes

        results = await asyncio.gather(*(writer(n) for n in range(WRITERS)))
        codes = [code for result in results for code in result]
        assert codes.count(200) == WRITERS * PATCHES, sorted(set(codes))
        final = await api.get(f"{CM}/counter")
        assert len(final.body["data"]) == WRITERS * PATCHES  # no update lost


async def test_patch_with_a_stale_resource_version_still_conflicts(tmp_path: Path) -> None:
    app = create_app(
        settings_for(tmp_path),
        open_datastore("", tmp_path),
        TokenAuthenticator({"admin": ADMIN}),
    )
    async with serving(app) as api:
        created = await api.post(CM, {"metadata": {"name": "c"}, "data": {}})
        version = created.body["metadata"]["resourceVersion"]
        assert (await api.patch(f"{CM}/c", {"data": {"a": "1"}})).status == 200
        stale = {"metadata": {"resourceVersion": version}, "data": {"b": "2"}}
        reply = await api.patch(f"{CM}/c", stale)
        assert reply.status == 409
        assert reply.body["reason"] == "Conflict"

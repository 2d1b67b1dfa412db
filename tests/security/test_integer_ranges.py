"""Integers must fit their Go types (int32, int64), as kube-apiserver's decoder requires:
an out-of-range replica count is refused instead of stored (which broke kubectl's decoding
and let the ReplicaSet controller create pods without end)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from k3py.cluster.server.app import create_app
from k3py.cluster.server.store import MemoryDatastore
from tests.server.conftest import ADMIN, Api, TokenAuthenticator, serving, settings_for

NS = "/api/v1/namespaces/default"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"


def deployment(name: str, replicas: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }


def pod(name: str, grace: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "c", "image": "i"}],
        },
    }


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    app = create_app(settings_for(tmp_path), MemoryDatastore(), TokenAuthenticator({"a": ADMIN}))
    async with serving(app) as served:
        yield served


@pytest.mark.parametrize("replicas", [2**31, 2**63, 10**30, -(2**31) - 1, 1e30])
async def test_replicas_beyond_int32_are_refused(api: Api, replicas: Any) -> None:
    reply = await api.post(DEPLOY, deployment("d", replicas), token="a")
    assert reply.status == 400, reply.body
    assert "int32" in reply.body["message"]


async def test_int64_fields_take_int64_values_only(api: Api) -> None:
    refused = await api.post(f"{NS}/pods", pod("p", 2**70), token="a")
    assert refused.status == 400
    assert "int64" in refused.body["message"]
    assert (await api.post(f"{NS}/pods", pod("q", 2**40), token="a")).status == 201


async def test_largest_int32_is_stored_and_patches_are_checked_too(api: Api) -> None:
    created = await api.post(DEPLOY, deployment("d", 2**31 - 1), token="a")
    assert created.status == 201
    patched = await api.patch(f"{DEPLOY}/d", {"spec": {"replicas": 2**31}}, token="a")
    assert patched.status == 400
    scale = {"spec": {"replicas": 2**31}}
    assert (await api.patch(f"{DEPLOY}/d/scale", scale, token="a")).status == 422
    assert (await api.get(f"{DEPLOY}/d", token="a")).body["spec"]["replicas"] == 2**31 - 1

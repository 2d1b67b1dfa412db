"""Small bodies that ask for huge work: patch bombs are refused quickly, within the size and
time budget, and the event loop keeps answering ``/healthz`` meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from k3py.cluster.server.app import create_app
from k3py.cluster.server.store import MemoryDatastore
from tests.server.conftest import ADMIN, Api, TokenAuthenticator, serving, settings_for

CM = "/api/v1/namespaces/default/configmaps"
APPLY = "application/apply-patch+yaml"


def doubling_patch(copies: int = 25) -> list[dict[str, Any]]:
    """Each ``copy`` puts the whole list into itself: the value doubles every operation."""
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": "/metadata/annotations", "value": {}},
        {"op": "add", "path": "/metadata/annotations/x", "value": ["a" * 64]},
    ]
    ops += [
        {"op": "copy", "from": "/metadata/annotations/x", "path": "/metadata/annotations/x/-"}
        for _ in range(copies)
    ]
    return ops


def yaml_bomb(levels: int = 9) -> bytes:
    """Nested anchors: each level names the previous one nine times (9**levels scalars)."""
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata:", "  name: bomb", "  labels:"]
    lines.append('    l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]')
    for level in range(1, levels):
        lines.append(f"    l{level}: &l{level} [" + ",".join([f"*l{level - 1}"] * 9) + "]")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = settings_for(tmp_path, request_timeout_seconds=3.0)
    app = create_app(settings, MemoryDatastore(), TokenAuthenticator({"admin": ADMIN}))
    async with serving(app) as served:
        body = {"metadata": {"name": "target"}, "data": {"k": "v"}}
        assert (await served.post(CM, body)).status == 201
        yield served


async def test_doubling_json_patch_is_refused_at_the_size_limit(api: Api) -> None:
    started = time.monotonic()
    reply = await api.patch(f"{CM}/target", doubling_patch(), kind="json")
    assert reply.status == 413, reply.body
    assert reply.body["reason"] == "RequestEntityTooLarge"
    assert time.monotonic() - started < 5.0
    assert (await api.get(f"{CM}/target")).body["data"] == {"k": "v"}


async def test_yaml_alias_bomb_is_refused(api: Api) -> None:
    for method, path, content_type in (
        ("PATCH", f"{CM}/bomb?fieldManager=test", APPLY),
        ("POST", CM, "application/yaml"),
    ):
        reply = await api.call(method, path, data=yaml_bomb(), content_type=content_type)
        assert reply.status == 400, reply.body
        assert "excessive aliasing" in reply.body["message"]
    # Anchors used a few times, as people write YAML, still work.
    friendly = b"metadata:\n  name: friendly\n  labels: &l {a: b}\n  annotations: *l\n"
    reply = await api.call(
        "PATCH", f"{CM}/friendly?fieldManager=test", data=friendly, content_type=APPLY
    )
    assert reply.status == 201, reply.body
    assert reply.body["metadata"]["annotations"] == {"a": "b"}


async def test_costly_json_patch_ends_at_the_request_deadline(api: Api) -> None:
    many = {f"k{i}": "v" for i in range(20_000)}
    assert (await api.patch(f"{CM}/target", {"data": many})).status == 200
    # Each copy replaces the same key: the result stays small, but every operation costs.
    ops = [{"op": "copy", "from": "/data", "path": "/metadata/annotations"}] * 9_000
    started = time.monotonic()
    reply = await api.patch(f"{CM}/target", ops, kind="json")
    elapsed = time.monotonic() - started
    assert reply.status in (422, 504), reply.body  # annotations must be strings: 422 if done
    assert elapsed < 10.0


async def test_healthz_answers_while_a_bomb_is_refused(api: Api) -> None:
    async def bombs() -> None:
        for _ in range(3):
            await api.patch(f"{CM}/target", doubling_patch(), kind="json")
            await api.call("POST", CM, data=yaml_bomb(), content_type="application/yaml")

    task = asyncio.create_task(bombs())
    latencies: list[float] = []
    while not task.done():
        started = time.monotonic()
        reply = await api.call("GET", "/healthz", token=None)
        latencies.append(time.monotonic() - started)
        assert reply.status == 200
        await asyncio.sleep(0.01)
    await task
    # The goal is 100 ms (measured by bench/security.py); a loaded CI machine gets slack.
    assert max(latencies) < 1.0, latencies

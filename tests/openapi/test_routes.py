"""The /openapi/v2 and /openapi/v3 endpoints: negotiation, caching headers, hashes."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from k3py.cluster.server.openapi import add_routes, v2_document, v3_document, v3_index
from k3py.cluster.server.openapi.routes import accepts_json

PROTOBUF_V2 = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    add_routes(app)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_v3_index_and_hashed_document_are_cacheable(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/openapi/v3", headers={"Accept": "application/json"})
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-cache, private"
    index = await response.json()
    assert index == v3_index()
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]

    response = await client.get(url, headers={"Accept": "application/json"})
    assert response.status == 200
    assert response.headers["Cache-Control"] == "public, immutable"
    assert "Expires" in response.headers
    body = await response.read()
    digest = hashlib.sha512(body).hexdigest().upper()
    assert url.endswith(f"?hash={digest}")
    assert response.headers["ETag"] == f'"{digest}"'
    assert json.loads(body)["openapi"].startswith("3.")

    again = await client.get(url, headers={"If-None-Match": f'"{digest}"'})
    assert again.status == 304


async def test_unhashed_document_is_not_cached_and_stale_hash_redirects(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/openapi/v3/api/v1")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-cache, private"
    assert await response.read() == v3_document("api/v1")

    stale = await client.get("/openapi/v3/api/v1?hash=0123", allow_redirects=False)
    assert stale.status == 301
    assert stale.headers["Location"] == v3_index()["paths"]["api/v1"]["serverRelativeURL"]


async def test_unknown_group_version_is_a_404_status(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/openapi/v3/apis/extensions/v1beta1")
    assert response.status == 404
    status = await response.json()
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "NotFound", 404)


async def test_v2_is_served_as_json_and_as_protobuf(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/openapi/v2", headers={"Accept": "application/json"})
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.read() == v2_document()
    digest = hashlib.sha512(v2_document()).hexdigest().upper()
    assert response.headers["ETag"] == f'"{digest}"'

    # kubectl asks for gnostic's openapi.v2.Document; kube-openapi answers with this type.
    binary = await client.get("/openapi/v2", headers={"Accept": PROTOBUF_V2})
    assert binary.status == 200
    assert binary.content_type == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    body = await binary.read()
    assert body.startswith(b"\x0a\x032.0")  # field 1, swagger: "2.0"
    assert b"io.k8s.api.core.v1.Pod" in body

    refused = await client.get("/openapi/v2", headers={"Accept": "application/yaml"})
    assert refused.status == 406
    status = await refused.json()
    assert (status["kind"], status["reason"]) == ("Status", "NotAcceptable")


async def test_compressed_bodies_go_out_as_stored(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get(
        "/openapi/v3/apis/batch/v1", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert response.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await response.read()) == v3_document("apis/batch/v1")


@pytest.mark.parametrize(
    ("accept", "ok"),
    [
        ("", True),
        ("application/json", True),
        ("application/json;charset=utf-8, text/plain", True),
        ("*/*", True),
        (PROTOBUF_V2, False),
        ("application/yaml", False),
    ],
)
def test_accept_negotiation(accept: str, ok: bool) -> None:
    assert accepts_json(accept) is ok

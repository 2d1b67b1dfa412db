"""Fixtures for the API server's tests.

Unit tests drive the real application in process (aiohttp's test server on loopback, the
in-memory datastore, a token authenticator fake). Integration tests start ``k3py server`` as a
subprocess (see :mod:`tests.server.process`) and drive it with the real kubectl and the
kubernetes Python client.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from k3py.cluster.server.app import create_app
from k3py.cluster.server.auth import UserInfo
from k3py.cluster.server.settings import ServerSettings
from k3py.cluster.server.store import MemoryDatastore
from tests.server.process import ServerProcess

ADMIN = UserInfo("system:admin", ("system:masters", "system:authenticated"))
NODE1 = UserInfo("system:node:node1", ("system:nodes", "system:authenticated"))
NOBODY = UserInfo("jane", ("system:authenticated",))


class TokenAuthenticator:
    """Bearer tokens mapped to users: the authenticator fake for in-process tests."""

    def __init__(self, users: dict[str, UserInfo]) -> None:
        self.users = users

    def authenticate(self, request: web.Request) -> UserInfo | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return self.users.get(token) if scheme == "Bearer" else None

    def authenticate_token(self, token: str) -> UserInfo | None:
        return self.users.get(token)


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""


@dataclass
class Api:
    """A client of one in-process API server, as ``admin`` unless told otherwise."""

    client: TestClient[Any, Any]
    app: web.Application

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "admin",
        content_type: str = "application/json",
        data: bytes | None = None,
        accept: str | None = None,
    ) -> Reply:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if accept is not None:
            headers["Accept"] = accept
        payload = (
            data if data is not None else (json.dumps(body).encode() if body is not None else None)
        )
        # aiohttp warns about large raw bodies; a stream is what it wants.
        sent: Any = io.BytesIO(payload) if payload and len(payload) > 1 << 20 else payload
        async with self.client.request(method, path, data=sent, headers=headers) as response:
            text = await response.text()
            try:
                parsed = json.loads(text) if text else None
            except ValueError:
                parsed = None
            return Reply(response.status, parsed, dict(response.headers), text)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.call("POST", path, body, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.call("PUT", path, body, **kw)

    async def patch(self, path: str, body: Any, kind: str = "merge", **kw: Any) -> Reply:
        types = {
            "merge": "application/merge-patch+json",
            "json": "application/json-patch+json",
            "strategic": "application/strategic-merge-patch+json",
        }
        return await self.call("PATCH", path, body, content_type=types[kind], **kw)

    async def delete(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.call("DELETE", path, body, **kw)


def settings_for(tmp_path: Path, **overrides: Any) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path, watch_bookmark_interval=0.2, **overrides)


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    return settings_for(tmp_path)


@pytest.fixture
def datastore() -> MemoryDatastore:
    return MemoryDatastore()


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[Api]:
    """``app`` on a loopback port, with a client."""
    async with TestServer(app) as server:
        client: TestClient[Any, Any] = TestClient(server)
        async with client:
            yield Api(client, app)


@pytest.fixture
async def api(settings: ServerSettings, datastore: MemoryDatastore) -> AsyncIterator[Api]:
    users = {"admin": ADMIN, "node1": NODE1, "jane": NOBODY}
    async with serving(create_app(settings, datastore, TokenAuthenticator(users))) as api:
        yield api


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One ``k3py server`` subprocess shared by the integration tests that only add objects."""
    server = ServerProcess(tmp_path_factory.mktemp("k3py-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()

"""Connections a client can open and hold: limits, idle clients, and Status answers to requests
aiohttp cannot parse (a URL over 8 KiB, a header over 16 KiB)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from k3py.cluster.server.app import create_app
from k3py.cluster.server.connections import ConnectionLimits, GatedSite
from k3py.cluster.server.store import MemoryDatastore
from tests.server.conftest import ADMIN, TokenAuthenticator, settings_for


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[GatedSite]:
    app = create_app(settings_for(tmp_path), MemoryDatastore(), TokenAuthenticator({"a": ADMIN}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    limits = ConnectionLimits(max_total=4, max_per_client=2, first_request_seconds=0.5)
    gated = GatedSite(runner, "127.0.0.1", 0, limits=limits)
    await gated.start()
    try:
        yield gated
    finally:
        await runner.cleanup()


def _port(site: GatedSite) -> int:
    server = site._server
    assert isinstance(server, asyncio.Server)
    return int(server.sockets[0].getsockname()[1])


async def _exchange(port: int, request: bytes) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    code = int(head.split(b" ", 2)[1])
    assert b"application/json" in head
    return code, json.loads(body)


async def test_long_url_and_header_get_a_status(site: GatedSite) -> None:
    port = _port(site)
    url = "/api/v1/namespaces?x=" + "a" * 10_000
    code, body = await _exchange(port, f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert code == 414
    assert body["kind"] == "Status"
    header = "X-Big: " + "b" * 20_000
    request = f"GET /healthz HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode()
    code, body = await _exchange(port, request)
    assert code == 431
    assert body["kind"] == "Status"
    code, body = await _exchange(port, b"NOT HTTP AT ALL\r\n\r\n")
    assert code == 400
    assert body["kind"] == "Status"


async def test_idle_connections_are_closed_and_the_total_is_limited(site: GatedSite) -> None:
    port = _port(site)
    loop = asyncio.get_running_loop()
    idle = []
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        idle.append(sock)
    await asyncio.sleep(0.1)
    assert site.limits.total == 4
    extra = socket.create_connection(("127.0.0.1", port))
    extra.setblocking(False)
    assert await asyncio.wait_for(loop.sock_recv(extra, 1), 2) == b""  # refused: closed
    extra.close()
    # None of the four sent a request: each is closed after the first-request timeout.
    for sock in idle:
        assert await asyncio.wait_for(loop.sock_recv(sock, 1), 3) == b""
        sock.close()
    await asyncio.sleep(0.1)
    assert site.limits.total == 0


def test_per_client_limit_spares_loopback() -> None:
    limits = ConnectionLimits(max_total=100, max_per_client=2)
    assert limits.admit("192.0.2.1") is None
    assert limits.admit("192.0.2.1") is None
    assert limits.admit("192.0.2.1") is not None
    assert limits.admit("192.0.2.2") is None
    for _ in range(5):
        assert limits.admit("127.0.0.1") is None

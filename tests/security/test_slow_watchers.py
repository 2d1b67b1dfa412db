"""A watch whose client never reads cannot make the server buffer without bound: its queue is
cut off by bytes as well as events (a 410 for the client), and a write that stays blocked
closes the connection."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from aiohttp import web

from k3py.cluster.server.app import create_app
from k3py.cluster.server.rest.objects import SharedDecodes
from k3py.cluster.server.store import Event, KeyValue, MemoryDatastore, WatchExpired
from k3py.cluster.server.store.watch import WatchHub
from tests.server.conftest import ADMIN, Api, TokenAuthenticator, serving, settings_for

CM = "/api/v1/namespaces/default/configmaps"
HALF_MIB = 512 * 1024


def _event(revision: int, size: int) -> Event:
    kv = KeyValue(f"/registry/configmaps/default/c{revision}", b"x" * size, revision, revision)
    return Event("create", kv, None)


async def _no_replay(prefix: str, after: int, upto: int, limit: int) -> list[Event]:
    return []


async def test_hub_cuts_off_a_watcher_by_bytes() -> None:
    hub = WatchHub(_no_replay)
    watcher = hub.watch("/registry/configmaps/", 0)
    for revision in range(1, 200):
        hub.publish([_event(revision, HALF_MIB)])
        if hub.watcher_count == 0:
            break
    assert hub.watcher_count == 0
    assert revision <= 70  # 32 MiB of 512 KiB values, far below the 10,000-event limit
    with pytest.raises(WatchExpired, match="MiB behind"):
        await anext(watcher)


def test_shared_decodes_are_bounded_by_bytes() -> None:
    shared = SharedDecodes(max_bytes=4 * 1024 * 1024)
    value = json.dumps({"metadata": {"name": "c"}, "data": {"k": "x" * HALF_MIB}}).encode()
    for revision in range(1, 100):
        shared.object(KeyValue("/registry/configmaps/default/c", value, 1, revision))
    assert shared._object_bytes <= 4 * 1024 * 1024


async def test_a_watch_that_never_reads_is_closed(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, watch_write_timeout_seconds=1.0)
    datastore = MemoryDatastore()
    app = create_app(settings, datastore, TokenAuthenticator({"admin": ADMIN}))
    async with serving(app) as api:
        await _fill_behind_a_silent_watcher(api, app)


async def _fill_behind_a_silent_watcher(api: Api, app: web.Application) -> None:
    port = api.client.port
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {CM}?watch=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin\r\n\r\n".encode()
    )
    await asyncio.sleep(0.2)
    body = {"metadata": {"name": "big"}, "data": {"k": "x" * HALF_MIB}}
    assert (await api.post(CM, body)).status == 201
    for step in range(80):
        body["data"] = {"k": str(step) * HALF_MIB}
        assert (await api.put(f"{CM}/big", body)).status == 200
    # The silent client is disconnected: reading now ends in EOF (or a reset), not a hang.
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    received = 0
    async with asyncio.timeout(10):
        while True:
            try:
                chunk = await loop.sock_recv(sock, 1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += len(chunk)
    sock.close()
    assert received < 80 * HALF_MIB

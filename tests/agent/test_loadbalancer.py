"""The agent's load balancer: bytes pass through, a dead server is skipped, the list is kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from k3py.cluster.agent.loadbalancer import ServerLoadBalancer, endpoints_addresses


class Upstream:
    """A loopback server that answers every line with its own name and the line."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        while line := await reader.readline():
            writer.write(self.name.encode() + b":" + line)
            await writer.drain()
        writer.close()

    async def die(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[Upstream, Upstream]]:
    first, second = Upstream("one"), Upstream("two")
    await first.start()
    await second.start()
    yield first, second
    for upstream in (first, second):
        if upstream.server is not None and upstream.server.is_serving():
            await upstream.die()


async def _ask(balancer: ServerLoadBalancer, line: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", balancer.port)
    try:
        writer.write(line + b"\n")
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


async def test_connections_move_to_a_live_server_when_theirs_dies(
    upstreams: tuple[Upstream, Upstream], tmp_path: Path
) -> None:
    first, second = upstreams
    balancer = ServerLoadBalancer(f"https://{first.address}", tmp_path / "servers.json")
    await balancer.start()
    try:
        balancer.set_servers([first.address, second.address])
        assert await _ask(balancer, b"hello") == b"one:hello\n"
        # A long-lived connection (a watch, the tunnel) ends when its server dies...
        reader, writer = await asyncio.open_connection("127.0.0.1", balancer.port)
        writer.write(b"watch\n")
        assert await reader.readline() == b"one:watch\n"
        await first.die()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        # ...and the next one reaches the live server, which stays the choice.
        assert await _ask(balancer, b"again") == b"two:again\n"
        assert await _ask(balancer, b"still") == b"two:still\n"
        assert balancer.current == second.address
        assert balancer.switches == 1
    finally:
        await balancer.stop()
    # A restarted agent knows every server even if --server is gone.
    restarted = ServerLoadBalancer(f"https://{first.address}", tmp_path / "servers.json")
    await restarted.start()
    try:
        assert restarted.servers == [first.address, second.address]
        assert await _ask(restarted, b"back") == b"two:back\n"
    finally:
        await restarted.stop()


async def test_a_server_that_stops_answering_loses_its_connections(
    upstreams: tuple[Upstream, Upstream],
) -> None:
    first, second = upstreams
    balancer = ServerLoadBalancer(f"https://{first.address}")
    await balancer.start()
    try:
        balancer.set_servers([first.address, second.address])
        reader, writer = await asyncio.open_connection("127.0.0.1", balancer.port)
        writer.write(b"watch\n")
        assert await reader.readline() == b"one:watch\n"
        assert await balancer.check_current()
        # The server no longer accepts connections, but its old ones stay silently open (as
        # after a power cut): the health check ends them so that the agent reconnects.
        assert first.server is not None
        first.server.close()
        assert not await balancer.check_current()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert await _ask(balancer, b"moved") == b"two:moved\n"
    finally:
        await balancer.stop()


def test_servers_come_from_the_kubernetes_endpoints() -> None:
    endpoints = {
        "subsets": [
            {"addresses": [{"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}], "ports": [{"port": 6443}]},
            {"addresses": [{"ip": "2001:db8::1"}], "ports": [{"port": 7443}]},
        ]
    }
    assert endpoints_addresses(endpoints) == [
        "192.0.2.1:6443",
        "192.0.2.2:6443",
        "[2001:db8::1]:7443",
    ]
    assert endpoints_addresses({}) == []

"""The agent's client-side load balancer: a loopback TCP proxy to a live API server, as K3s's.

Every connection the agent makes to the API (its client, its watches, its tunnel) goes to
``https://127.0.0.1:<port>`` of this proxy, which passes the bytes (TLS included, untouched) to
one server. It stays with the server that answered last and, when a dial fails, tries the
others, so when a server dies the agent's next connection reaches a live one within a dial
timeout, and nothing else in the agent changes (every server's certificate names 127.0.0.1 and
comes from the one cluster CA). The servers are learned from the ``default/kubernetes``
Endpoints (refreshed every few seconds) and kept on disk, so a restarted agent finds them even
if the ``--server`` it was first given is gone; ``--server`` stays in the list as a fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from k3py.cluster.api.resources import ResourceInfo, by_kind
from k3py.cluster.client import KubeClient
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.agent.loadbalancer")

DIAL_TIMEOUT = 2.0
REFRESH_PERIOD = 5.0
HEALTH_PERIOD = 2.0
FAILED_BACKOFF = 5.0
# A TLS record is at most 16 KiB: reading that much at a time keeps each pipe's buffers small
# (the agent's memory budget is tight) without splitting records further.
_CHUNK = 16 * 1024
_BUFFER = 2 * _CHUNK


def address_of(url: str) -> str:
    """``host:port`` of an https URL (IPv6 hosts in brackets)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port or 443}"


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def endpoints_addresses(endpoints: dict[str, Any]) -> list[str]:
    """``host:port`` of every address in an Endpoints object's subsets."""
    found = []
    for subset in endpoints.get("subsets") or []:
        ports = [p.get("port") for p in subset.get("ports") or [] if p.get("port")]
        for address in subset.get("addresses") or []:
            ip = str(address.get("ip", ""))
            for port in ports:
                found.append(f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
    return found


class ServerLoadBalancer:
    """Listens on a loopback port (bound at construction) and proxies to a live server."""

    def __init__(
        self,
        server_url: str,
        state_file: Path | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default = address_of(server_url)
        self.state_file = state_file
        self._clock = clock
        # The servers the Endpoints named last (saved across restarts); `servers` adds
        # --server, which may name one of them by another address.
        self.learned = self._saved()
        self.servers = list(dict.fromkeys([self.default, *self.learned]))
        self.current = self.default
        self._failed: dict[str, float] = {}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.url = f"https://127.0.0.1:{self.port}"
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._by_server: dict[str, set[asyncio.Task[None]]] = {}
        self.switches = 0

    def _saved(self) -> list[str]:
        if self.state_file is None:
            return []
        try:
            saved = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return []
        return [str(s) for s in saved] if isinstance(saved, list) else []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, sock=self._sock, limit=_BUFFER)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await cancel_and_wait(*self._pipes, log=logger)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def set_servers(self, learned: list[str]) -> None:
        """The servers the Endpoints list, plus ``--server``; saved for the next start."""
        servers = list(dict.fromkeys([*learned, self.default]))
        if servers == self.servers and learned == self.learned:
            return
        self.learned = list(learned)
        logger.info("API servers", extra={"fields": {"servers": ",".join(servers)}})
        self.servers = servers
        if self.state_file is not None:
            with contextlib.suppress(OSError):
                self.state_file.write_text(json.dumps(learned))

    def _candidates(self) -> list[str]:
        now = self._clock()
        ordered = [self.current] + [s for s in self.servers if s != self.current]
        fresh = [s for s in ordered if now - self._failed.get(s, -1e9) > FAILED_BACKOFF]
        # When every server failed lately, try them all again rather than none.
        return fresh + [s for s in ordered if s not in fresh]

    async def _dial(self) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter] | None:
        for address in self._candidates():
            host, port = _split(address)
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, limit=_BUFFER), DIAL_TIMEOUT
                )
            except (OSError, TimeoutError) as error:
                self._failed[address] = self._clock()
                logger.debug(
                    "API server unreachable",
                    extra={"fields": {"server": address, "error": str(error)}},
                )
                continue
            self._failed.pop(address, None)
            if address != self.current:
                logger.info(
                    "switched API server", extra={"fields": {"from": self.current, "to": address}}
                )
                self.current = address
                self.switches += 1
            _keepalive(writer)
            return address, reader, writer
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        address = ""
        try:
            upstream = await self._dial()
            if upstream is None:
                return
            address, up_reader, up_writer = upstream
            self._by_server.setdefault(address, set()).add(task)
            try:
                await _pipe_both(reader, writer, up_reader, up_writer)
            finally:
                up_writer.close()
        except asyncio.CancelledError:
            # Only this balancer cancels a pipe (a silent server, or stop); asyncio's server
            # callback would report a cancelled connection task as an error.
            pass
        finally:
            writer.close()
            self._pipes.discard(task)
            self._by_server.get(address, set()).discard(task)

    async def check_current(self) -> bool:
        """Dial the current server; if it does not answer, end every connection through it.

        A server that dies without closing its connections (power lost, network cut) would
        otherwise hold the agent's watches and tunnel until TCP gives up; ending them makes the
        agent reconnect, through the next live server, at once.
        """
        address = self.current
        host, port = _split(address)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), DIAL_TIMEOUT)
        except (OSError, TimeoutError):
            self._failed[address] = self._clock()
            stale = self._by_server.pop(address, set())
            if stale:
                logger.info(
                    "API server stopped answering; reconnecting elsewhere",
                    extra={"fields": {"server": address, "connections": len(stale)}},
                )
            for task in stale:
                task.cancel()
            return False
        writer.close()
        return True

    async def _health(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEALTH_PERIOD)
            if not stop.is_set() and self._by_server.get(self.current):
                await self.check_current()

    async def refresh(self, client: KubeClient, stop: asyncio.Event) -> None:
        """Follow the ``kubernetes`` Endpoints until ``stop``; errors wait for the next round."""
        endpoints = by_kind("v1", "Endpoints")
        assert endpoints is not None
        health = asyncio.create_task(self._health(stop), name="agent-apiserver-health")
        try:
            await self._follow(client, endpoints, stop)
        finally:
            await cancel_and_wait(health, log=logger)

    async def _follow(
        self, client: KubeClient, endpoints: ResourceInfo, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            try:
                found = endpoints_addresses(await client.get(endpoints, "kubernetes", "default"))
            except Exception as error:  # the API is away: keep the list we have
                logger.debug("cannot read the API servers", extra={"fields": {"error": str(error)}})
            else:
                if found:
                    self.set_servers(found)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_PERIOD)


def _keepalive(writer: asyncio.StreamWriter) -> None:
    """TCP keepalive on an upstream connection: a silent peer is noticed within ~15 s."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(_CHUNK):
        writer.write(data)
        await writer.drain()


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until either side ends; then both connections close."""
    tasks = [
        asyncio.create_task(_copy(reader, up_writer)),
        asyncio.create_task(_copy(up_reader, writer)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await task

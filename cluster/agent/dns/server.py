"""The node-local DNS listener: UDP and TCP on one address, cluster zone first, then forwarding.

A query the :class:`~k3py.cluster.agent.dns.zone.ClusterZone` owns is answered at once from the
agent's cache; any other goes through the :class:`~k3py.cluster.agent.dns.forward.Forwarder`.
Malformed packets are dropped (UDP) or end the connection (TCP); a UDP answer larger than the
client allows is truncated, and the client retries over TCP as resolvers do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import cast

from dnslib import DNSRecord

from k3py.cluster.agent.dns.forward import Forwarder
from k3py.cluster.agent.dns.zone import ClusterZone

logger = logging.getLogger("k3py.agent.dns")

UDP_PAYLOAD = 512  # without EDNS0, the most a UDP answer may carry
TCP_PAYLOAD = 65535


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            request = DNSRecord.parse(data)
        except Exception:  # dnslib raises several types on garbage; drop it as servers do
            return
        local = self.server.zone.answer_packed(request, self._limit(request))
        if local is not None:
            self._send(local, addr)
            return
        task = asyncio.create_task(self._forward(request, data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @staticmethod
    def _limit(request: DNSRecord) -> int:
        limit = UDP_PAYLOAD
        for option in request.ar:
            if option.rtype == 41:  # OPT: the client's UDP payload size
                limit = max(UDP_PAYLOAD, int(option.rclass))
        return limit

    async def _forward(
        self, request: DNSRecord, data: bytes, addr: tuple[str | object, int]
    ) -> None:
        answer = await self.server.forwarder.resolve(request, data)
        self._send(answer, addr)

    def _send(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)


class DnsServer:
    def __init__(
        self, zone: ClusterZone, forwarder: Forwarder, address: str, port: int = 53
    ) -> None:
        self.zone = zone
        self.forwarder = forwarder
        self.address = address
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol: _Udp | None = None
        self._tcp: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(self.address, self.port)
        )
        self._udp, self._udp_protocol = transport, protocol
        self._tcp = await asyncio.start_server(
            self._serve_tcp, self.address, self.port, reuse_address=True
        )
        logger.info(
            "cluster DNS listening",
            extra={"fields": {"address": self.address, "port": self.port}},
        )

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                data = await reader.readexactly(size)
                try:
                    request = DNSRecord.parse(data)
                except Exception:  # malformed: end this connection
                    return
                local = self.zone.answer_packed(request, TCP_PAYLOAD)
                if local is not None:
                    answer = local
                else:
                    answer = await self.forwarder.resolve(request, data, tcp=True)
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._udp_protocol is not None:
            for task in list(self._udp_protocol.tasks):
                task.cancel()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    async def run(self) -> None:
        """Serve until cancelled (for the agent's supervised tasks)."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

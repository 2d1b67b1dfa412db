"""Forwarding names outside the cluster to the node's own resolvers, with a small cache.

The upstreams are the ``nameserver`` lines of the node's ``/etc/resolv.conf`` (as CoreDNS's
``forward . /etc/resolv.conf`` in K3s), minus any address the cluster DNS itself answers on, so
a node whose resolv.conf points at the cluster DNS cannot loop. Each query goes to the
upstreams in order over the client's transport (UDP or TCP) until one answers. Answers are
cached by (name, type, class) for their smallest TTL (at most :data:`MAX_TTL`; negative answers
for :data:`NEGATIVE_TTL`) in a bounded, insertion-ordered dict; a hit is the stored reply with
the client's query ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Iterable
from pathlib import Path

from dnslib import RCODE, DNSRecord

logger = logging.getLogger("k3py.agent.dns")

MAX_TTL = 300
NEGATIVE_TTL = 30
CACHE_ENTRIES = 1000
TIMEOUT_SECONDS = 2.0


def nameservers(resolv_conf: Path, exclude: Iterable[str] = ()) -> list[str]:
    """The nameserver addresses of a resolv.conf, without ``exclude``."""
    skip = set(exclude)
    found = []
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and fields[1] not in skip:
            found.append(fields[1])
    return found


class _UdpQuery(asyncio.DatagramProtocol):
    def __init__(self, query_id: int) -> None:
        self.query_id = query_id
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if data[:2] == struct.pack("!H", self.query_id) and not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


class Forwarder:
    def __init__(self, upstreams: list[str], port: int = 53) -> None:
        self.upstreams = upstreams
        self.port = port
        self._cache: dict[tuple[str, int, int], tuple[float, bytes]] = {}

    # -- cache --------------------------------------------------------------------------------

    @staticmethod
    def _key(request: DNSRecord) -> tuple[str, int, int]:
        q = request.q
        return (str(q.qname).lower(), int(q.qtype), int(q.qclass))

    def cached(self, request: DNSRecord) -> bytes | None:
        key = self._key(request)
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._cache[key]
            return None
        return struct.pack("!H", request.header.id) + entry[1][2:]

    def _store(self, request: DNSRecord, data: bytes) -> None:
        try:
            reply = DNSRecord.parse(data)
        except Exception:  # dnslib raises its own DNSError and others on garbage
            return
        if reply.header.tc or reply.header.rcode not in (RCODE.NOERROR, RCODE.NXDOMAIN):
            return
        ttls = [rr.ttl for rr in reply.rr] or [NEGATIVE_TTL]
        ttl = min(MAX_TTL, *ttls)
        if ttl <= 0:
            return
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.pop(next(iter(self._cache)))
        self._cache[self._key(request)] = (time.monotonic() + ttl, data)

    # -- forwarding ---------------------------------------------------------------------------

    async def resolve(self, request: DNSRecord, data: bytes, tcp: bool = False) -> bytes:
        """The upstream's answer to ``data`` (SERVFAIL when none answers)."""
        hit = self.cached(request)
        if hit is not None:
            return hit
        for upstream in self.upstreams:
            try:
                async with asyncio.timeout(TIMEOUT_SECONDS):
                    answer = await (self._tcp(upstream, data) if tcp else self._udp(upstream, data))
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as err:
                logger.debug(
                    "upstream resolver failed",
                    extra={"fields": {"upstream": upstream, "error": str(err)}},
                )
                continue
            self._store(request, answer)
            return answer
        reply = request.reply()
        reply.header.rcode = RCODE.SERVFAIL
        packed: bytes = reply.pack()
        return packed

    async def _udp(self, upstream: str, data: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        query_id = struct.unpack("!H", data[:2])[0]
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _UdpQuery(query_id), remote_addr=(upstream, self.port)
        )
        try:
            transport.sendto(data)
            return await protocol.answer
        finally:
            transport.close()

    async def _tcp(self, upstream: str, data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(upstream, self.port)
        try:
            writer.write(struct.pack("!H", len(data)) + data)
            await writer.drain()
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            return await reader.readexactly(size)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

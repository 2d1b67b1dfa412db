"""The node-local cluster DNS: the zone's answers, and the listener with forwarding on loopback."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from k3py.cluster.agent.dns.forward import Forwarder, nameservers
from k3py.cluster.agent.dns.server import DnsServer
from k3py.cluster.agent.dns.zone import ClusterZone
from k3py.cluster.agent.proxy.source import ServiceCache

Object = dict[str, Any]


def _service(name: str, ip: str, namespace: str = "default", **spec: Any) -> Object:
    ports = [
        {"name": "http", "port": 80, "protocol": "TCP"},
        {"name": "dns", "port": 53, "protocol": "UDP"},
    ]
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": ip, "ports": ports, **spec},
    }


@pytest.fixture
def cache() -> ServiceCache:
    cache = ServiceCache()
    cache.set_service(_service("web", "10.43.0.20"))
    cache.set_service(_service("db", "None"))
    cache.set_service(_service("ext", "", type="ExternalName", externalName="example.org"))
    cache.set_endpoints(
        {
            "metadata": {"name": "db", "namespace": "default"},
            "subsets": [
                {
                    "addresses": [
                        {"ip": "10.42.1.7", "hostname": "db-0"},
                        {"ip": "10.42.2.8"},
                    ],
                    "notReadyAddresses": [{"ip": "10.42.3.9"}],
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                }
            ],
        }
    )
    return cache


def ask(zone: ClusterZone, name: str, qtype: str = "A") -> DNSRecord:
    reply = zone.answer(DNSRecord.question(name, qtype))
    assert reply is not None, name
    return reply


def rdatas(reply: DNSRecord, section: str = "rr") -> list[str]:
    return sorted(str(rr.rdata) for rr in getattr(reply, section))


def test_service_names_resolve_to_the_cluster_ip(cache: ServiceCache) -> None:
    zone = ClusterZone(cache)
    assert rdatas(ask(zone, "web.default.svc.cluster.local")) == ["10.43.0.20"]
    assert rdatas(ask(zone, "WEB.Default.svc.cluster.local.")) == ["10.43.0.20"]
    nodata = ask(zone, "web.default.svc.cluster.local", "AAAA")
    assert nodata.header.rcode == RCODE.NOERROR
    assert nodata.rr == []
    assert nodata.auth  # the SOA lets resolvers cache the negative answer


def test_unknown_cluster_names_are_nxdomain(cache: ServiceCache) -> None:
    zone = ClusterZone(cache)
    for name in (
        "nope.default.svc.cluster.local",
        "web.nosuchns.svc.cluster.local",
        "x.web.default.svc.cluster.local",
        "web.default.cluster.local",
    ):
        assert ask(zone, name).header.rcode == RCODE.NXDOMAIN, name
    assert ask(zone, "default.svc.cluster.local").header.rcode == RCODE.NOERROR


def test_srv_records_of_named_ports(cache: ServiceCache) -> None:
    zone = ClusterZone(cache)
    reply = ask(zone, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert rdatas(reply) == ["0 100 80 web.default.svc.cluster.local."]
    assert rdatas(reply, "ar") == ["10.43.0.20"]
    udp = ask(zone, "_dns._udp.web.default.svc.cluster.local", "SRV")
    assert rdatas(udp) == ["0 100 53 web.default.svc.cluster.local."]
    assert (
        ask(zone, "_dns._tcp.web.default.svc.cluster.local", "SRV").header.rcode == RCODE.NXDOMAIN
    )


def test_headless_services_resolve_to_ready_pods(cache: ServiceCache) -> None:
    zone = ClusterZone(cache)
    assert rdatas(ask(zone, "db.default.svc.cluster.local")) == ["10.42.1.7", "10.42.2.8"]
    assert rdatas(ask(zone, "db-0.db.default.svc.cluster.local")) == ["10.42.1.7"]
    assert rdatas(ask(zone, "10-42-2-8.db.default.svc.cluster.local")) == ["10.42.2.8"]
    srv = ask(zone, "_http._tcp.db.default.svc.cluster.local", "SRV")
    assert rdatas(srv) == [
        "0 100 8080 10-42-2-8.db.default.svc.cluster.local.",
        "0 100 8080 db-0.db.default.svc.cluster.local.",
    ]


def test_reverse_lookups_of_cluster_addresses(cache: ServiceCache) -> None:
    zone = ClusterZone(cache)
    assert rdatas(ask(zone, "20.0.43.10.in-addr.arpa", "PTR")) == ["web.default.svc.cluster.local."]
    assert rdatas(ask(zone, "7.1.42.10.in-addr.arpa", "PTR")) == [
        "db-0.db.default.svc.cluster.local."
    ]
    assert ask(zone, "99.0.43.10.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN
    assert zone.answer(DNSRecord.question("1.2.0.192.in-addr.arpa", "PTR")) is None
    # The index follows the cache.
    cache.delete_service("default/web")
    assert ask(zone, "20.0.43.10.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN


def test_pod_names_external_names_and_the_outside(cache: ServiceCache) -> None:
    zone = ClusterZone(cache)
    assert rdatas(ask(zone, "10-42-1-7.default.pod.cluster.local")) == ["10.42.1.7"]
    assert rdatas(ask(zone, "ext.default.svc.cluster.local")) == ["example.org."]
    assert zone.answer(DNSRecord.question("example.org")) is None


def test_nameservers_never_include_the_cluster_dns(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search lan\nnameserver 10.43.0.10\nnameserver 192.0.2.1\n# x\n")
    assert nameservers(resolv, exclude=("10.43.0.10",)) == ["192.0.2.1"]
    assert nameservers(tmp_path / "missing") == []


class _Upstream(asyncio.DatagramProtocol):
    """A resolver for the forwarding test: answers every A query with 198.51.100.7."""

    def __init__(self) -> None:
        self.queries = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.queries += 1
        request = DNSRecord.parse(data)
        reply = request.reply()
        reply.add_answer(RR(request.q.qname, QTYPE.A, ttl=60, rdata=A("198.51.100.7")))
        assert self.transport is not None
        self.transport.sendto(reply.pack(), addr)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[_Upstream, int]]:
    port = _free_udp_port()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _Upstream, local_addr=("127.0.0.1", port)
    )
    yield protocol, port
    transport.close()


async def _udp_query(port: int, request: DNSRecord) -> DNSRecord:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
            answer.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(request.pack())
        async with asyncio.timeout(5):
            return DNSRecord.parse(await answer)
    finally:
        transport.close()


async def _tcp_query(port: int, request: DNSRecord) -> DNSRecord:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = request.pack()
    writer.write(struct.pack("!H", len(data)) + data)
    size = struct.unpack("!H", await reader.readexactly(2))[0]
    reply = DNSRecord.parse(await reader.readexactly(size))
    writer.close()
    await writer.wait_closed()
    return reply


async def test_listener_answers_the_zone_and_forwards_the_rest(
    cache: ServiceCache, upstream: tuple[_Upstream, int]
) -> None:
    protocol, upstream_port = upstream
    port = _free_udp_port()
    server = DnsServer(
        ClusterZone(cache), Forwarder(["127.0.0.1"], port=upstream_port), "127.0.0.1", port
    )
    await server.start()
    try:
        reply = await _udp_query(port, DNSRecord.question("web.default.svc.cluster.local"))
        assert rdatas(reply) == ["10.43.0.20"]
        tcp = await _tcp_query(port, DNSRecord.question("web.default.svc.cluster.local"))
        assert rdatas(tcp) == ["10.43.0.20"]
        assert protocol.queries == 0

        outside = DNSRecord.question("www.example.org")
        assert rdatas(await _udp_query(port, outside)) == ["198.51.100.7"]
        again = DNSRecord.question("www.example.org")
        cached = await _udp_query(port, again)
        assert rdatas(cached) == ["198.51.100.7"]
        assert cached.header.id == again.header.id
        assert protocol.queries == 1  # the second answer came from the cache
    finally:
        await server.stop()


async def test_no_upstream_answers_servfail(cache: ServiceCache) -> None:
    port = _free_udp_port()
    server = DnsServer(ClusterZone(cache), Forwarder([]), "127.0.0.1", port)
    await server.start()
    try:
        reply = await _udp_query(port, DNSRecord.question("www.example.org"))
        assert reply.header.rcode == RCODE.SERVFAIL
    finally:
        await server.stop()


def test_packed_answers_are_reused_until_the_cache_changes(cache: ServiceCache) -> None:
    zone = ClusterZone(cache)
    first = DNSRecord.question("web.default.svc.cluster.local")
    again = DNSRecord.question("web.default.svc.cluster.local")
    packed = zone.answer_packed(first, 512)
    assert packed is not None
    reused = zone.answer_packed(again, 512)
    assert reused is not None
    assert DNSRecord.parse(reused).header.id == again.header.id
    assert rdatas(DNSRecord.parse(reused)) == ["10.43.0.20"]
    cache.set_service(_service("web", "10.43.0.99"))
    changed = zone.answer_packed(DNSRecord.question("web.default.svc.cluster.local"), 512)
    assert changed is not None
    assert rdatas(DNSRecord.parse(changed)) == ["10.43.0.99"]
    assert zone.answer_packed(DNSRecord.question("example.org"), 512) is None
